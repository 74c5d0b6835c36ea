"""The `spark` kind without a JVM: its config, spark connections, the scripts a git sync keeps with
the job version, the queue its phases go to, and what the phase does before Spark starts."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from connections.models import Connection
from lakehouse.phases import spark as spark_kind
from lakehouse.spark.process import DriverProcess, Masker
from lakehouse.spark.target import target_config_errors, target_from
from runs import tasks
from runs.models import Job, RunStatus
from runs.services.gitsync import git_sync
from tests.lakehouse_helpers import errors, phase, spec, trigger

SCRIPT = "print('hello from spark')\n"


def spark_spec(name: str = "sparky", script: str = "spark/job.py") -> str:
    return (f"name: {name}\nphases:\n  - name: transform\n    kind: spark\n    config:\n"
            f"      script: {script}\n      outputs: [silver.orders, {{table: gold.daily, format: delta}}]\n")


@pytest.mark.parametrize("config, message", [
    ({}, "exactly one of 'script'"),
    ({"script": "a.py", "module": "x.y"}, "exactly one of 'script'"),
    ({"script": "../etc/x.py"}, "relative path to a .py file"),
    ({"script": "/abs/x.py"}, "relative path to a .py file"),
    ({"script": "x.sh"}, "relative path to a .py file"),
    ({"script": "a//b.py"}, "relative path to a .py file"),
    ({"module": "os; rm"}, "dotted Python module name"),
    ({"script": "a.py", "args": ["x"] * 101}, "'args' must be a list of at most 100 strings"),
    ({"script": "a.py", "args": [1]}, "'args' must be a list"),
    ({"script": "a.py", "connection": "a b"}, "'connection' must be a connection's name"),
    ({"script": "a.py", "outputs": ["a.b.c"]}, "is not namespace.name"),
    ({"script": "a.py", "outputs": [{"table": "a.b", "format": "hudi"}]}, "'format' must be iceberg or delta"),
    ({"script": "a.py", "inputs": [{"table": "a.b", "path": "/x"}]}, "only 'table' and 'format'"),
    ({"script": "a.py", "jars": ["x.jar"]}, "unknown spark config field 'jars'"),
])
def test_config_errors(config, message):
    assert any(message in e for e in spark_kind.config_errors(config)), spark_kind.config_errors(config)


def test_good_configs_pass():
    assert spark_kind.config_errors({"script": "jobs/spark/silver.py", "args": ["--day", "x"], "connection": "spark",
                                     "outputs": ["silver.orders", {"table": "gold.d", "format": "delta"}],
                                     "inputs": ["bronze.orders"]}) == []
    assert spark_kind.config_errors({"module": "demo.spark.bronze_to_silver"}) == []


@pytest.mark.parametrize("config, message", [
    ({"master": "yarn"}, "'master' must be local[N]"),
    ({"master": "local[0]"}, "'master' must be local[N]"),
    ({"master": "spark://user:pw@host:7077"}, "'master' must be local[N]"),
    ({"master": "spark://host"}, "'master' must be local[N]"),
    ({"master": "sc://host:15002/x?token=y"}, "'master' must be local[N]"),
    ({"master": "local[2]", "ui_url": "file:///etc"}, "'ui_url' must be"),
    ({"master": "local[2]", "conf": {"spark.jars": "/tmp/evil.jar"}}, "may not set 'spark.jars'"),
    ({"master": "local[2]", "conf": {"spark.driver.extraJavaOptions": "-Dx"}}, "may not set"),
    ({"master": "local[2]", "conf": {"spark.executor.memory": "2g; rm"}}, "short plain value"),
    ({"master": "local[2]", "extra": 1}, "unknown spark config key 'extra'"),
])
def test_spark_connection_errors(config, message):
    assert any(message in e for e in target_config_errors(config)), target_config_errors(config)


def test_spark_connections_are_checked_when_saved_and_resolve_to_a_target(world):
    bad = Connection(workspace=world.workspace, name="spark", kind=Connection.Kind.SPARK, config={"master": "yarn"})
    with pytest.raises(ValidationError, match="must be local"):
        bad.full_clean()
    config = {"master": "spark://127.0.0.1:7077", "ui_url": "http://127.0.0.1:8080/",
              "conf": {"spark.executor.memory": "1g", "spark.cores.max": 2}}
    good = Connection(workspace=world.workspace, name="spark", kind=Connection.Kind.SPARK, config=config)
    good.full_clean()
    target = target_from(config, "spark")
    assert (target.kind, target.ui_url, target.conf) == ("standalone", "http://127.0.0.1:8080",
                                                         {"spark.executor.memory": "1g", "spark.cores.max": "2"})
    assert target_from({"master": "sc://127.0.0.1:15002"}).kind == "connect" and target_from(None).master == "local[2]"


@pytest.mark.django_db
def test_a_sync_keeps_the_script_with_the_version_and_versions_script_changes(world, repo, source):
    sha1 = repo.commit({"jobs/sparky.yaml": spark_spec(), "spark/job.py": SCRIPT})
    result = git_sync(access=world.access("admin"), source=source)
    assert [(j.slug, j.outcome) for j in result.jobs] == [("sparky", "created")] and result.errors == []
    version = Job.objects.get(slug="sparky").current_version
    assert (version.git_sha, version.files) == (sha1, {"spark/job.py": SCRIPT})
    # The spec is unchanged but the script changed: a new version with the new code.
    repo.commit({"spark/job.py": SCRIPT + "print('v2')\n"})
    again = git_sync(access=world.access("admin"), source=source)
    assert [(j.version, j.outcome) for j in again.jobs] == [(2, "updated")]
    assert Job.objects.get(slug="sparky").current_version.files["spark/job.py"].endswith("print('v2')\n")
    repo.commit({"README.md": "docs"})
    assert [j.outcome for j in git_sync(access=world.access("admin"), source=source).jobs] == ["unchanged"]


@pytest.mark.django_db
def test_a_script_that_is_missing_or_points_outside_is_reported_and_nothing_imported(world, repo, source, tmp_path):
    outside = tmp_path / "server.py"
    outside.write_text("secret = 1\n")
    (repo.path / "spark").mkdir()
    (repo.path / "spark" / "leak.py").symlink_to(outside)
    repo.commit({"jobs/missing.yaml": spark_spec("missing", "spark/nothing.py"),
                 "jobs/leak.yaml": spark_spec("leak", "spark/leak.py"),
                 "jobs/binary.yaml": spark_spec("binary", "spark/bin.py"), "spark/bin.py": "x = '\x00'\n"})
    result = git_sync(access=world.access("admin"), source=source)
    assert result.jobs == []
    assert {e.path: e.errors for e in result.errors} == {
        "jobs/binary.yaml": ["phase 'transform': spark/bin.py is not UTF-8 text (or it contains NUL characters)"],
        "jobs/leak.yaml": ["phase 'transform': spark/leak.py is outside the repository or a symbolic link"],
        "jobs/missing.yaml": ["phase 'transform': spark/nothing.py is not a file in the repository at this commit"]}
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_spark_phases_go_to_the_spark_queue_only(world, monkeypatch):
    from runs.services.jobs import job_create
    from runs.services.runs import run_create

    sent = []
    monkeypatch.setattr(tasks.phase_execute, "apply_async", lambda args, **kw: sent.append((args[0], kw["queue"])))
    job = job_create(access=world.access("operator"), spec_text=spec(
        phase("transform", "spark", module="demo.spark.bronze_to_silver"),
        phase("plain", "sql", sql="SELECT 1", depends_on=[])))
    run = run_create(access=world.access("operator"), job=job)
    tasks.run_dispatch(run.pk)
    by_name = {p.pk: p.name for p in run.phases.all()}
    assert sorted((by_name[pk], queue) for pk, queue in sent) == [("plain", None), ("transform", "spark")]


@pytest.mark.django_db
def test_a_script_is_never_taken_from_a_job_made_by_hand(world, eager_celery, django_capture_on_commit_callbacks):
    run = trigger(world, spec(phase("transform", "spark", script="spark/job.py")), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert "read from the job's git repository" in errors(run)[0] and "never taken from a form" in errors(run)[0]


@pytest.mark.django_db
def test_only_registered_modules_run(world, eager_celery, django_capture_on_commit_callbacks, settings):
    settings.SPARK_MODULES = []
    run = trigger(world, spec(phase("transform", "spark", module="os")), django_capture_on_commit_callbacks)
    assert "module 'os' is not registered for spark phases" in errors(run)[0]


def test_secrets_are_masked_and_the_error_is_the_tracebacks_last_line(tmp_path):
    masker = Masker(["s3cr3t-key", "pw"])  # too short a value is not masked (it would blot out the log)
    assert masker("key=s3cr3t-key pw") == "key=*** pw"
    driver = DriverProcess.__new__(DriverProcess)
    driver.tail = __import__("collections").deque([
        "Traceback (most recent call last):", '  File "job.py", line 3, in <module>', "    1 / 0",
        "    ~~^~~", "ZeroDivisionError: division by zero", ""], maxlen=60)
    assert driver.error_line() == "ZeroDivisionError: division by zero"
    driver.tail = __import__("collections").deque(["pyspark.errors.exceptions.captured.AnalysisException: "
                                                   "[TABLE_OR_VIEW_NOT_FOUND] The table `x` cannot be found."])
    assert driver.error_line().startswith("pyspark.errors.exceptions.captured.AnalysisException: [TABLE_OR_VIEW")


def test_the_standalone_executor_refuses_kinds_it_cannot_run(capsys):
    """Spark (and the other lakehouse kinds) write the table registry: the executor says where they
    run instead of claiming them and failing each one."""
    from runs.remote import main

    with pytest.raises(SystemExit) as stopped:
        main(["--url", "http://127.0.0.1:1", "--token", "crt_x", "--kinds", "sql,spark"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "not spark" in err and "--queues spark" in err


@pytest.mark.django_db
def test_the_sql_editor_offers_and_runs_only_sql_connections(world):
    """A spark (or catalog) connection is for phases: the editor neither lists it nor runs SQL on it,
    even when it sorts first (the demo's 'spark' before 'warehouse')."""
    from django.test import Client

    from controlroom.services import ServiceError
    from sqlwarehouse.execution import query_submit
    from sqlwarehouse.models import QueryExecution

    spark = Connection.objects.create(workspace=world.workspace, name="aaa-spark", kind=Connection.Kind.SPARK,
                                      config={"master": "local[2]"})
    client = Client()
    client.force_login(world.users["analyst"])
    page = client.get("/w/acme/sql/").content.decode()
    assert "aaa-spark" not in page and "warehouse" in page
    refused = client.post("/w/acme/sql/", {"sql": "select 1", "connection": spark.pk, "run": "1"})
    assert refused.status_code in (200, 400) and not QueryExecution.objects.exists()
    with pytest.raises(ServiceError, match="is a spark connection; the SQL editor runs statements on duckdb and trino"):
        query_submit(access=world.access("analyst"), connection=spark, sql="select 1")
