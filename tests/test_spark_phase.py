"""`spark` phases on real Spark (pyspark 4.1 on JDK 17): embedded local[2] on the embedded catalog,
and a real standalone cluster (tests/spark_cluster.py) on SeaweedFS and the shared JDBC catalog.
The standalone tests run once, on the PostgreSQL pass (where SeaweedFS and Trino are up)."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.db import connections
from django.test import Client

from connections.models import Connection, SecretRef
from lakehouse.models import TableVersion
from runs.models import Phase, PhaseState, Run, RunEvent, RunStatus
from runs.services.jobs import job_create
from runs.services.phases import phase_execute
from runs.services.runs import run_cancel, run_create
from tests.lakehouse_helpers import errors, lake_of, phase, spec, table_rows, trigger

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
MODULES = ["tests.spark_scripts.write_both", "tests.spark_scripts.fail", "tests.spark_scripts.slow"]
OUTPUTS = ["lake.events", {"table": "lake.daily", "format": "delta"}]


@pytest.fixture
def spark_modules(settings):
    settings.SPARK_MODULES = MODULES


def logs(run) -> list[str]:
    return list(RunEvent.objects.filter(run=run, type="PHASE_LOG").order_by("seq").values_list("message", flat=True))


def test_a_local_spark_phase_writes_iceberg_and_delta_and_records_both(world, eager_celery, spark_modules, monkeypatch,
                                                                        django_capture_on_commit_callbacks):
    monkeypatch.setenv("CONTROLROOM_SECRET_OTHER_WORKSPACE", "not for scripts")
    monkeypatch.setenv("DATABASE_URL", "postgres://controlroom:pw@db/controlroom")
    run = trigger(world, spec(phase("transform", "spark", module="tests.spark_scripts.write_both",
                                    args=["--day", "2026-01-01"], outputs=OUTPUTS)),
                  django_capture_on_commit_callbacks, parameters={})
    assert run.status == RunStatus.SUCCEEDED, errors(run) + logs(run)[-20:]
    lake = lake_of(world)
    assert table_rows(lake, "iceberg", "lake.events").num_rows == 3
    assert table_rows(lake, "delta", "lake.daily").column("count").to_pylist() == [3]
    versions = {v.table.name: v for v in TableVersion.objects.select_related("table")}
    assert set(versions) == {"events", "daily"}
    assert versions["events"].row_count == 3 and versions["events"].run_id == run.pk
    assert versions["daily"].table.format == "delta" and versions["daily"].attempt == 1
    lines = logs(run)
    assert any("argv=['--day', '2026-01-01'] wrote 3 rows" in line for line in lines)
    assert "inherited: " in lines  # no CONTROLROOM_SECRET_* nor DATABASE_URL reached the script
    started = RunEvent.objects.get(run=run, payload__has_key="spark_app")
    assert started.payload["spark_app"].startswith("local-") and "started on local[2]" in started.message
    output = run.phases.get().output
    assert output["spark"]["application"] == started.payload["spark_app"]
    assert sorted(t["table"] for t in output["tables"]) == ["lake.daily", "lake.events"]
    # The script printed a forged announcement: logged as a line, never believed.
    assert "\"evil\"" not in str(output), output
    assert any('"id": "evil"' in line for line in lines), lines
    client = Client()
    client.force_login(world.users["operator"])
    page = client.get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert f'<span class="muted spark-app">{started.payload["spark_app"]}' in page  # shown on the phase
    assert 'href="javascript:' not in page


def test_a_script_error_fails_the_phase_with_its_last_line_and_keeps_the_log(world, eager_celery, spark_modules,
                                                                           django_capture_on_commit_callbacks):
    run = trigger(world, spec(phase("transform", "spark", module="tests.spark_scripts.fail")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert errors(run) == ["the Spark script failed: ValueError: the input is not what this script expects"]
    lines = logs(run)
    assert "about to divide" in lines and any(line.startswith("Traceback") for line in lines)


def drivers_running(run) -> list[str]:
    """Command lines of the drivers of ``run``'s phases still running (their job files live in the
    phase's scratch folder, named after the run), orphans included; other drivers on this machine
    (a benchmark's) are not ours."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "lakehouse.spark.driver" in cmdline and f"/run{run.pk}-" in cmdline:
                found.append(cmdline)
    return found


@pytest.mark.once
def test_a_timeout_stops_the_driver_and_its_jvm(world, eager_celery, spark_modules,
                                                django_capture_on_commit_callbacks):
    text = spec(phase("transform", "spark", module="tests.spark_scripts.slow", timeout=30))
    began = time.monotonic()
    run = trigger(world, text, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and errors(run) == ["timed out after 30 s"]
    assert time.monotonic() - began < 90  # the minute-long job did not run to its end
    deadline = time.monotonic() + 15
    while drivers_running(run) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert drivers_running(run) == []


# --- a real standalone cluster, SeaweedFS and the shared JDBC catalog (PostgreSQL pass) -------------


def spark_job(module: str, ns: str, *, outputs: bool = True, timeout: int = 900) -> str:
    outs = f"      outputs: [{ns}.events, {{table: {ns}.daily, format: delta}}]\n" if outputs else ""
    return (f"name: spark-{uuid.uuid4().hex[:6]}\nparameters:\n  ns: {{type: string, default: {ns}}}\n"
            f"phases:\n  - name: transform\n    kind: spark\n    timeout: {timeout}\n    config:\n"
            f"      module: {module}\n      connection: cluster\n{outs}")


@pytest.fixture
def on_cluster(world, spark_cluster, trino_server, s3_server, monkeypatch, settings):
    """The workspace's catalog is the test Trino's JDBC catalog on SeaweedFS; its spark connection
    ``cluster`` is the standalone cluster."""
    settings.SPARK_MODULES = MODULES
    config = copy.deepcopy(trino_server.catalogs["iceberg"])
    monkeypatch.setenv("CONTROLROOM_SECRET_SPARK_S3", s3_server.secret)
    monkeypatch.setenv("CONTROLROOM_SECRET_SPARK_DB", "unused: the test PostgreSQL trusts loopback")
    ws = world.workspace
    SecretRef.objects.create(workspace=ws, name=config["s3"]["secret_key_ref"], source="env",
                             locator="CONTROLROOM_SECRET_SPARK_S3")
    password = SecretRef.objects.create(workspace=ws, name="lake-db", source="env",
                                        locator="CONTROLROOM_SECRET_SPARK_DB")
    Connection.objects.create(workspace=ws, name="lakehouse", kind=Connection.Kind.CATALOG, config=config,
                              password_ref=password)
    Connection.objects.create(workspace=ws, name="cluster", kind=Connection.Kind.SPARK,
                              config={"master": spark_cluster.master_url, "ui_url": spark_cluster.ui_url,
                                      "conf": {"spark.cores.max": "2", "spark.executor.memory": "1g"}})
    return spark_cluster


def start(world, spec_text: str, capture) -> Run:
    job = job_create(access=world.access("admin"), spec_text=spec_text)
    with capture(execute=False):
        return run_create(access=world.access("operator"), job=job)


def execute(run: Run) -> Phase:
    phase = run.phases.get()
    phase_execute(phase_id=phase.pk, worker="test")
    phase.refresh_from_db()
    return phase


def app_of(run: Run, timeout: float = 180) -> str:
    """The application id the phase recorded, once it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = RunEvent.objects.filter(run=run, payload__has_key="spark_app").first()
        if event is not None:
            return event.payload["spark_app"]
        time.sleep(0.2)
    raise AssertionError(f"no application was recorded: {logs(run)[-20:]}")


@pytest.mark.once
def test_on_a_standalone_cluster_the_phase_writes_the_shared_catalog_and_masks_secrets(
        world, on_cluster, s3_server, django_capture_on_commit_callbacks):
    ns = f"sp{uuid.uuid4().hex[:6]}"
    run = start(world, spark_job("tests.spark_scripts.write_both", ns), django_capture_on_commit_callbacks)
    phase = execute(run)
    assert phase.state == PhaseState.SUCCEEDED, (phase.error, logs(run)[-30:], on_cluster.logs())
    app = phase.output["spark"]["application"]
    assert app.startswith("app-") and on_cluster.app(app)["state"] == "FINISHED"
    lake = lake_of(world)
    assert table_rows(lake, "iceberg", f"{ns}.events").num_rows == 3  # read back through PyIceberg on S3
    assert table_rows(lake, "delta", f"{ns}.daily").column("count").to_pylist() == [3]  # and delta-rs
    assert {v.table.name for v in TableVersion.objects.filter(run=run)} == {"events", "daily"}
    text = "\n".join(logs(run))
    assert "the key is ***" in text and s3_server.secret not in text
    assert f"{on_cluster.ui_url}/app/?appId={app}" in text  # the application's page on the master UI
    assert RunEvent.objects.filter(run=run, type="PHASE_PROGRESS").exists()


@pytest.mark.once
def test_cancel_kills_the_application_on_the_cluster_within_ten_seconds(
        world, on_cluster, settings, django_capture_on_commit_callbacks):
    settings.PHASE_LEASE_TTL_S = 1  # the heartbeat that carries the cancel comes every ~0.33 s
    run = start(world, spark_job("tests.spark_scripts.slow", f"sp{uuid.uuid4().hex[:6]}", outputs=False),
                django_capture_on_commit_callbacks)
    worker = threading.Thread(target=lambda: (execute(run), connections.close_all()))
    worker.start()
    app = app_of(run)
    deadline = time.monotonic() + 120
    while (on_cluster.app(app) or {}).get("state") != "RUNNING" or not logs_contain(run, "slow job starting"):
        assert time.monotonic() < deadline and worker.is_alive(), logs(run)[-20:]
        time.sleep(0.2)
    asked = time.monotonic()
    run_cancel(access=world.access("operator"), run=run)
    state = ""
    while time.monotonic() - asked < 10:
        state = (on_cluster.app(app) or {}).get("state", "")
        if state in ("KILLED", "FINISHED"):
            break
        time.sleep(0.2)
    stopped_after = time.monotonic() - asked
    worker.join(60)
    print(f"the master showed the application {state} {stopped_after:.2f} s after the cancel")
    assert state in ("KILLED", "FINISHED"), on_cluster.app(app)
    assert all(w.get("coresused", 0) == 0 for w in on_cluster.master_state()["workers"])  # no executor left
    run.refresh_from_db()
    assert run.phases.get().state == PhaseState.CANCELLED and run.status == RunStatus.CANCELLED


def logs_contain(run, text: str) -> bool:
    return RunEvent.objects.filter(run=run, type="PHASE_LOG", message__contains=text).exists()
