"""`trino` phases against the suite's real Trino: CTAS, INSERT and MERGE into Iceberg (on the S3
lake catalog) as the run's identity, cancel that stops the query on the server, the prod rule,
and clear errors. Config checks and identity rules without Trino are in test_trino_phase_rules.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from urllib.parse import unquote, urlsplit

import pytest
from django.db import connections

from connections.models import Connection, SecretRef
from controlroom.access import system_access
from controlroom.models import Membership
from runs.models import Phase, PhaseState, Run, RunStatus
from runs.services.jobs import job_create
from runs.services.phases import phase_execute
from runs.services.runs import run_cancel, run_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def trino_connection(world, trino_server, monkeypatch, *, environment: str | None = "dev",
                     name: str = "trino") -> Connection:
    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_TRINO_PASSWORD", unquote(parts.password or ""))
    secret, _ = SecretRef.objects.get_or_create(workspace=world.workspace, name="trino-password", source="env",
                                                locator="CONTROLROOM_SECRET_TEST_TRINO_PASSWORD")
    env = world.workspace.environments.get(name=environment) if environment else None
    return Connection.objects.create(
        workspace=world.workspace, name=name, kind="trino", password_ref=secret, environment=env,
        config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme,
                "user": trino_server.service_user, "verify": trino_server.ca_file or True})


def job_spec(sql: str, *, timeout: int = 600, parameters: str = "") -> str:
    return (f"name: lake{uuid.uuid4().hex[:6]}\n{parameters}phases:\n  - name: load\n    kind: trino\n"
            f"    timeout: {timeout}\n    config:\n      sql: {json.dumps(sql)}\n")


def start(world, persona: str, spec_text: str, django_capture_on_commit_callbacks, *, environment: str = "dev",
          **kwargs) -> Run:
    """Create the run as ``persona`` (None: the platform, as schedules do) without executing it."""
    access = system_access(world.workspace) if persona is None else world.access(persona)
    job = job_create(access=world.access("admin"), spec_text=spec_text)
    with django_capture_on_commit_callbacks(execute=False):
        return run_create(access=access, job=job, environment=environment, **kwargs)


def execute(run: Run) -> Phase:
    phase = run.phases.get()
    phase_execute(phase_id=phase.pk, worker="test")
    phase.refresh_from_db()
    return phase


def queries(trino_server, *, user: str | None = None, text: str | None = None) -> list[tuple[str, str, str, str]]:
    """(user, state, error_code, query) from Trino's own record of its queries."""
    with trino_server.connect(user=trino_server.service_user) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT \"user\", state, coalesce(error_code, ''), query FROM system.runtime.queries "
                       "WHERE (? IS NULL OR \"user\" = ?) AND (? IS NULL OR strpos(query, ?) > 0) ORDER BY created",
                       [user, user, text, text])
        return [tuple(row) for row in cursor.fetchall()]


def scalar(trino_server, sql: str):
    with trino_server.connect(user="checker") as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchall()


def logs(run: Run) -> list[str]:
    return list(run.events.filter(type="PHASE_LOG").order_by("seq").values_list("message", flat=True))


def test_ctas_insert_and_merge_into_iceberg_as_the_starter(world, trino_server, monkeypatch,
                                                           django_capture_on_commit_callbacks):
    trino_connection(world, trino_server, monkeypatch)
    ns = f"iceberg.p{uuid.uuid4().hex[:10]}"
    sql = (f"CREATE SCHEMA {ns};\n"
           f"CREATE TABLE {ns}.orders AS SELECT orderkey, custkey, totalprice FROM tpch.tiny.orders "
           f"WHERE orderkey <= :max_key;\n"
           f"INSERT INTO {ns}.orders SELECT orderkey, custkey, totalprice FROM tpch.tiny.orders "
           f"WHERE orderkey > :max_key AND orderkey <= 200;\n"
           f"MERGE INTO {ns}.orders t USING (SELECT orderkey, 0.5 AS p FROM tpch.tiny.orders WHERE orderkey <= 10 "
           f"UNION ALL SELECT 999999, 1.5) s ON t.orderkey = s.orderkey "
           f"WHEN MATCHED THEN UPDATE SET totalprice = s.p "
           f"WHEN NOT MATCHED THEN INSERT (orderkey, custkey, totalprice) VALUES (s.orderkey, 1, s.p);\n"
           f"SELECT orderkey, totalprice FROM {ns}.orders ORDER BY orderkey")
    params = "parameters:\n  max_key:\n    type: integer\n    default: 100\n"
    run = start(world, "operator", job_spec(sql, parameters=params), django_capture_on_commit_callbacks)
    phase = execute(run)
    assert phase.state == PhaseState.SUCCEEDED, phase.error
    steps = phase.output["statements"]
    assert [s["kind"] for s in steps] == ["CREATE SCHEMA", "CREATE TABLE", "INSERT", "MERGE", "SELECT"]
    # tpch.tiny.orders keys are sparse: count what Trino itself counts
    below, between = scalar(trino_server, "SELECT count_if(orderkey <= 100), count_if(orderkey > 100 AND "
                                          "orderkey <= 200) FROM tpch.tiny.orders")[0]
    merged = scalar(trino_server, "SELECT count(*) FROM tpch.tiny.orders WHERE orderkey <= 10")[0][0] + 1
    assert [s.get("rows_written") for s in steps[1:4]] == [below, between, merged]
    assert steps[4]["rows"] == below + between + 1
    assert scalar(trino_server, f"SELECT count(*), count_if(totalprice = 0.5), max(orderkey) FROM {ns}.orders") == [
        [below + between + 1, merged - 1, 999999]]
    # Every statement ran as the operator who started the run, and finished.
    mine = [q for q in queries(trino_server, user="operator") if ns in q[3]]
    assert len(mine) == 5 and {q[1] for q in mine} == {"FINISHED"}
    lines = logs(run)
    assert lines[0] == "5 statement(s) on trino as operator"
    assert f"statement 2: {below} row(s) written" in "\n".join(lines)
    shown = lines[lines.index(next(m for m in lines if m.startswith("statement 5: "))) + 2:]
    assert len(shown) == 20 and shown[0].startswith("1 | ")  # the first 20 rows only


def test_runs_nobody_started_by_hand_use_the_service_identity(world, trino_server, monkeypatch,
                                                              django_capture_on_commit_callbacks):
    trino_connection(world, trino_server, monkeypatch)
    marker = uuid.uuid4().hex
    run = start(world, None, job_spec(f"SELECT '{marker}'"), django_capture_on_commit_callbacks)
    phase = execute(run)
    assert phase.state == PhaseState.SUCCEEDED, phase.error
    assert [q[:2] for q in queries(trino_server, text=marker) if "system.runtime" not in q[3]] == [
        ("svc.acme", "FINISHED")]


def test_cancel_stops_the_running_trino_query_on_the_server(world, trino_server, monkeypatch, settings,
                                                          django_capture_on_commit_callbacks):
    settings.PHASE_LEASE_TTL_S = 1  # the heartbeat that carries the cancel comes every ~0.33 s
    trino_connection(world, trino_server, monkeypatch)
    marker = uuid.uuid4().hex[:8]
    run = start(world, "operator", job_spec(f"SELECT count(*) AS c{marker} FROM tpch.sf1000.lineitem a "
                                            f"CROSS JOIN tpch.sf1000.lineitem b"), django_capture_on_commit_callbacks)
    worker = threading.Thread(target=lambda: (execute(run), connections.close_all()))
    worker.start()
    deadline = time.monotonic() + 60
    while not [q for q in queries(trino_server, user="operator", text=marker) if q[1] == "RUNNING"]:
        assert time.monotonic() < deadline and worker.is_alive(), "the query never ran in Trino"
        time.sleep(0.1)
    asked = time.monotonic()
    run_cancel(access=world.access("operator"), run=run)
    state = None
    while time.monotonic() - asked < 10:
        state = queries(trino_server, user="operator", text=marker)[-1]
        if state[1] == "FAILED":
            break
        time.sleep(0.1)
    stopped_after = time.monotonic() - asked
    worker.join(30)
    print(f"Trino stopped the phase's query {stopped_after:.2f} s after the cancel")
    assert state is not None and state[1:3] == ("FAILED", "USER_CANCELED"), state
    assert stopped_after < 5
    run.refresh_from_db()
    assert run.phases.get().state == PhaseState.CANCELLED and run.status == RunStatus.CANCELLED


def test_a_timeout_stops_the_query_on_the_server(world, trino_server, monkeypatch,
                                                 django_capture_on_commit_callbacks):
    trino_connection(world, trino_server, monkeypatch)
    marker = uuid.uuid4().hex[:8]
    run = start(world, "operator", job_spec(f"SELECT count(*) AS c{marker} FROM tpch.sf1000.lineitem a "
                                            f"CROSS JOIN tpch.sf1000.lineitem b", timeout=3),
                django_capture_on_commit_callbacks)
    began = time.monotonic()
    phase = execute(run)
    assert time.monotonic() - began < 20
    assert phase.state == PhaseState.FAILED and phase.error == "timed out after 3 s"
    assert queries(trino_server, user="operator", text=marker)[-1][1] == "FAILED"


def test_a_starter_demoted_to_analyst_cannot_write_prod(world, trino_server, monkeypatch,
                                                        django_capture_on_commit_callbacks):
    trino_connection(world, trino_server, monkeypatch, environment="prod")
    ns = f"iceberg.q{uuid.uuid4().hex[:10]}"
    run = start(world, "admin", job_spec(f"CREATE SCHEMA {ns}; CREATE TABLE {ns}.t AS SELECT 1 AS a"),
                django_capture_on_commit_callbacks, environment="prod")
    Membership.objects.filter(workspace=world.workspace, user=world.users["admin"]).update(role="analyst")
    phase = execute(run)
    assert phase.state == PhaseState.FAILED
    assert phase.error.startswith("Statement 1 would write, but admin (analyst) may no longer start runs in prod")
    assert not [q for q in queries(trino_server, text=ns) if "system.runtime" not in q[3]]  # refused before Trino
    assert not scalar(trino_server, f"SHOW SCHEMAS FROM iceberg LIKE '{ns.split('.')[1]}'")


def test_a_dev_run_only_reads_through_a_connection_every_environment_shares(world, trino_server, monkeypatch,
                                                                           django_capture_on_commit_callbacks,
                                                                           settings):
    trino_connection(world, trino_server, monkeypatch, environment=None)
    marker = uuid.uuid4().hex[:8]
    reader = start(world, "operator", job_spec(f"SELECT '{marker}' AS x"), django_capture_on_commit_callbacks)
    assert execute(reader).state == PhaseState.SUCCEEDED
    assert [q[0] for q in queries(trino_server, text=marker) if "system.runtime" not in q[3]] == ["operator~ro"]
    # The engine refuses too: with the parser check off, Trino's rules stop the read-only identity.
    monkeypatch.setattr("runs.executors.trino.check_read_only", lambda sql, dialect: None)
    ns = f"iceberg.r{uuid.uuid4().hex[:10]}"
    writer = start(world, "operator", job_spec(f"CREATE SCHEMA {ns}"), django_capture_on_commit_callbacks)
    phase = execute(writer)
    assert phase.state == PhaseState.FAILED and "Access Denied" in phase.error, phase.error
    assert phase.error.startswith("Statement 1 (CREATE SCHEMA) failed (query ")


def test_a_bad_statement_fails_the_phase_with_the_engine_message(world, trino_server, monkeypatch,
                                                                 django_capture_on_commit_callbacks):
    trino_connection(world, trino_server, monkeypatch)
    run = start(world, "operator", job_spec("SELECT 1; SELECT * FROM iceberg.no_such_schema.t; SELECT 2"),
                django_capture_on_commit_callbacks)
    phase = execute(run)
    assert phase.state == PhaseState.FAILED
    assert phase.error.startswith("Statement 2 (SELECT) failed (query ") and "no_such_schema" in phase.error
    assert "Traceback" not in phase.error and "\n" not in phase.error
    assert not any(m.startswith("statement 3") for m in logs(run))  # nothing after the failure ran
