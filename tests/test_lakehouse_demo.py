"""The lakehouse demo job (``demo/jobs/lakehouse.yaml``), seeded by ``seed_demo`` as ``make run``
seeds it: the shipped orders.csv → bronze (Iceberg append with ingestion metadata) → silver
(typed, deduplicated, Iceberg upsert on order_id) → gold (Iceberg by country, Delta by day) →
checks, one of which warns on purpose.

- Embedded (no server: SQLite catalog, local disk): every phase succeeds, the tables hold what
  DuckDB computes from the CSV on its own, the warning's failing rows are stored and shown,
  versions and lineage are recorded; a rerun appends to bronze again (bronze keeps every arrival,
  by design) while the upsert leaves silver as it was.
- Shared catalog (slow, once): the same job, unchanged, on the JDBC catalog in the test Trino's
  PostgreSQL with its warehouse on SeaweedFS, picked by a catalog connection named ``lakehouse``;
  then an analyst reads the gold table through Trino in the SQL editor.
"""

from __future__ import annotations

import copy
import html
import io
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import TestCase

from artifacts.models import Artifact
from artifacts.storage import get_store
from connections.models import Connection, SecretRef
from controlroom.models import Membership, Role, Workspace
from lakehouse.models import Table, TableEdge, TableVersion
from lakehouse.selectors import table_lineage
from runs.models import Job, PhaseState, Run, RunStatus
from runs.services.runs import run_create
from tests.conftest import PASSWORD
from tests.lakehouse_helpers import errors, lake_of, table_rows

pytestmark = pytest.mark.slow  # two runs of six lakehouse phases: seconds, not milliseconds

CSV = Path(__file__).resolve().parent.parent / "demo" / "data" / "orders.csv"
PHASES = ["bronze", "silver", "gold", "gold_daily", "check_silver", "check_gold"]
TABLES = {"bronze.orders": "iceberg", "silver.orders": "iceberg", "gold.revenue_by_country": "iceberg",
          "gold.daily_revenue": "delta"}
WARNING = "refunds to review"

# What the demo should end with, computed by DuckDB straight from the CSV (not by the job's SQL):
# exact duplicate lines collapse, rows without a customer or a numeric amount are left out.
_CLEAN = """
    WITH raw AS (SELECT DISTINCT * FROM read_csv($csv, header = true, all_varchar = true))
    SELECT order_id::INTEGER AS order_id, order_date::DATE AS order_date, customer_id,
           upper(trim(country)) AS country, amount::DECIMAL(12, 2) AS amount, lower(status) AS status
    FROM raw
    WHERE try_cast(amount AS DECIMAL(12, 2)) IS NOT NULL AND nullif(customer_id, '') IS NOT NULL
"""
BY_COUNTRY = (f"SELECT country, count(*), sum(amount), count(DISTINCT customer_id) FROM ({_CLEAN}) "
              "WHERE status = 'paid' GROUP BY country ORDER BY country")


def from_csv(sql: str) -> list[tuple]:
    with duckdb.connect() as con:
        return con.execute(sql, {"csv": str(CSV)}).fetchall()


class Demo:
    """The seeded demo workspace, its lakehouse job, and an analyst beside the demo user."""

    def __init__(self) -> None:
        self.workspace = Workspace.objects.get(slug="demo")
        self.job = Job.objects.get(workspace=self.workspace, slug="lakehouse")
        self.user = get_user_model().objects.get(username="demo")
        self.analyst = get_user_model().objects.create_user(username="ana", password=PASSWORD)
        Membership.objects.create(workspace=self.workspace, user=self.analyst, role=Role.ANALYST)

    @property
    def access(self):
        from controlroom.access import Access

        membership = Membership.objects.get(workspace=self.workspace, user=self.user)
        return Access(workspace=self.workspace, role=membership.role, user=self.user)

    def client(self, user):
        from django.test import Client

        client = Client()
        client.force_login(user)
        return client

    def run(self, capture) -> Run:
        """Run the job in dev to its end, in this process (eager Celery), as the demo user."""
        with capture(execute=True):
            run = run_create(access=self.access, job=self.job, environment="dev")
        run.refresh_from_db()
        return run


@pytest.fixture
def demo(db, settings, tmp_path) -> Demo:
    settings.DATA_DIR = tmp_path / "data"  # where seed_demo keeps the demo password
    call_command("seed_demo", stdout=io.StringIO())
    return Demo()


def phase_states(run: Run) -> dict[str, str]:
    return dict(run.phases.order_by("pk").values_list("name", "state"))


def versions_of(run: Run) -> dict[str, TableVersion]:
    """The table versions ``run`` wrote, by qualified table name."""
    return {e.table_version.table.qualified_name: e.table_version
            for e in TableEdge.objects.filter(run=run, direction="write").select_related("table_version__table")}


def reads_of(run: Run) -> set[tuple[str, str, int]]:
    """(phase, table, version) of every read edge of ``run``."""
    edges = TableEdge.objects.filter(run=run, direction="read").select_related("phase", "table_version__table")
    return {(e.phase.name, e.table_version.table.qualified_name, e.table_version.version) for e in edges}


def failing_rows(run: Run) -> list[dict]:
    artifact = Artifact.objects.get(run=run, phase__name="check_silver", name="failing_rows.parquet")
    with get_store().open(artifact.sha256) as stream:
        return pq.read_table(pa.BufferReader(stream.read())).to_pylist()


def test_the_demo_runs_embedded_and_a_rerun_does_not_duplicate_silver(demo, eager_celery, settings,
                                                                        django_capture_on_commit_callbacks):
    first = demo.run(django_capture_on_commit_callbacks)
    assert first.status == RunStatus.SUCCEEDED, errors(first)
    assert phase_states(first) == dict.fromkeys(PHASES, PhaseState.SUCCEEDED)
    lake = lake_of(demo, workspace=demo.workspace)
    assert lake.embedded and (settings.LAKEHOUSE_DIR / "demo" / "dev" / "catalog.db").exists()

    # Bronze: every line of the CSV as text, plus where and when it arrived.
    bronze = table_rows(lake, "iceberg", "bronze.orders")
    csv_lines = from_csv("SELECT count(*) FROM read_csv($csv, header = true)")[0][0]
    assert bronze.num_rows == csv_lines == 245
    assert set(bronze.column("_run_id").to_pylist()) == {first.pk}
    assert set(bronze.column("_source_file").to_pylist()) == {"orders.csv"}
    assert pa.types.is_timestamp(bronze.schema.field("_ingested_at").type)
    assert bronze.schema.field("amount").type == pa.string()  # bronze does not type: silver does

    # Silver: typed, deduplicated, invalid rows out; exactly what DuckDB makes of the CSV.
    silver = table_rows(lake, "iceberg", "silver.orders")
    expected_silver = from_csv(f"SELECT * FROM ({_CLEAN}) ORDER BY order_id")
    assert [tuple(r.values()) for r in silver.to_pylist()] == expected_silver and len(expected_silver) == 240
    assert silver.schema.field("amount").type == pa.decimal128(12, 2)

    # Gold: paid revenue by country (Iceberg) and by day (Delta).
    gold = table_rows(lake, "iceberg", "gold.revenue_by_country")
    assert [tuple(r.values()) for r in gold.to_pylist()] == from_csv(BY_COUNTRY)
    daily = table_rows(lake, "delta", "gold.daily_revenue")
    assert [tuple(r.values()) for r in daily.to_pylist()] == from_csv(
        f"SELECT order_date, count(*), sum(amount) FROM ({_CLEAN}) WHERE status = 'paid' GROUP BY 1 ORDER BY 1")
    assert sum(daily.column("revenue").to_pylist()) == sum(gold.column("revenue").to_pylist()) > Decimal(0)

    # The deliberate warning: the phase and the run succeed, the refunds are stored and shown.
    checks = {c["name"]: c for c in first.phases.get(name="check_silver").output["checks"]}
    refunds = from_csv(f"SELECT count(*) FROM ({_CLEAN}) WHERE status = 'refunded'")[0][0]
    assert checks[WARNING]["status"] == "warn" and checks[WARNING]["failing"] == refunds == 26
    assert {name: c["status"] for name, c in checks.items() if name != WARNING} == dict.fromkeys(
        ["complete", "one row per order", "known statuses", "known countries", "no negative amounts", "has orders"],
        "pass")
    caught = failing_rows(first)
    assert len(caught) == refunds and {(r["failed_check"], r["status"]) for r in caught} == {(WARNING, "refunded")}
    gold_checks = first.phases.get(name="check_gold").output["checks"]
    assert {c["status"] for c in gold_checks} == {"pass"}
    page = demo.client(demo.user).get(f"/w/demo/runs/{first.pk}/").content.decode()
    assert f"check {WARNING} (sql, warn) warn: {refunds} failing row(s)" in page and "failing_rows.parquet" in page

    # One version per table written, made by this run; lineage through the medallion layers.
    written = versions_of(first)
    assert {name: v.table.format for name, v in written.items()} == TABLES
    assert {name: v.row_count for name, v in written.items()} == {
        "bronze.orders": 245, "silver.orders": 240, "gold.revenue_by_country": 6, "gold.daily_revenue": 30}
    assert all(v.run == first and len(v.fingerprint) == 64 for v in written.values())
    assert reads_of(first) == {
        ("silver", "bronze.orders", written["bronze.orders"].version),
        ("gold", "silver.orders", written["silver.orders"].version),
        ("gold_daily", "silver.orders", written["silver.orders"].version),
        ("check_silver", "silver.orders", written["silver.orders"].version),
        ("check_gold", "gold.revenue_by_country", written["gold.revenue_by_country"].version),
    }
    # The table pages' lineage goes through phases, not whole runs: this run wrote bronze and read
    # silver, yet bronze is not made from silver.
    def names(tables: list[Table]) -> list[str]:
        return [f"{t.namespace}.{t.name}" for t in tables]

    lineage = {name: table_lineage(table=v.table) for name, v in written.items()}
    assert {name: (names(lin.upstream), names(lin.downstream)) for name, lin in lineage.items()} == {
        "bronze.orders": ([], ["silver.orders"]),
        "silver.orders": (["bronze.orders"], ["gold.daily_revenue", "gold.revenue_by_country"]),
        "gold.revenue_by_country": (["silver.orders"], []),
        "gold.daily_revenue": (["silver.orders"], []),
    }

    # Rerun on the same file: bronze appends the arrival again (by design: it records every load),
    # silver's upsert finds every order already there unchanged and commits nothing, gold is rebuilt
    # with the same content.
    second = demo.run(django_capture_on_commit_callbacks)
    assert second.status == RunStatus.SUCCEEDED, errors(second)
    assert phase_states(second) == dict.fromkeys(PHASES, PhaseState.SUCCEEDED)
    bronze = table_rows(lake, "iceberg", "bronze.orders")
    assert bronze.num_rows == 2 * 245
    assert sorted(set(bronze.column("_run_id").to_pylist())) == [first.pk, second.pk]
    silver_again = table_rows(lake, "iceberg", "silver.orders")
    assert silver_again.equals(silver) and silver_again.num_rows == 240
    assert second.phases.get(name="silver").output["tables"][0]["rows_written"] == 0
    rewritten = versions_of(second)
    assert set(rewritten) == set(TABLES) - {"silver.orders"}  # silver: no new version
    assert TableVersion.objects.filter(table__name="orders", table__namespace="silver").count() == 1
    assert rewritten["gold.revenue_by_country"].fingerprint == written["gold.revenue_by_country"].fingerprint
    assert rewritten["gold.daily_revenue"].fingerprint == written["gold.daily_revenue"].fingerprint
    assert rewritten["bronze.orders"].row_count == 490
    # Its checks read the silver version the first run made: the unchanged table, checked again.
    assert ("check_silver", "silver.orders", written["silver.orders"].version) in reads_of(second)
    assert len(failing_rows(second)) == refunds
    assert Table.objects.filter(workspace=demo.workspace).count() == 4


def test_seeding_twice_keeps_one_lakehouse_job(demo):
    call_command("seed_demo", stdout=io.StringIO())
    assert list(Job.objects.filter(workspace=demo.workspace).values_list("slug", flat=True)) == [
        "lakehouse", "lakehouse-spark", "medallion"]
    assert demo.job.versions.count() == 1 and demo.job.versions.get().git_path == "demo/jobs/lakehouse.yaml"


# --- the shared catalog: SeaweedFS S3 + the JDBC catalog in PostgreSQL, read back by Trino -----------


@pytest.fixture
def shared_catalog(demo, trino_server, s3_server, monkeypatch) -> Connection:
    """The catalog connection ``lakehouse`` of the demo workspace: the test Trino's JDBC catalog
    (``iceberg`` in Trino), S3 key and database password through secret references."""
    config = trino_server.catalogs.get("iceberg")
    assert config, "the test Trino was started without an S3 server (python -m tests.servers --s3 --trino)"
    monkeypatch.setenv("CONTROLROOM_SECRET_DEMO_S3", s3_server.secret)
    monkeypatch.setenv("CONTROLROOM_SECRET_DEMO_DB", "unused: the test PostgreSQL trusts loopback")
    ws = demo.workspace
    key = SecretRef.objects.create(workspace=ws, name=config["s3"]["secret_key_ref"], source="env",
                                   locator="CONTROLROOM_SECRET_DEMO_S3")
    password = SecretRef.objects.create(workspace=ws, name="lake-db", source="env",
                                        locator="CONTROLROOM_SECRET_DEMO_DB")
    connection = Connection(workspace=ws, name="lakehouse", kind=Connection.Kind.CATALOG,
                            config=copy.deepcopy(config), password_ref=password)
    connection.full_clean()  # what the admin's form checks
    connection.save()
    assert key.name == connection.config["s3"]["secret_key_ref"]
    # The catalog is the Trino session's, shared with other tests and earlier sessions: the
    # demo's tables start absent (a leftover would hold commits of runs with our run ids).
    _drop_demo_tables(demo, s3_server)
    yield connection
    _drop_demo_tables(demo, s3_server)


def _drop_demo_tables(demo: Demo, s3_server) -> None:
    from pyiceberg.exceptions import NoSuchTableError

    lake = lake_of(demo, workspace=demo.workspace)
    catalog = lake.iceberg()
    for name, fmt in TABLES.items():
        if fmt == "iceberg":
            try:
                catalog.purge_table(name)
            except NoSuchTableError:
                pass
        else:
            bucket, prefix = lake.delta_uri(*name.split("."))[len("s3://"):].split("/", 1)
            client = s3_server.client()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
                for item in page.get("Contents", ()):
                    client.delete_object(Bucket=bucket, Key=item["Key"])


def trino_connection(demo: Demo, trino_server, monkeypatch) -> Connection:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_DEMO_TRINO", unquote(parts.password or ""))
    secret = SecretRef.objects.create(workspace=demo.workspace, name="trino-password", source="env",
                                      locator="CONTROLROOM_SECRET_DEMO_TRINO")
    return Connection.objects.create(
        workspace=demo.workspace, name="trino", kind=Connection.Kind.TRINO, password_ref=secret,
        config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme,
                "user": trino_server.service_user, "verify": trino_server.ca_file or True,
                "catalog": "iceberg", "schema": "gold"})


@pytest.mark.django_db(transaction=True)
def test_open_in_sql_editor_reads_exactly_that_version_with_duckdb_on_the_embedded_catalog(
        demo, eager_celery, settings, django_capture_on_commit_callbacks):
    """Without Trino, the tables page's link opens DuckDB SQL over the version's own Parquet files
    (read-only ``lakehouse://``); running it gives that version's rows, not the newest."""
    from sqlwarehouse.models import QueryExecution

    first = demo.run(django_capture_on_commit_callbacks)
    second = demo.run(django_capture_on_commit_callbacks)
    assert first.status == second.status == RunStatus.SUCCEEDED, errors(second)
    bronze_v1, bronze_v2 = versions_of(first)["bronze.orders"], versions_of(second)["bronze.orders"]
    analyst = demo.client(demo.user)  # the parser's read-only layer refuses read_parquet() to read-only roles
    for version, rows in ((bronze_v1, 245), (bronze_v2, 490)):
        page = analyst.get(f"/w/demo/tables/{version.table_id}/?version={version.version}").content.decode()
        link = re.search(r'href="(/w/demo/sql/\?[^"]+)"', page).group(1).replace("&amp;", "&")
        editor = analyst.get(link).content.decode()
        sql = html.unescape(re.search(r'<textarea[^>]*name="sql"[^>]*>(.*?)</textarea>', editor, re.S).group(1))
        assert "read_parquet" in sql and "lakehouse:///warehouse/bronze/orders/data/" in sql, sql
        counted = f"SELECT count(*) AS n FROM ({sql.replace('LIMIT 100', '')})"
        duckdb_id = re.search(r'<option value="(\d+)" selected', editor).group(1)
        with TestCase.captureOnCommitCallbacks(execute=True):
            response = analyst.post("/w/demo/sql/", {"sql": counted, "connection": duckdb_id, "run": "1"})
        execution = QueryExecution.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))
        assert execution.status == "succeeded", execution.error
        assert execution.rows == [[rows]]
    # Another workspace's version is not found; another workspace's lakehouse files stay out of reach.
    assert analyst.get(f"/w/demo/sql/?table_version={bronze_v1.pk + 10_000}").status_code == 404
    foreign = settings.LAKEHOUSE_DIR / "other" / "dev" / "secret.parquet"
    foreign.parent.mkdir(parents=True)
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), foreign)
    for path in ("lakehouse:///../../other/dev/secret.parquet", f"lakehouse://{foreign}", str(foreign)):
        with TestCase.captureOnCommitCallbacks(execute=True):
            response = analyst.post("/w/demo/sql/", {"sql": f"SELECT * FROM read_parquet('{path}')",
                                                     "connection": duckdb_id, "run": "1"})
        execution = QueryExecution.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))
        assert execution.status == "failed" and "s3cr3t" not in str(execution.rows), (path, execution.error)


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
def test_the_demo_runs_on_seaweedfs_and_trino_reads_gold_in_the_sql_editor(
        demo, shared_catalog, trino_server, eager_celery, settings, monkeypatch, django_capture_on_commit_callbacks):
    from sqlwarehouse.models import QueryExecution

    run = demo.run(django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert phase_states(run) == dict.fromkeys(PHASES, PhaseState.SUCCEEDED)
    # The connection replaced the embedded catalog: everything went to S3, nothing to local disk.
    written = versions_of(run)
    bucket = shared_catalog.config["warehouse"].split("/")[2]
    assert all(v.table.location.startswith(f"s3://{bucket}/") for v in written.values()), \
        {n: v.table.location for n, v in written.items()}
    assert not (settings.LAKEHOUSE_DIR / "demo").exists()
    assert {name: v.row_count for name, v in written.items()} == {
        "bronze.orders": 245, "silver.orders": 240, "gold.revenue_by_country": 6, "gold.daily_revenue": 30}
    checks = {c["name"]: c["status"] for c in run.phases.get(name="check_silver").output["checks"]}
    assert checks[WARNING] == "warn" and len(failing_rows(run)) == 26

    # An analyst opens the SQL editor on the Trino connection and reads the gold table; Trino
    # finds it through the same JDBC catalog (its ``iceberg`` catalog) on the same S3.
    trino = trino_connection(demo, trino_server, monkeypatch)
    analyst = demo.client(demo.analyst)
    sql = "SELECT country, orders, revenue, customers FROM iceberg.gold.revenue_by_country ORDER BY country"
    with TestCase.captureOnCommitCallbacks(execute=True):  # the editor queues the query; it runs here
        response = analyst.post("/w/demo/sql/", {"sql": sql, "connection": trino.pk, "run": "1"})
    assert response.status_code == 302, response.content.decode()[:2000]
    execution = QueryExecution.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))
    assert execution.status == "succeeded", execution.error
    with trino_server.connect(user=trino_server.service_user) as conn:  # Trino's own record of it
        cursor = conn.cursor()
        cursor.execute("SELECT \"user\", state FROM system.runtime.queries WHERE query_id = ?",
                       [execution.engine_query_id])
        assert cursor.fetchall() == [["ana~ro", "FINISHED"]]  # as the analyst's read-only identity
    expected = from_csv(BY_COUNTRY)
    assert [[str(cell) for cell in row] for row in execution.rows] == [[str(c) for c in row] for row in expected]
    page = analyst.get(response["Location"]).content.decode()
    assert all(f"<td>{row[0]}</td>" in page and (f'data-v="{row[2]}"' in page or f"<td>{row[2]}</td>" in page)
               for row in expected), page[-3000:]
    # The gold version Trino read is the one the run recorded.
    assert execution.row_count == written["gold.revenue_by_country"].row_count == 6
