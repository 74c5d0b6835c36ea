"""`dbt` phases on DuckDB: a real dbt (its own virtualenv, ``lakehouse.phases.dbt.env``) building the
small project in tests/dbt_project/ from a real git repository, through the worker's executor path.

The slow tests need the dbt virtualenv (installed once into the cache: ``python -m
lakehouse.phases.dbt.env``); the config and early-failure tests do not."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from django.db import connections

from artifacts.models import Artifact
from artifacts.storage import get_store
from connections.models import Connection
from lakehouse.fingerprint import table_fingerprint
from lakehouse.models import Table, TableEdge, TableVersion
from lakehouse.phases import dbt as dbt_kind
from lakehouse.selectors import table_lineage
from runs.models import Job, PhaseState, Run, RunStatus
from runs.services.gitsync import git_sync
from runs.services.jobs import job_create
from runs.services.phases import phase_execute
from runs.services.runs import run_cancel, run_create
from runs.spec import SpecError

PROJECT = Path(__file__).resolve().parent / "dbt_project"
RAW = ("SELECT * FROM (VALUES (1, 'Ann', 'de'), (2, 'Bob', 'fr'), (3, 'Cy', 'xx'), (4, 'Di', 'de')) "
       "t(id, name, country)")
FAILING = "not_null_customers_by_country_country_name"


def project_files(prefix: str = "analytics/shop") -> dict[str, str]:
    """The test project's files, placed under ``prefix`` in a repository."""
    return {f"{prefix}/{p.relative_to(PROJECT).as_posix()}": p.read_text()
            for p in sorted(PROJECT.rglob("*")) if p.is_file()}


def shop_spec(name: str = "shop", **dbt_config) -> str:
    config = {"project": "analytics/shop", **dbt_config}
    return yaml.safe_dump({"name": name, "phases": [
        {"name": "raw", "kind": "sql", "config": {"table": "raw_customers", "sql": RAW}},
        {"name": "transform", "kind": "dbt", "config": config}]}, sort_keys=False)


def synced_job(world, repo, source, files: dict[str, str], slug: str) -> tuple[Job, str]:
    sha = repo.commit(files)
    result = git_sync(access=world.access("admin"), source=source)
    assert result.errors == [], result.errors
    return Job.objects.get(workspace=world.workspace, slug=slug), sha


def run_to_end(world, job: Job, capture) -> Run:
    with capture(execute=True):
        run = run_create(access=world.access("operator"), job=job)
    run.refresh_from_db()
    return run


def artifact_bytes(artifact: Artifact) -> bytes:
    with get_store().open(artifact.sha256) as stream:
        return stream.read()


def warehouse(world) -> duckdb.DuckDBPyConnection:
    from django.conf import settings

    return duckdb.connect(str(settings.WAREHOUSE_DIR / "acme" / "dev" / "warehouse.duckdb"), read_only=True)


@pytest.fixture(scope="session")
def dbt_venv() -> Path:
    """dbt's virtualenv, installed once (the time is printed: CI installs it beforehand)."""
    from lakehouse.phases.dbt.env import dbt_install

    began = time.monotonic()
    path = dbt_install()
    print(f"\ndbt virtualenv ready in {time.monotonic() - began:.1f} s")
    return path


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("config, message", [
    ({}, "dbt phases need 'project'"),
    ({"project": "../shop"}, "'project' must be a relative folder"),
    ({"project": "/srv/shop"}, "'project' must be a relative folder"),
    ({"project": "a/./b"}, "'project' must be a relative folder"),
    ({"project": "datasets://"}, "'project' must be a relative folder"),
    ({"project": "datasets://../x"}, "'project' must be a relative folder"),
    ({"project": "shop", "command": "docs"}, "'command' must be one of build, run, test, seed, snapshot"),
    ({"project": "shop", "select": "--full-refresh"}, "'select' must be dbt selectors"),
    ({"project": "shop", "exclude": ["a", 3]}, "'exclude' must be dbt selectors"),
    ({"project": "shop", "select": "a; rm -rf /"}, "'select' must be dbt selectors"),
    ({"project": "shop", "connection": "a b"}, "'connection' must be a connection's name"),
    ({"project": "shop", "vars": ["x"]}, "'vars' must be a mapping"),
    ({"project": "shop", "vars": {"x": float("nan")}}, "'vars' must be plain values"),
    ({"project": "shop", "target_schema": "a.b"}, "'target_schema' must be a plain identifier"),
    ({"project": "shop", "profiles": {}}, "unknown dbt config field 'profiles'"),
])
def test_config_errors_name_the_problem(config, message):
    errors = dbt_kind.config_errors(config)
    assert any(message in e for e in errors), errors


def test_good_configs_pass_and_the_project_file_is_kept_with_the_version():
    good = {"project": "analytics/shop", "command": "test", "select": "stg_customers+ tag:nightly",
            "exclude": ["path:models/slow", "@big"], "connection": "trino", "vars": {"day": "2026-01-01", "n": [1]},
            "target_schema": "analytics"}
    assert dbt_kind.config_errors(good) == []
    assert dbt_kind.config_errors({"project": "."}) == [] == dbt_kind.config_errors({"project": "datasets://dbt/x"})
    assert dbt_kind.selectors(good["select"]) == ["stg_customers+", "tag:nightly"]
    assert dbt_kind.repo_files(good) == ["analytics/shop/dbt_project.yml"]
    assert dbt_kind.repo_files({"project": "."}) == ["dbt_project.yml"]
    assert dbt_kind.repo_files({"project": "datasets://dbt/x"}) == []


def pins(lock: str) -> dict[str, str]:
    text = (Path(__file__).resolve().parent.parent / lock).read_text()
    return dict(line.split(" ", 1)[0].split("==") for line in text.splitlines() if "==" in line and line[0] != " ")


def test_dbt_shares_the_apps_duckdb_and_trino_client_and_installs_without_django():
    """One DuckDB storage format for the app and dbt (the lock is compiled against the app's), and
    CI's pre-step (``python -m lakehouse.phases.dbt.env``) imports no Django."""
    import subprocess
    import sys

    app, dbt = pins("requirements.lock"), pins("requirements-dbt.lock")
    assert dbt["dbt-core"].startswith("1.11.") and dbt["dbt-duckdb"].startswith("1.11.")
    assert dbt["dbt-trino"].startswith("1.11.")
    assert {k: dbt[k] for k in ("duckdb", "trino")} == {k: app[k] for k in ("duckdb", "trino")}
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    probe = "import lakehouse.phases.dbt.env as e, sys; print(e.venv_dir().name); assert 'django' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dbt-")


@pytest.mark.slow
def test_the_image_installs_dbt_from_the_lock_and_the_installer_alone(dbt_venv, tmp_path):
    """The Dockerfile copies only requirements-dbt.lock and env.py into /app before the code, and
    runs env.py as a script: laid out the same way here, it finds the lock beside /app and the
    virtualenv of that lock's content (the one the workers then use)."""
    import shutil
    import subprocess
    import sys

    from lakehouse.phases.dbt import env as dbt_env

    dockerfile = (Path(dbt_env.LOCK).parent / "Dockerfile").read_text()
    assert "COPY requirements-dbt.lock /app/requirements-dbt.lock" in dockerfile
    assert "COPY lakehouse/phases/dbt/env.py /app/lakehouse/phases/dbt/env.py" in dockerfile
    assert "python /app/lakehouse/phases/dbt/env.py" in dockerfile
    app = tmp_path / "app"
    (app / "lakehouse" / "phases" / "dbt").mkdir(parents=True)
    shutil.copy(dbt_env.LOCK, app / "requirements-dbt.lock")
    shutil.copy(dbt_env.__file__, app / "lakehouse" / "phases" / "dbt" / "env.py")
    done = subprocess.run([sys.executable, str(app / "lakehouse" / "phases" / "dbt" / "env.py")], cwd=tmp_path,
                          env={"PATH": os.environ["PATH"], "HOME": str(Path.home()),
                               "CONTROLROOM_CACHE_DIR": str(dbt_env.cache_dir())},
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(dbt_venv)


@pytest.mark.django_db
def test_a_bad_config_is_refused_when_the_job_is_saved(world):
    with pytest.raises(SpecError) as caught:
        job_create(access=world.access("operator"), spec_text=shop_spec(command="compile", select="-x"))
    text = "\n".join(caught.value.errors)
    assert "'command' must be one of build, run, test, seed, snapshot, not 'compile'" in text
    assert "'select' must be dbt selectors" in text


@pytest.mark.django_db
def test_a_sync_refuses_a_job_whose_project_is_missing_at_the_commit(world, repo, source):
    repo.commit({"jobs/shop.yaml": shop_spec(), "analytics/other/dbt_project.yml": "name: other\n"})
    result = git_sync(access=world.access("admin"), source=source)
    assert [e.path for e in result.errors] == ["jobs/shop.yaml"]
    assert "analytics/shop/dbt_project.yml is not a file in the repository" in " ".join(result.errors[0].errors)
    assert "analytics/shop is not a folder in the repository" in " ".join(result.errors[0].errors)
    assert not Job.objects.filter(slug="shop").exists()


@pytest.mark.django_db
def test_a_change_to_a_model_alone_makes_a_new_job_version(world, repo, source):
    """The version keeps the project folder's tree id: a push that only edits a model is a new
    version (runs then build that commit); a push that touches nothing of the job is not."""
    files = {"jobs/shop.yaml": shop_spec(), **project_files()}
    job, _ = synced_job(world, repo, source, files, "shop")
    first = job.current_version
    assert first.files["analytics/shop/"].startswith("tree ") and "analytics/shop/dbt_project.yml" in first.files
    model = next(path for path in files if path.endswith(".sql") and "/models/" in path)
    job, second_sha = synced_job(world, repo, source, {**files, model: files[model] + "\n-- edited\n"}, "shop")
    second = job.current_version
    assert second.number == first.number + 1 and second.git_sha == second_sha
    assert second.files["analytics/shop/"] != first.files["analytics/shop/"]
    job, _ = synced_job(world, repo, source, {**files, model: files[model] + "\n-- edited\n",
                                              "docs/unrelated.md": "# notes\n"}, "shop")
    assert job.current_version.number == second.number
    repo.commit({"jobs/shop.yaml": shop_spec(project="analytics/nowhere")})
    result = git_sync(access=world.access("admin"), source=source)
    assert "analytics/nowhere is not a folder in the repository at this commit" in str(result.errors[0].errors)


@pytest.mark.django_db
def test_early_failures_are_one_clear_sentence(world, eager_celery, django_capture_on_commit_callbacks):
    """Before dbt starts: a job made by hand has no repository; a connection of another kind."""
    by_hand = job_create(access=world.access("operator"), spec_text=shop_spec(name="by-hand"))
    run = run_to_end(world, by_hand, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert run.phases.get(name="transform").error == (
        "the dbt project is read from the job's git repository at its commit, and this job version has none: "
        "sync the job from git, or name a datasets:// folder")
    Connection.objects.create(workspace=world.workspace, name="spark", kind=Connection.Kind.SPARK,
                              config={"master": "local[2]"})
    wrong = job_create(access=world.access("operator"), spec_text=shop_spec(name="wrong", connection="spark"))
    run = run_to_end(world, wrong, django_capture_on_commit_callbacks)
    assert run.phases.get(name="transform").error == (
        "Connection 'spark' is spark; dbt phases build on duckdb or trino connections.")
    Connection.objects.create(workspace=world.workspace, name="shared", kind=Connection.Kind.DUCKDB,
                              config={"database": "shared.duckdb"}, shared_across_environments=True)
    shared = job_create(access=world.access("operator"), spec_text=shop_spec(name="shared", connection="shared"))
    run = run_to_end(world, shared, django_capture_on_commit_callbacks)
    assert run.phases.get(name="transform").error == (
        "connection 'shared' holds one database for every environment, so only prod runs write through it, "
        "and dbt build writes (its schemas, test failures)")


def test_the_profile_is_written_for_its_owner_only(tmp_path):
    from lakehouse.phases.dbt.target import DbtTarget, profiles_write

    target = DbtTarget(ctx=None, connection=Connection(name="trino"), format="trino",
                       profile={"type": "trino", "password": "pw", "database": "iceberg"})
    folder = profiles_write(tmp_path / "profiles", target)
    path = folder / "profiles.yml"
    assert (path.stat().st_mode & 0o777, folder.stat().st_mode & 0o777) == (0o600, 0o700)
    assert yaml.safe_load(path.read_text()) == {"controlroom": {"target": "run", "outputs": {"run": target.profile}}}


# --- a real dbt build -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the heartbeat's own connection writes while dbt runs
def test_build_records_artifacts_checks_tables_and_lineage(world, repo, source, dbt_venv, eager_celery,
                                                          django_capture_on_commit_callbacks):
    job, sha = synced_job(world, repo, source, {"jobs/shop.yaml": shop_spec(vars={"batch": 7}), **project_files()},
                          "shop")
    began = time.monotonic()
    run = run_to_end(world, job, django_capture_on_commit_callbacks)
    print(f"\ndbt build (DuckDB) run: {time.monotonic() - began:.1f} s")
    phase = run.phases.get(name="transform")
    # The failing test fails the phase, in one line naming it; everything before it was built.
    assert run.status == RunStatus.FAILED and phase.state == PhaseState.FAILED
    assert phase.error == f"dbt build failed: test {FAILING} failed (1 failing row)"
    assert run.git_sha == sha

    # Artifacts: dbt's manifest and run results, and the failing rows read back from the audit table.
    artifacts = {a.name: a for a in Artifact.objects.filter(run=run, phase=phase)}
    assert set(artifacts) == {"manifest.json", "run_results.json", "failing_rows.parquet"}
    manifest = json.loads(artifact_bytes(artifacts["manifest.json"]))
    assert manifest["nodes"]["model.shop.customers_by_country"]["depends_on"]["nodes"] == [
        "model.shop.stg_customers", "seed.shop.countries"]
    results = json.loads(artifact_bytes(artifacts["run_results.json"]))["results"]
    assert sorted(r["status"] for r in results) == ["fail", "pass", "pass", "success", "success", "success"]
    rows = pq.read_table(pa.BufferReader(artifact_bytes(artifacts["failing_rows.parquet"]))).to_pylist()
    assert rows == [{"failed_check": FAILING, "country_code": "XX", "country_name": None, "customers": 1}]

    # Each dbt test is a check result: in the output, the log and so on the run page.
    checks = {c["name"]: (c["type"], c["status"], c["failing"]) for c in phase.output["checks"]}
    assert checks == {"not_null_stg_customers_id": ("dbt not_null", "pass", 0),
                      "unique_stg_customers_id": ("dbt unique", "pass", 0),
                      FAILING: ("dbt not_null", "fail", 1)}
    logs = list(run.events.filter(phase=phase, type="PHASE_LOG").values_list("level", "message"))
    assert ("error", f"check {FAILING} (dbt not_null, fail) fail: Got 1 result, configured to fail if != 0") in logs
    assert any("OK created sql table model main.customers_by_country" in m for _, m in logs)  # dbt's own lines
    page = world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert "check unique_stg_customers_id (dbt unique, fail) pass" in page and "failing_rows.parquet" in page

    # The models and the seed are tables of the registry, with the rows dbt built (vars reached dbt).
    tables = {t.name: t for t in Table.objects.filter(workspace=world.workspace)}
    assert set(tables) == {"raw_customers", "stg_customers", "countries", "customers_by_country"}
    assert {(t.format, t.catalog_name, t.namespace) for t in tables.values()} == {("duckdb", "warehouse", "main")}
    with warehouse(world) as con:
        built = con.sql("SELECT * FROM main.customers_by_country").to_arrow_table()
        assert con.sql("SELECT DISTINCT batch FROM main.stg_customers").fetchall() == [(7,)]
    version = TableVersion.objects.get(table=tables["customers_by_country"])
    assert (version.run, version.phase, version.row_count, version.git_sha) == (run, phase, 3, sha)
    assert version.fingerprint == table_fingerprint(built) and not version.fingerprint_pending
    assert {c["name"] for c in version.schema} == {"country_code", "country_name", "customers"}
    source_version = TableVersion.objects.get(table=tables["raw_customers"])
    assert source_version.run is None and source_version.row_count == 4  # seen, not made, by dbt

    # Lineage: write edges for what dbt built, read edges for what the built models read.
    edges = {(e.table_version.table.name, e.direction) for e in TableEdge.objects.filter(run=run, phase=phase)}
    assert edges == {("stg_customers", "write"), ("countries", "write"), ("customers_by_country", "write"),
                     ("raw_customers", "read"), ("stg_customers", "read"), ("countries", "read")}
    upstream = {t.name for t in table_lineage(table=tables["customers_by_country"]).upstream}
    assert {"stg_customers", "countries", "raw_customers"} <= upstream
    assert {t.name for t in table_lineage(table=tables["raw_customers"]).downstream} >= {"customers_by_country"}

    # Again: new versions of what dbt rebuilt; the unchanged source is read at its recorded version.
    began = time.monotonic()
    again = run_to_end(world, job, django_capture_on_commit_callbacks)
    print(f"dbt build (DuckDB) second run: {time.monotonic() - began:.1f} s")
    assert again.phases.get(name="transform").error == phase.error
    assert TableVersion.objects.filter(table=tables["customers_by_country"]).count() == 2
    assert TableVersion.objects.filter(table=tables["raw_customers"]).count() == 1
    assert TableEdge.objects.get(run=again, table_version__table=tables["raw_customers"]).table_version == \
        source_version


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the heartbeat's own connection writes while dbt runs
def test_select_a_passing_subset_succeeds_and_reads_the_project_from_datasets(
        world, dbt_venv, eager_celery, django_capture_on_commit_callbacks):
    """A job made by hand may take its project from the workspace's datasets; ``select`` limits the
    build (here the passing part only), and the phase succeeds."""
    from sqlwarehouse.datasets import datasets_area

    target = datasets_area(world.workspace) / "dbt" / "shop"
    for rel, text in project_files(".").items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_text(text)
    os.symlink("/etc/passwd", target / "models" / "leak.sql")  # never copied: a symlink
    job = job_create(access=world.access("operator"), spec_text=shop_spec(
        name="from-datasets", project="datasets://dbt/shop", select="stg_customers countries"))
    began = time.monotonic()
    run = run_to_end(world, job, django_capture_on_commit_callbacks)
    print(f"\ndbt build --select (DuckDB) run: {time.monotonic() - began:.1f} s")
    phase = run.phases.get(name="transform")
    assert run.status == RunStatus.SUCCEEDED, phase.error
    assert {c["name"]: c["status"] for c in phase.output["checks"]} == {
        "not_null_stg_customers_id": "pass", "unique_stg_customers_id": "pass"}
    assert sorted(t["table"] for t in phase.output["tables"]) == ["main.countries", "main.stg_customers"]
    assert not Artifact.objects.filter(run=run, name="failing_rows.parquet").exists()
    assert phase.output["dbt"]["results"] == {"success": 2, "pass": 2}
    manifest = json.loads(artifact_bytes(Artifact.objects.get(run=run, name="manifest.json")))
    assert "model.shop.stg_customers" in manifest["nodes"] and "model.shop.leak" not in manifest["nodes"]


SLOW_MODEL = ("{{ config(materialized='table') }}\n"
              "select sum(a.range * b.range) as n from range(200000) a cross join range(200000) b\n")


def slow_job(world, repo, source, *, timeout: int | None = None) -> Job:
    phase = {"name": "transform", "kind": "dbt", "config": {"project": "slow"}}
    if timeout:
        phase["timeout"] = timeout
    job, _ = synced_job(world, repo, source, {
        "jobs/slow.yaml": yaml.safe_dump({"name": "slow", "phases": [phase]}),
        "slow/dbt_project.yml": "name: slow\nprofile: x\nmodel-paths: [models]\n",
        "slow/models/big.sql": SLOW_MODEL}, "slow")
    return job


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the heartbeat's own connection writes while dbt runs
def test_a_timeout_stops_dbt_and_fails_the_phase_saying_so(world, repo, source, dbt_venv, eager_celery,
                                                           django_capture_on_commit_callbacks):
    job = slow_job(world, repo, source, timeout=8)
    began = time.monotonic()
    run = run_to_end(world, job, django_capture_on_commit_callbacks)
    assert time.monotonic() - began < 40
    phase = run.phases.get()
    assert (phase.state, phase.error) == (PhaseState.FAILED, "timed out after 8 s")
    pid = run.events.get(type="PHASE_LOG", payload__has_key="dbt_pid").payload["dbt_pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_cancel_stops_dbt_and_its_query(world, repo, source, dbt_venv, settings,
                                        django_capture_on_commit_callbacks):
    settings.PHASE_LEASE_TTL_S = 1  # the heartbeat that carries the cancel comes every ~0.33 s
    job = slow_job(world, repo, source)
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    phase = run.phases.get()
    worker = threading.Thread(target=lambda: (phase_execute(phase_id=phase.pk, worker="test"),
                                              connections.close_all()))
    worker.start()
    deadline = time.monotonic() + 120
    pid = None
    while not run.events.filter(type="PHASE_LOG", message__contains="START sql table model main.big").exists():
        assert time.monotonic() < deadline and worker.is_alive(), "dbt never started the model"
        time.sleep(0.2)
    pid = run.events.get(type="PHASE_LOG", payload__has_key="dbt_pid").payload["dbt_pid"]
    time.sleep(1)  # the query is running
    asked = time.monotonic()
    run_cancel(access=world.access("operator"), run=run)
    worker.join(60)
    stopped_after = time.monotonic() - asked
    print(f"\ndbt stopped {stopped_after:.2f} s after the cancel")
    assert not worker.is_alive()
    phase.refresh_from_db()
    run.refresh_from_db()
    assert phase.state == PhaseState.CANCELLED and run.status == RunStatus.CANCELLED
    assert stopped_after < 15
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # dbt is gone (its group was interrupted, then killed if it lingered)
