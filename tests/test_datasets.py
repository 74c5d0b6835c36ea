"""Each workspace's datasets area: SQL of any role reads only its own workspace's files, and no SQL
can write into any datasets area, with the parser's check on or off (the engine alone holds)."""

import hashlib
import os
import threading

import pytest

from connections.models import Connection
from controlroom.access import Access
from controlroom.models import Role
from runs.models import RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_create
from sqlwarehouse.datasets import ReadOnlyDatasets, datasets_area
from sqlwarehouse.execution import query_execute, query_submit
from sqlwarehouse.models import QueryExecution

pytestmark = pytest.mark.django_db


def run(access: Access, sql: str) -> QueryExecution:
    connection = Connection.objects.get(workspace=access.workspace, name="warehouse")
    execution = query_submit(access=access, connection=connection, sql=sql)
    if execution.status == QueryExecution.Status.QUEUED:
        query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    return execution


def digest_tree(root) -> dict[str, str]:
    """Every file under ``root`` with its sha256: what must not change."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return found


@pytest.fixture
def hostile(world) -> Access:
    """The admin of workspace 'other' (the highest role there) attacking workspace 'acme'."""
    return Access(workspace=world.other, role=Role.ADMIN, user=world.users["outsider"])


def attacks(settings, world) -> list[str]:
    acme = datasets_area(world.workspace)
    return [
        # Writes into the victim's area by its real path, and into the attacker's own area.
        f"COPY (SELECT 'x' AS x) TO '{acme}/orders.csv' (HEADER)",
        f"COPY (SELECT 'x' AS x) TO '{settings.DATASETS_DIR}/acme/new.csv' (HEADER)",
        "COPY (SELECT 'x' AS x) TO 'datasets:///orders.csv' (HEADER)",
        "COPY (SELECT 'x' AS x) TO 'datasets:///fresh.parquet' (FORMAT parquet)",
        "COPY (SELECT 1 AS a, 2 AS b) TO 'datasets:///part' (FORMAT parquet, PARTITION_BY (a))",
        f"EXPORT DATABASE '{acme}/dump'",
        "EXPORT DATABASE 'datasets:///dump'",
        "ATTACH 'datasets:///new.duckdb' AS x",
        f"ATTACH '{acme}/new.duckdb' AS y",
        # Reads of the victim's files: by path, by climbing out of the own area, by glob.
        f"SELECT * FROM read_csv('{acme}/orders.csv')",
        "SELECT * FROM read_csv('datasets:///../acme/orders.csv')",
        "SELECT * FROM read_text('datasets:///../acme/orders.csv')",
        "SELECT * FROM read_blob('datasets:///../../datasets/acme/orders.csv')",
        f"SELECT * FROM glob('{settings.DATASETS_DIR}/*/*')",
    ]


@pytest.mark.parametrize("parser_check", [True, False], ids=["parser-on", "parser-off"])
def test_no_sql_writes_a_dataset_or_reads_another_workspace(world, hostile, settings, parser_check):
    settings.SQL_PARSER_CHECK = parser_check
    (datasets_area(world.other) / "mine.csv").write_text("a\n1\n")
    before = digest_tree(settings.DATASETS_DIR)
    outcomes = {sql: run(hostile, sql) for sql in attacks(settings, world)}
    leaked = {sql: e.rows for sql, e in outcomes.items() if e.status == "succeeded" and e.rows}
    succeeded_writes = [sql for sql, e in outcomes.items()
                        if e.status == "succeeded" and not sql.startswith("SELECT")]
    assert not leaked, f"another workspace's files were read: {leaked}"
    assert not succeeded_writes, f"SQL wrote into a datasets area: {succeeded_writes}"
    assert digest_tree(settings.DATASETS_DIR) == before
    refused = outcomes["COPY (SELECT 'x' AS x) TO 'datasets:///orders.csv' (HEADER)"]
    assert refused.error == "datasets are read-only: write results to a table or an artifact instead"


def test_a_workspace_reads_its_own_datasets_through_datasets_url(world, hostile):
    (datasets_area(world.other) / "sub").mkdir()
    (datasets_area(world.other) / "sub" / "more.csv").write_text("id,amount\n7,1.5\n")
    own = run(hostile, "SELECT count(*) AS n FROM read_csv('datasets:///orders.csv')")
    assert own.status == "succeeded" and own.rows[0][0] > 0, own.error
    globbed = run(hostile, "SELECT file FROM glob('datasets:///**/*.csv') ORDER BY file")
    assert [r[0] for r in globbed.rows] == ["datasets:///orders.csv", "datasets:///sub/more.csv"]


def test_a_link_out_of_the_area_is_not_followed(world, hostile, settings):
    area = datasets_area(world.other)
    os.symlink(datasets_area(world.workspace), area / "acme-link")
    os.symlink(datasets_area(world.workspace) / "orders.csv", area / "orders-link.csv")
    for sql in ("SELECT * FROM read_csv('datasets:///acme-link/orders.csv')",
                "SELECT * FROM read_csv('datasets:///orders-link.csv')",
                "SELECT * FROM glob('datasets:///**')"):
        execution = run(hostile, sql)
        assert execution.status == "failed" or all("acme" not in str(r) and "link" not in str(r)
                                                   for r in execution.rows), (sql, execution.rows)


def test_a_phase_writes_tables_but_never_datasets(world, settings, eager_celery, django_capture_on_commit_callbacks):
    """A sql phase of the victim's own operator cannot overwrite its inputs either; its CSV input
    is read through $datasets_dir as before."""
    spec = """name: tamper
phases:
  - name: read
    kind: sql
    config: {table: copied, sql: "SELECT * FROM read_csv($datasets_dir || '/orders.csv')"}
  - name: write
    kind: sql
    config: {sql: "COPY (SELECT 'x' AS x) TO 'datasets:///orders.csv' (HEADER)"}
"""
    before = digest_tree(settings.DATASETS_DIR)
    job = job_create(access=world.access("operator"), spec_text=spec)
    with django_capture_on_commit_callbacks(execute=True):
        created = run_create(access=world.access("operator"), job=job)
    created.refresh_from_db()
    phases = dict(created.phases.values_list("name", "state"))
    assert created.status == RunStatus.FAILED and phases == {"read": "succeeded", "write": "failed"}
    assert "datasets are read-only" in created.phases.get(name="write").error
    assert digest_tree(settings.DATASETS_DIR) == before


def test_datasets_and_warehouse_folders_must_not_nest(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "CONTROLROOM_DATA_DIR": str(tmp_path), "CONTROLROOM_WAREHOUSE_DIR": str(tmp_path / "d" / "w"),
           "CONTROLROOM_DATASETS_DIR": str(tmp_path / "d")}
    proc = subprocess.run([sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']="
                           "'controlroom.settings'; django.setup()"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "must not contain each other" in proc.stderr


def test_errors_name_the_dataset_not_the_servers_folder(world, hostile, settings):
    (datasets_area(world.other) / "folder").mkdir()
    for sql in ("SELECT * FROM read_text('datasets:///folder')", "SELECT * FROM read_csv('datasets:///nope.csv')"):
        execution = run(hostile, sql)
        assert execution.status == "failed" and str(settings.DATASETS_DIR) not in execution.error, execution.error


def test_two_engines_on_one_database_in_one_process_both_read_datasets(world):
    """Connections to one file in a process share DuckDB's instance (the web server's threads do):
    the second must not fail on the file system the first registered."""
    from sqlwarehouse.engines import duckdb_engine_for

    conn = Connection.objects.get(workspace=world.workspace, name="warehouse")
    dev = world.workspace.environments.get(name="dev")
    first, second = (duckdb_engine_for(conn, read_only=False, environment=dev) for _ in range(2))
    with first.connect() as a, second.connect() as b:
        counts = [c.execute("SELECT count(*) FROM read_csv('datasets:///orders.csv')").fetchone()[0] for c in (a, b)]
    assert counts[0] == counts[1] > 0

def test_each_thread_reading_a_dataset_keeps_its_own_position(world):
    """DuckDB's threads share one handle and call seek, then read: another thread's seek in
    between must not move this thread's read (a big Parquet file failed with 'Invalid data')."""
    (datasets_area(world.workspace) / "blob.bin").write_bytes(bytes(range(256)))
    handle = ReadOnlyDatasets(datasets_area(world.workspace)).open("/blob.bin", "rb")
    handle.seek(10)
    other = threading.Thread(target=lambda: (handle.seek(200), handle.read(8)))
    other.start()
    other.join()
    assert handle.read(4) == bytes([10, 11, 12, 13]) and handle.tell() == 14
    handle.seek(-2, 2)
    assert handle.read() == bytes([254, 255])
