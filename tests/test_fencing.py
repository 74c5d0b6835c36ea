"""Every write of a phase is fenced by its live lease, in the write's own transaction, on every
path (in-process and HTTP); a lease past its expiry is dead at once, reaper or not."""

import hashlib
import io
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.utils import timezone

from artifacts.models import Artifact, Blob
from artifacts.storage import get_store
from runs.executors.context import PhaseContext
from runs.models import Phase, PhaseState, Run, RunEvent
from runs.services.events import StaleLease, phase_log
from runs.services.fence import lease_fence
from runs.services.jobs import job_create
from runs.services.leases import phase_claim_next, phase_heartbeat
from runs.services.phases import phase_complete, phases_reap
from runs.services.runs import run_create
from tests.test_contract import OPS, Agent

ONE = "name: one\nphases:\n  - {name: a, kind: python, retries: 1, config: {callable: sleep, args: {seconds: 0}}}\n"


def claimed(world, capture) -> tuple[Phase, str]:
    job = job_create(access=world.access("operator"), spec_text=ONE)
    with capture(execute=False):
        run_create(access=world.access("operator"), job=job)
    return phase_claim_next(workspace=world.workspace, worker="w1", kinds=["python"])


def expire(phase: Phase) -> None:
    Phase.objects.filter(pk=phase.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def store_files() -> list:
    root = get_store().root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.django_db
def test_a_worker_that_lost_its_lease_registers_no_artifact(world, tmp_path, django_capture_on_commit_callbacks):
    """The reproduction: claim with T1, lose the lease, another worker claims with T2, then the
    first worker's in-process context tries to add an artifact under T1."""
    phase, old_token = claimed(world, django_capture_on_commit_callbacks)
    expire(phase)
    phases_reap()  # requeued: attempt 1 failed, one retry left
    Phase.objects.filter(pk=phase.pk).update(not_before=None)
    taken = phase_claim_next(workspace=world.workspace, worker="w2", kinds=["python"])
    assert taken is not None and taken[0].pk == phase.pk and taken[1] != old_token
    stale = PhaseContext(phase=Phase.objects.select_related("run").get(pk=phase.pk), lease_token=old_token)
    path = tmp_path / "out.csv"
    path.write_bytes(b"a,b\n1,2\n")
    events = RunEvent.objects.count()
    with pytest.raises(StaleLease):
        stale.add_artifact(name="out.csv", path=path, media_type="text/csv")
    with pytest.raises(StaleLease):
        stale.log("still here?")
    assert not Artifact.objects.exists() and not Blob.objects.exists() and not store_files()
    assert RunEvent.objects.count() == events and stale.outputs == []
    live = PhaseContext(phase=Phase.objects.select_related("run").get(pk=phase.pk), lease_token=taken[1])
    assert live.add_artifact(name="out.csv", path=path, media_type="text/csv")["size"] == 8


@pytest.mark.django_db
def test_an_expired_lease_is_dead_before_the_reaper_runs(world, tmp_path, django_capture_on_commit_callbacks):
    phase, token = claimed(world, django_capture_on_commit_callbacks)
    expire(phase)
    with pytest.raises(StaleLease):
        phase_heartbeat(phase_id=phase.pk, lease_token=token)
    with pytest.raises(StaleLease):
        phase_log(phase=phase, lease_token=token, message="late")
    path = tmp_path / "late.txt"
    path.write_bytes(b"late")
    with pytest.raises(StaleLease):
        PhaseContext(phase=phase, lease_token=token).add_artifact(name="late.txt", path=path, media_type="text/plain")
    with pytest.raises(StaleLease):
        phase_complete(phase=phase, lease_token=token, succeeded=True, output={"rows": 1})
    with pytest.raises(StaleLease):
        phase_complete(phase=phase, lease_token=token, succeeded=False, error="boom")
    current = Phase.objects.get(pk=phase.pk)
    assert current.state == PhaseState.RUNNING and current.output == {}  # the reaper decides, not the late worker
    assert not Artifact.objects.exists() and not store_files()


@pytest.mark.django_db
def test_every_http_write_with_an_expired_lease_is_409(world, monkeypatch, django_capture_on_commit_callbacks):
    phase, token = claimed(world, django_capture_on_commit_callbacks)
    agent = Agent(world.token("operator"))
    expire(phase)
    read = []
    monkeypatch.setattr("artifacts.uploads.StagingUploadHandler.receive_data_chunk",
                        lambda self, data, start: read.append(len(data)))
    data = b"x" * 1000
    fields = {"name": "x.bin", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    answers = {
        "heartbeat": agent.post(f"/phases/{phase.pk}/heartbeat", {"lease_token": token}),
        "events": agent.post(f"/runs/{phase.run_id}/events", {"events": [
            {"event_id": str(uuid.uuid4()), "phase_id": phase.pk, "type": "PHASE_LOG", "lease_token": token,
             "message": "late"}]}),
        "artifact": agent.post(f"/phases/{phase.pk}/artifacts", {"lease_token": token, **fields,
                                                                 "location": "s3://x/y"}),
        "upload": agent.client.post(f"{OPS}/phases/{phase.pk}/artifacts", {**fields, "file": io.BytesIO(data)},
                                    **agent.auth, HTTP_X_LEASE_TOKEN=token),
        "complete": agent.post(f"/phases/{phase.pk}/complete", {"lease_token": token, "outcome": "succeeded"}),
    }
    assert {k: (r.status_code, r.json()["error"]["code"]) for k, r in answers.items()} == {
        k: (409, "stale_lease") for k in answers}
    assert read == []  # the upload's body was never read
    assert not Artifact.objects.exists() and not store_files()
    assert Phase.objects.get(pk=phase.pk).state == PhaseState.RUNNING


@pytest.mark.django_db
def test_the_upload_is_fenced_again_inside_the_write(world, monkeypatch, django_capture_on_commit_callbacks):
    """The lease dies between the early look (before the body) and the write: nothing is kept."""
    phase, token = claimed(world, django_capture_on_commit_callbacks)
    agent = Agent(world.token("operator"))
    real_stage = __import__("artifacts.uploads", fromlist=["x"]).StagingUploadHandler.file_complete

    def expire_while_reading(self, size):
        expire(phase)
        return real_stage(self, size)

    monkeypatch.setattr("artifacts.uploads.StagingUploadHandler.file_complete", expire_while_reading)
    data = b"y" * 5000
    up = agent.client.post(f"{OPS}/phases/{phase.pk}/artifacts",
                           {"name": "y.bin", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "file": io.BytesIO(data)}, **agent.auth, HTTP_X_LEASE_TOKEN=token)
    assert up.status_code == 409 and up.json()["error"]["code"] == "stale_lease"
    assert not Artifact.objects.exists() and not Blob.objects.exists() and not store_files()


@pytest.mark.django_db(transaction=True)
def test_a_fenced_write_holds_the_lease_until_it_commits(world, django_capture_on_commit_callbacks):
    """While a write is inside its fence, nobody can take the lease over (a reaper or a new claim
    waits): the check and the write are one step."""
    phase, token = claimed(world, django_capture_on_commit_callbacks)
    inside, release, outcome = threading.Event(), threading.Event(), {}

    def writer() -> None:
        try:
            with lease_fence(phase_id=phase.pk, lease_token=token) as live:
                RunEvent.objects.create(run_id=live.run_id, phase=live, seq=10_000, type="PHASE_LOG", ts=timezone.now())
                inside.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(10)
    connection.ensure_connection()
    with connection.cursor() as cursor:  # a short wait for locks, so a blocked write fails fast
        cursor.execute("SET lock_timeout = '300ms'" if connection.vendor == "postgresql"
                       else "PRAGMA busy_timeout = 300")
    began = time.monotonic()
    try:
        with transaction.atomic():
            Phase.objects.filter(pk=phase.pk).update(lease_token="taken-over")
        outcome["took_over"] = True
    except OperationalError:
        outcome["blocked_s"] = time.monotonic() - began
    finally:
        release.set()
        thread.join(10)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout" if connection.vendor == "postgresql" else "PRAGMA busy_timeout = 30000")
    assert "took_over" not in outcome, "the lease was taken over while a fenced write was open"
    Phase.objects.filter(pk=phase.pk).update(lease_token="taken-over")  # after the commit it may
    assert Run.objects.get(pk=phase.run_id).events.filter(seq=10_000).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["../prod/warehouse", "/tmp/escape", "a/b", "warehouse\n", ""])
def test_a_connection_name_cannot_reach_outside_the_warehouse_folder(world, tmp_path, name):
    from runs.executors import PhaseFailure
    from runs.remote import RemotePhaseContext
    from runs.spec import SpecError, parse_spec

    spec = f"name: esc\nphases:\n  - {{name: a, kind: sql, config: {{connection: {name!r}, sql: select 1}}}}\n"
    with pytest.raises(SpecError, match="connection"):
        parse_spec(spec.replace("\n'", "\\n'"))
    claim = {"lease_token": "t", "phase": {"id": 1, "name": "a", "kind": "sql", "config": {}},
             "run": {"id": 1, "parameters": {}, "environment": "dev"}}
    ctx = RemotePhaseContext(None, claim, tmp_path / "warehouse", tmp_path / "datasets")
    try:
        with pytest.raises(PhaseFailure, match="not a connection name"):
            ctx.duckdb(name)
    finally:
        ctx.cleanup()
    assert not list(tmp_path.rglob("*.duckdb"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_engine_work_stops_before_an_unrenewed_lease_lapses(world, settings, monkeypatch,
                                                            django_capture_on_commit_callbacks):
    """Heartbeats fail (the database is unreachable for them): the phase's query is interrupted at
    90 % of the lease, before another worker could be handed the phase, and writes no table."""
    from django.db import OperationalError as DbError

    from runs.services.phases import phase_execute

    settings.PHASE_LEASE_TTL_S = 2
    job = job_create(access=world.access("operator"), spec_text=(
        "name: slow\nphases:\n  - {name: a, kind: sql, config: {table: late, "
        "sql: \"SELECT sum(hash(i)) AS s FROM range(20000000000) t(i)\"}}\n"))
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    phase = run.phases.get()

    def unreachable(**kwargs):
        raise DbError("server closed the connection unexpectedly")

    monkeypatch.setattr("runs.services.phases.phase_heartbeat", unreachable)
    began = time.monotonic()
    assert phase_execute(phase_id=phase.pk, worker="w1") is None  # no outcome: the lease is not ours to use
    took = time.monotonic() - began
    assert took < 2.0, f"the query ran {took:.1f} s, past the lease"
    current = Phase.objects.get(pk=phase.pk)
    assert current.state == PhaseState.RUNNING and current.lease_expires_at > timezone.now() - timedelta(seconds=1)
    from connections.models import Connection
    from sqlwarehouse.engines import duckdb_engine_for

    engine = duckdb_engine_for(Connection.objects.get(workspace=world.workspace, name="warehouse"), read_only=True,
                               environment=run.environment)
    assert not engine.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'late'").rows[0][0]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_long_polling_claims_cannot_take_every_web_thread(world, monkeypatch):
    """At most CLAIM_LONG_POLLS_PER_PROCESS claims wait at once; the others answer at once."""
    monkeypatch.setattr("runs.ops_api._LONG_POLLS", threading.BoundedSemaphore(1))
    token = world.token("operator")
    waited = {}

    def long_poll() -> None:
        try:
            began = time.monotonic()
            Agent(token).claim(kinds=["nothing-runs-this"], wait=2)
            waited["first"] = time.monotonic() - began
        finally:
            connections.close_all()

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.5)
    began = time.monotonic()
    second = Agent(token, name="agent-2").claim(kinds=["nothing-runs-this"], wait=2)
    second_s = time.monotonic() - began
    thread.join(10)
    assert second.status_code == 204 and second_s < 1.0, second_s
    assert waited["first"] >= 1.9


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_token_revoked_during_a_long_poll_claims_nothing(world, django_capture_on_commit_callbacks):
    from controlroom.models import ApiToken
    from controlroom.services import api_token_revoke

    job = job_create(access=world.access("operator"), spec_text=ONE)
    token = world.token("operator")
    answer = {}

    def long_poll() -> None:
        try:
            answer["claim"] = Agent(token).claim(wait=5)
        finally:
            connections.close_all()

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.5)
    api_token_revoke(access=world.access("admin"), token=ApiToken.objects.get(name="ci-operator"))
    with django_capture_on_commit_callbacks(execute=False):
        run_create(access=world.access("operator"), job=job)
    thread.join(10)
    assert answer["claim"].status_code == 401
    assert not Phase.objects.filter(state=PhaseState.RUNNING).exists()
