"""Secret masking (controlroom.masking): a phase that prints its S3 key (from OpenBao) and its
catalog password (from the environment), verbatim and encoded, in log lines, payloads, progress,
its output, its error, a Python log line and an exception's traceback leaves none of them in
the database, the artifact store or the server log; the places that show text show ***."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from django.core.management import call_command

from artifacts.models import Artifact
from artifacts.previews import preview_for
from artifacts.services import blob_store_file
from connections.models import Connection, SecretRef
from connections.vault import vault_forget
from controlroom.audit import audit_record
from controlroom.logging_json import JsonFormatter
from controlroom.masking import MASK, mask_text, masking_forget, variants
from runs.models import RunEvent, RunStatus
from tests.lakehouse_helpers import phase, spec, trigger

pytestmark = pytest.mark.django_db
S3_KEY = "K3y/with+plus=Sign"  # its base64 and URL forms differ from it
PASSWORD = "p@ss word:9/Zz"
CATALOG = {"catalog_name": "lakehouse", "type": "jdbc", "uri": "postgresql://lake@db.internal:5432/catalog",
           "warehouse": "s3://acme-lake/warehouse", "delta_root": "s3://acme-lake/delta",
           "s3": {"endpoint": "http://s3.internal:8333", "region": "us-east-1", "access_key_id": "AKIA1",
                  "secret_key_ref": "lake-key", "path_style": True}}


def forms(value: str) -> set[str]:
    """Everything that must not be stored: the value and its encodings."""
    raw = value.encode()
    return {value, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), quote(value, safe=""),
            quote_plus(value), base64.b64encode(raw).decode().rstrip("=")}


@pytest.fixture
def lake(world, settings, monkeypatch, openbao_server):
    settings.VAULT_ADDR, settings.VAULT_TOKEN, settings.SECRET_CACHE_S = (openbao_server.url,
                                                                          openbao_server.root_token, 0)
    settings.VAULT_ROLE_ID = ""
    settings.PHASE_CALLABLE_MODULES = ["runs.builtin_callables", "tests.callables"]
    vault_forget()
    masking_forget()
    openbao_server.put_secret("controlroom/acme/lake", {"s3_key": S3_KEY})
    monkeypatch.setenv("CONTROLROOM_SECRET_LAKE_PW", PASSWORD)
    key = SecretRef.objects.create(workspace=world.workspace, name="lake-key", source="vault",
                                   locator="controlroom/acme/lake#s3_key")
    pw = SecretRef.objects.create(workspace=world.workspace, name="lake-pw", source="env",
                                  locator="CONTROLROOM_SECRET_LAKE_PW")
    Connection.objects.create(workspace=world.workspace, name="lakehouse", kind="catalog", config=CATALOG,
                              password_ref=pw)
    yield key
    masking_forget()


def test_a_phase_that_prints_its_secrets_leaves_them_nowhere(world, lake, eager_celery, capfd, caplog,
                                                            django_capture_on_commit_callbacks, isolated_storage):
    caplog.set_level(logging.INFO)
    run = trigger(world, spec(phase("leak", "python", callable="leak_secrets", args={"catalog": "lakehouse"}),
                              phase("leak_fail", "python", callable="leak_secrets", depends_on=["leak"],
                                    args={"catalog": "lakehouse", "fail": True})),
                  django_capture_on_commit_callbacks)
    crash = phase("crash", "python", callable="crash_with_secret", args={"catalog": "lakehouse"})
    crashed = trigger(world, spec(crash), django_capture_on_commit_callbacks)
    assert run.status == crashed.status == RunStatus.FAILED
    assert crashed.phases.get().error == "internal error in the python executor (KeyError); see the worker log"

    # What people read says *** where the secret was.
    phases = {p.name: p for p in run.phases.all()}
    assert phases["leak"].output == {"used_key": MASK, "note": f"base64 {MASK}"}
    assert phases["leak_fail"].error == f"could not log in as lake with password {MASK}"
    logs = list(RunEvent.objects.filter(run=run, type__in=("PHASE_LOG", "PHASE_PROGRESS")).order_by("seq"))
    messages = [e.message for e in logs]
    assert f"connecting with S3 key {MASK}" in messages and f"password, base64: {MASK}" in messages
    assert f"url-encoded: {MASK}" in messages
    first = next(e for e in logs if e.message.startswith("connecting"))
    assert first.payload["s3"] == {"secret": MASK, "auth": MASK}
    assert any(e.payload.get("nested") == [{"deep": f"x{MASK}y"}] for e in logs)
    assert run.error == f"leak_fail: could not log in as lake with password {MASK}"

    # The database, the artifact store and the server log hold none of them, in any form.
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    stored_files = b"".join(p.read_bytes() for p in Path(isolated_storage).rglob("*") if p.is_file())
    formatter = JsonFormatter()
    server_log = "\n".join(formatter.format(r) for r in caplog.records) + capfd.readouterr().err
    assert "the phase's password is ***" in server_log  # the Python log line, masked
    assert "KeyError" in server_log  # the crash's traceback was logged, masked
    for secret in (S3_KEY, PASSWORD):
        for form in forms(secret):
            assert form not in dump.getvalue(), f"{form!r} in the database"
            assert form.encode() not in stored_files, f"{form!r} in the artifact store"
            assert form not in server_log, f"{form!r} in the server log"


def test_masking_covers_audit_previews_and_sql_errors(world, lake, tmp_path):
    from django.db import transaction

    from connections.services import secret_resolve
    from controlroom.models import AuditEvent

    assert secret_resolve(SecretRef.objects.get(name="lake-pw"), workspace_id=world.workspace.pk) == PASSWORD
    with transaction.atomic():
        event = audit_record(access=world.access("admin"), action="test.leak", target=world.workspace,
                             after={"note": f"pw={PASSWORD}", "list": [S3_KEY]})
    assert AuditEvent.objects.get(pk=event.pk).after == {"note": f"pw={MASK}", "list": [MASK]}

    path = tmp_path / "notes.txt"
    path.write_text(f"key={S3_KEY}\nline two\n")
    blob = blob_store_file(workspace=world.workspace, path=path)
    artifact = Artifact.objects.create(workspace=world.workspace, name="notes.txt", media_type="text/plain",
                                       sha256=blob.sha256, size=blob.size, blob=blob)
    assert preview_for(artifact).text == f"key={MASK}\nline two"
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(f"a,{PASSWORD}\n1,{S3_KEY}\n")
    blob = blob_store_file(workspace=world.workspace, path=csv_path)
    table = preview_for(Artifact.objects.create(workspace=world.workspace, name="t.csv", media_type="text/csv",
                                                sha256=blob.sha256, size=blob.size, blob=blob))
    assert table.columns == ["a", MASK] and table.rows == [["1", MASK]]

    # An engine error that echoes a secret (here, the name of a missing table) is stored masked.
    from sqlwarehouse.execution import query_execute, query_submit

    warehouse = Connection.objects.get(workspace=world.workspace, name="warehouse")
    execution = query_submit(access=world.access("analyst"), connection=warehouse,
                             sql=f'select * from "{PASSWORD}"')
    query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    assert execution.status == "failed" and MASK in execution.error and PASSWORD not in execution.error
    assert PASSWORD not in json.dumps(execution.statements)
    assert PASSWORD not in json.dumps(AuditEvent.objects.filter(action="sql.execute").last().after)  # its audit

    # Another workspace's text is not masked with this one's secrets.
    assert mask_text(world.other.pk, f"pw={PASSWORD}") == f"pw={PASSWORD}"
    assert mask_text(world.workspace.pk, f"pw={PASSWORD}") == f"pw={MASK}"


def test_a_rotated_secret_is_masked_from_its_first_use(world, lake, openbao_server):
    from connections.services import secret_resolve

    key = SecretRef.objects.get(name="lake-key")
    assert secret_resolve(key, workspace_id=world.workspace.pk) == S3_KEY
    assert mask_text(world.workspace.pk, f"k={S3_KEY}") == f"k={MASK}"  # cached set, read just now
    openbao_server.put_secret("controlroom/acme/lake", {"s3_key": "rotated-S3-key-2"})
    assert secret_resolve(key, workspace_id=world.workspace.pk) == "rotated-S3-key-2"
    assert mask_text(world.workspace.pk, "k=rotated-S3-key-2") == f"k={MASK}"  # before any refresh
    assert json.dumps({"m": "rotated-S3-key-2"}) not in mask_text(None, json.dumps({"m": "rotated-S3-key-2"}))


def test_variants_and_short_values():
    assert variants("abc") == set()  # shorter than MIN_SECRET_CHARS: not masked (hides every word otherwise)
    found = variants('a"b\\c d')
    assert {'a"b\\c d', 'a\\"b\\\\c d', "a%22b%5Cc%20d", "a%22b%5Cc+d"} <= found


def test_an_outside_executor_cannot_store_a_secret_either(world, lake, django_capture_on_commit_callbacks):
    """The standalone executor's events and outcome arrive over HTTP: the server masks them with
    the workspace's references' values, though it never resolved them for this run."""
    import uuid

    from runs.models import Phase
    from runs.services.jobs import job_create
    from tests.test_contract import DIAMOND, Agent

    masking_forget()  # nothing resolved in this process: the references' values alone
    job_create(access=world.access("operator"), spec_text=DIAMOND)
    agent = Agent(world.token("operator"))
    with django_capture_on_commit_callbacks(execute=False):
        run_id = agent.post("/runs", {"job": "diamond"}).json()["id"]
    claim = agent.claim(run=run_id).json()
    batch = [{"event_id": str(uuid.uuid4()), "phase_id": claim["phase"]["id"], "lease_token": claim["lease_token"],
              "type": "PHASE_LOG", "message": f"env: LAKE_PW={PASSWORD}", "payload": {"k": quote(S3_KEY, safe="")}}]
    assert agent.post(f"/runs/{run_id}/events", {"events": batch}).json()["appended"] == 1
    agent.complete(claim, outcome="failed", error=f"login failed for {S3_KEY}", output={"pw": PASSWORD})
    event = RunEvent.objects.get(run_id=run_id, type="PHASE_LOG")
    assert (event.message, event.payload) == (f"env: LAKE_PW={MASK}", {"k": MASK})
    assert Phase.objects.get(pk=claim["phase"]["id"]).error == f"login failed for {MASK}"
