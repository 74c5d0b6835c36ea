"""One Iceberg catalog, three engines (issue 10, section 3), on both catalog types the suite's
Trino shares: ``iceberg`` (JDBC on PostgreSQL) and ``iceberg_rest`` (SeaweedFS's REST catalog),
both on the SeaweedFS S3 server.

A workspace's catalog connection is built from the very config Trino's catalog was made from;
then PyIceberg (``iceberg`` phases), Trino (``trino`` phases, the SQL engine) and DuckDB (the
SQL of ``iceberg``/``delta`` phases over tables read as Arrow) each read what the others wrote,
row for row and by canonical fingerprint. Delta tables go to the catalog's ``delta_root`` on S3.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
import pyarrow as pa
import pytest
from django.core.exceptions import ValidationError

from connections.models import Connection, SecretRef
from controlroom.access import Access
from controlroom.models import Environment, Workspace
from lakehouse.catalogs import Lakehouse, catalog_for
from lakehouse.fingerprint import table_fingerprint
from lakehouse.models import Table, TableEdge, TableVersion
from runs.models import RunStatus
from sqlwarehouse.engines.trino import TrinoQueryEngine
from tests.lakehouse_helpers import errors, phase, spec, trigger

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True),
              # a REST catalog is configured in full, not through PyIceberg's deprecated guesses
              pytest.mark.filterwarnings("error:Deprecated in .*OAuth2:DeprecationWarning")]

CATALOG = "shared"  # the catalog connection's name in Control Room


@dataclass
class Shared:
    """One workspace wired to one of Trino's lake catalogs."""

    trino_catalog: str  # Trino's name for the catalog: "iceberg" or "iceberg_rest"
    config: dict[str, Any]  # the catalog connection config Trino's catalog was built from
    connection: Connection
    trino: Any  # the TrinoEndpoint
    s3: Any  # the S3Endpoint

    def lake(self, workspace: Workspace) -> Lakehouse:
        return catalog_for(workspace, Environment.objects.get(workspace=workspace, name="dev"), CATALOG)

    def trino_rows(self, sql: str) -> pa.Table:
        """What Trino answers, as the SQL editor and phases receive it (TrinoQueryEngine's Arrow)."""
        parts = urlsplit(self.trino.url)
        engine = TrinoQueryEngine(host=parts.hostname, port=parts.port, user="checker",
                                  service_user=self.trino.service_user, password=unquote(parts.password or ""),
                                  http_scheme=parts.scheme, verify=self.trino.ca_file or True)
        try:
            stream = engine.run(sql, [], 120)
            return pa.Table.from_batches(list(stream.batches), schema=None) if stream else pa.table({})
        finally:
            engine.close()


def catalog_connection(workspace: Workspace, config: dict[str, Any], secret: str, monkeypatch,
                       *, name: str = CATALOG) -> Connection:
    """A catalog connection of ``workspace`` (dev) with its S3 secret and database password as
    secret references of that workspace, validated as the admin pages validate it."""
    var = f"CONTROLROOM_SECRET_SHARED_{workspace.slug.upper()}"
    monkeypatch.setenv(f"{var}_S3", secret)
    monkeypatch.setenv(f"{var}_PG", "trusted")  # the JDBC catalog's PostgreSQL trusts any password
    SecretRef.objects.get_or_create(workspace=workspace, name=config["s3"]["secret_key_ref"], source="env",
                                    locator=f"{var}_S3")
    password, _ = SecretRef.objects.get_or_create(workspace=workspace, name="catalog-pw", source="env",
                                                  locator=f"{var}_PG")
    connection = Connection(workspace=workspace, name=name, kind=Connection.Kind.CATALOG, config=config,
                            environment=workspace.environments.get(name="dev"),
                            password_ref=password if config["type"] == "jdbc" else None)
    connection.full_clean()
    connection.save()
    return connection


def trino_connection(workspace: Workspace, trino_server, monkeypatch) -> Connection:
    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_SHARED_TRINO", unquote(parts.password or ""))
    secret, _ = SecretRef.objects.get_or_create(workspace=workspace, name="trino-password", source="env",
                                                locator="CONTROLROOM_SECRET_SHARED_TRINO")
    return Connection.objects.create(
        workspace=workspace, name="trino", kind="trino", password_ref=secret,
        environment=workspace.environments.get(name="dev"),
        config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme,
                "user": trino_server.service_user, "verify": trino_server.ca_file or True})


@pytest.fixture(params=["iceberg", "iceberg_rest"])
def shared(request, world, trino_server, s3_server, monkeypatch, eager_celery) -> Shared:
    if request.param not in trino_server.catalogs:
        pytest.fail("the suite's Trino was started without an S3 server: it has no shared lake catalogs")
    config = copy.deepcopy(trino_server.catalogs[request.param])
    connection = catalog_connection(world.workspace, config, s3_server.secret, monkeypatch)
    trino_connection(world.workspace, trino_server, monkeypatch)
    return Shared(request.param, config, connection, trino_server, s3_server)


def fresh_namespace() -> str:
    return f"sc{uuid.uuid4().hex[:12]}"


def by_id(data: pa.Table) -> list[dict[str, Any]]:
    return sorted(data.to_pylist(), key=lambda row: row["id"])


def succeeded(run) -> None:
    assert run.status == RunStatus.SUCCEEDED, errors(run)


# Every type the phases write and Trino types exactly; NULLs in every column but the key.
ORDERS_SQL = """
SELECT * FROM (VALUES
  (1, 'alice', 10.50::DECIMAL(10, 2), 1.5::DOUBLE, DATE '2024-01-01', TIMESTAMP '2024-01-01 10:00:00.123456',
   true, 9000000000::BIGINT),
  (2, 'zoë ☃', 0.01::DECIMAL(10, 2), -0.25::DOUBLE, DATE '2024-02-29', TIMESTAMP '2024-02-29 23:59:59',
   false, -1::BIGINT),
  (3, 'bob', 99999999.99::DECIMAL(10, 2), 1e300::DOUBLE, DATE '1970-01-01', TIMESTAMP '1970-01-01 00:00:00',
   true, 0::BIGINT),
  (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
) t(id, name, amount, ratio, day, ts, flag, big)
"""
ORDERS = [
    {"id": 1, "name": "alice", "amount": Decimal("10.50"), "ratio": 1.5, "day": dt.date(2024, 1, 1),
     "ts": dt.datetime(2024, 1, 1, 10, 0, 0, 123456), "flag": True, "big": 9_000_000_000},
    {"id": 2, "name": "zoë ☃", "amount": Decimal("0.01"), "ratio": -0.25, "day": dt.date(2024, 2, 29),
     "ts": dt.datetime(2024, 2, 29, 23, 59, 59), "flag": False, "big": -1},
    {"id": 3, "name": "bob", "amount": Decimal("99999999.99"), "ratio": 1e300, "day": dt.date(1970, 1, 1),
     "ts": dt.datetime(1970, 1, 1), "flag": True, "big": 0},
    {"id": 4, "name": None, "amount": None, "ratio": None, "day": None, "ts": None, "flag": None, "big": None},
]


def test_pyiceberg_writes_and_trino_reads_the_same_rows(world, shared, django_capture_on_commit_callbacks):
    ns = fresh_namespace()
    run = trigger(world, spec(phase("write", "iceberg", table=f"{ns}.orders", catalog=CATALOG, sql=ORDERS_SQL,
                                    partition_by=["day(day)", "bucket[4](id)"])),
                  django_capture_on_commit_callbacks)
    succeeded(run)
    version = TableVersion.objects.get(table__catalog_name=CATALOG, table__namespace=ns, table__name="orders")
    assert (version.run_id, version.row_count, version.table.format) == (run.pk, 4, "iceberg")
    assert version.table.location.startswith(shared.config["warehouse"].rstrip("/") + "/")

    seen = shared.trino_rows(f"SELECT * FROM {shared.trino_catalog}.{ns}.orders")
    assert by_id(seen) == ORDERS
    # The canonical fingerprint of Trino's answer is the one recorded at the commit, and PyIceberg's.
    assert table_fingerprint(seen) == version.fingerprint
    assert table_fingerprint(shared.lake(world.workspace).iceberg().load_table((ns, "orders")).scan().to_arrow()) \
        == version.fingerprint
    # Trino sees the very snapshot Control Room recorded, with the run and phase in its summary.
    snapshots = shared.trino_rows(f"SELECT snapshot_id, summary['controlroom.run-id'] AS run_id, "
                                  f"summary['controlroom.phase'] AS phase "
                                  f"FROM {shared.trino_catalog}.{ns}.\"orders$snapshots\"")
    assert snapshots.to_pylist() == [{"snapshot_id": version.version, "run_id": str(run.pk), "phase": "write"}]
    # The partition spec the phase declared is the one Trino plans with.
    partitions = shared.trino_rows(f"SELECT count(*) AS n FROM {shared.trino_catalog}.{ns}.\"orders$partitions\"")
    assert partitions.column("n").to_pylist() == [4]


def test_trino_writes_and_pyiceberg_and_duckdb_read(world, shared, django_capture_on_commit_callbacks):
    ns = fresh_namespace()
    target = f"{shared.trino_catalog}.{ns}.accounts"
    sql = (f"CREATE SCHEMA {shared.trino_catalog}.{ns};\n"
           f"CREATE TABLE {target} AS SELECT id, owner, CAST(balance AS DECIMAL(12, 2)) AS balance FROM (VALUES "
           f"(1, 'ann', 1), (2, 'ben', 2), (3, 'cat', 3)) t(id, owner, balance);\n"
           f"INSERT INTO {target} VALUES (4, 'dan', DECIMAL '4.00');\n"
           f"MERGE INTO {target} t USING (VALUES (2, 'ben2', DECIMAL '20.00'), (5, 'eve', DECIMAL '5.00')) "
           f"s(id, owner, balance) ON t.id = s.id "
           f"WHEN MATCHED THEN UPDATE SET owner = s.owner, balance = s.balance "
           f"WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.owner, s.balance);\n"
           f"DELETE FROM {target} WHERE id = 3")
    run = trigger(world, spec(phase("load", "trino", sql=sql, catalog=CATALOG, outputs=[f"{ns}.accounts"])),
                  django_capture_on_commit_callbacks)
    succeeded(run)
    expected = [{"id": 1, "owner": "ann", "balance": Decimal("1.00")},
                {"id": 2, "owner": "ben2", "balance": Decimal("20.00")},
                {"id": 4, "owner": "dan", "balance": Decimal("4.00")},
                {"id": 5, "owner": "eve", "balance": Decimal("5.00")}]
    assert [s.get("rows_written") for s in run.phases.get().output["statements"][1:]] == [3, 1, 2, 1]

    # PyIceberg, through the workspace's catalog connection, applies Trino's row-level deletes.
    tbl = shared.lake(world.workspace).iceberg().load_table((ns, "accounts"))
    pyiceberg_rows = tbl.scan().to_arrow()
    assert by_id(pyiceberg_rows) == expected
    trino_seen = shared.trino_rows(f"SELECT * FROM {target}")
    assert table_fingerprint(pyiceberg_rows) == table_fingerprint(trino_seen)
    trino_snapshot = tbl.current_snapshot().snapshot_id
    # Each of the four commits is a version made by the phase, in order, with a write edge; its
    # fingerprint is PyIceberg's read of that very snapshot, and its row count the rows it holds
    # (Trino's MERGE and DELETE write row-level deletes, which total-records still counts).
    versions = list(TableVersion.objects.filter(table__catalog_name=CATALOG, table__namespace=ns,
                                                table__name="accounts").order_by("committed_at", "id"))
    assert [s.snapshot_id for s in sorted(tbl.snapshots(), key=lambda s: s.sequence_number)] == [
        v.version for v in versions]
    assert [(v.operation, v.row_count, v.run_id, v.phase.name, v.attempt) for v in versions] == [
        ("create", 3, run.pk, "load", 1), ("append", 4, run.pk, "load", 1), ("merge", 5, run.pk, "load", 1),
        ("overwrite", 4, run.pk, "load", 1)]
    for v in versions:
        assert v.fingerprint == table_fingerprint(tbl.scan(snapshot_id=v.version).to_arrow()), v.operation
        assert v.schema == [{"name": "id", "type": "int", "nullable": True},
                            {"name": "owner", "type": "string", "nullable": True},
                            {"name": "balance", "type": "decimal(12, 2)", "nullable": True}]
    assert versions[-1].version == trino_snapshot and versions[-1].fingerprint == table_fingerprint(trino_seen)
    assert versions[-1].table.format == "iceberg" and versions[-1].table.location == tbl.location()
    assert len({v.fingerprint for v in versions}) == 4
    edges = TableEdge.objects.filter(run=run).order_by("id")
    assert [(e.direction, e.table_version_id, e.phase.name) for e in edges] == [
        ("write", v.pk, "load") for v in versions]
    assert run.phases.get().output["tables"] == [
        {"table": f"{ns}.accounts", "format": "iceberg", "catalog": CATALOG, "version": v.version,
         "operation": v.operation, "rows": v.row_count, "fingerprint": v.fingerprint} for v in versions]

    # DuckDB reads it as an input of an iceberg phase (registered as a read of Trino's snapshot),
    # and the table that phase writes is read by Trino again.
    derived = trigger(world, spec(phase("derive", "iceberg", table=f"{ns}.rich", catalog=CATALOG,
                                        inputs=[f"{ns}.accounts"],
                                        sql="SELECT id, upper(owner) AS owner, balance * 2 AS doubled "
                                            "FROM accounts WHERE balance >= 4")),
                      django_capture_on_commit_callbacks)
    succeeded(derived)
    read = TableVersion.objects.get(table__namespace=ns, table__name="accounts", version=trino_snapshot)
    assert (read.pk, read.run_id, read.row_count) == (versions[-1].pk, run.pk, 4)  # the trino phase's version
    assert TableEdge.objects.filter(run=derived, table_version=read, direction="read").count() == 1
    rich = shared.trino_rows(f"SELECT id, owner, doubled FROM {shared.trino_catalog}.{ns}.rich")
    assert by_id(rich) == [{"id": 2, "owner": "BEN2", "doubled": Decimal("40.00")},
                           {"id": 4, "owner": "DAN", "doubled": Decimal("8.00")},
                           {"id": 5, "owner": "EVE", "doubled": Decimal("10.00")}]
    written = TableVersion.objects.get(table__namespace=ns, table__name="rich")
    assert table_fingerprint(rich) == written.fingerprint


def test_a_trino_phase_records_only_its_own_commits_and_its_reads(world, shared,
                                                                 django_capture_on_commit_callbacks):
    ns = fresh_namespace()
    cat = f"{shared.trino_catalog}.{ns}"
    # Tables written by a trino phase that declares no outputs stay out of the registry.
    seed = trigger(world, spec(phase("seed", "trino", sql=(
        f"CREATE SCHEMA {cat};\n"
        f"CREATE TABLE {cat}.src AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) t(id, tag);\n"
        f"CREATE TABLE {cat}.dst AS SELECT * FROM (VALUES (0, 'z')) t(id, tag)"))),
        django_capture_on_commit_callbacks)
    succeeded(seed)
    assert not Table.objects.filter(namespace=ns).exists()
    lake = shared.lake(world.workspace)
    before = lake.iceberg().load_table((ns, "dst")).current_snapshot().snapshot_id
    src = lake.iceberg().load_table((ns, "src"))

    load = trigger(world, spec(phase("load", "trino", catalog=CATALOG, inputs=[f"{ns}.src"],
                                     outputs=[f"{ns}.dst", f"{ns}.never"],
                                     sql=f"INSERT INTO {cat}.dst SELECT id * 10, upper(tag) FROM {cat}.src")),
                   django_capture_on_commit_callbacks)
    succeeded(load)
    dst = lake.iceberg().load_table((ns, "dst"))
    inserted = dst.current_snapshot().snapshot_id
    # Only the snapshot its INSERT committed is the phase's, not the one the table had before.
    written = TableVersion.objects.get(table__namespace=ns, table__name="dst")
    assert (written.version, written.operation, written.row_count, written.run_id) == (inserted, "append", 4,
                                                                                        load.pk)
    assert written.version != before
    assert written.fingerprint == table_fingerprint(dst.scan(snapshot_id=inserted).to_arrow())
    # The input is recorded at the version read (a version no phase made), with PyIceberg's fingerprint.
    read = TableVersion.objects.get(table__namespace=ns, table__name="src")
    assert (read.version, read.run_id, read.row_count) == (src.current_snapshot().snapshot_id, None, 3)
    assert read.fingerprint == table_fingerprint(src.scan().to_arrow())
    assert sorted((e.direction, e.table_version_id) for e in TableEdge.objects.filter(run=load)) == [
        ("read", read.pk), ("write", written.pk)]
    # A declared output the statements never wrote is a warning, not a failure.
    warnings = list(load.events.filter(type="PHASE_LOG", level="warning").values_list("message", flat=True))
    assert warnings == [f"output {ns}.never: no statement of this phase committed to it in catalog '{CATALOG}' "
                        "(is 'outputs' right?)"]

    # A statement that fails after one that committed: the commit is recorded, the phase fails.
    broken = trigger(world, spec(phase("again", "trino", catalog=CATALOG, outputs=[f"{ns}.dst"],
                                       sql=f"INSERT INTO {cat}.dst VALUES (99, 'late');\n"
                                           f"SELECT * FROM {cat}.no_such_table")),
                     django_capture_on_commit_callbacks)
    assert broken.status == RunStatus.FAILED and errors(broken)[0].startswith("Statement 2 (SELECT) failed")
    late = TableVersion.objects.get(table__namespace=ns, table__name="dst", run=broken)
    dst = lake.iceberg().load_table((ns, "dst"))
    assert (late.version, late.row_count, late.operation) == (dst.current_snapshot().snapshot_id, 5, "append")
    assert late.fingerprint == table_fingerprint(dst.scan().to_arrow())
    assert list(TableEdge.objects.filter(run=broken).values_list("direction", "table_version_id")) == [
        ("write", late.pk)]


def test_delta_tables_live_under_the_catalogs_delta_root(world, shared, django_capture_on_commit_callbacks):
    ns = fresh_namespace()
    first = "SELECT * FROM (VALUES (1, 'a', 1.5::DOUBLE), (2, 'b', 2.5::DOUBLE)) t(id, tag, score)"
    change = "SELECT * FROM (VALUES (2, 'B', 20.0::DOUBLE), (3, 'c', 3.5::DOUBLE)) t(id, tag, score)"
    run = trigger(world, spec(phase("create", "delta", table=f"{ns}.events", catalog=CATALOG, sql=first),
                              phase("merge", "delta", table=f"{ns}.events", catalog=CATALOG, sql=change,
                                    mode="merge", keys=["id"])),
                  django_capture_on_commit_callbacks)
    succeeded(run)
    lake = shared.lake(world.workspace)
    uri = lake.delta_uri(ns, "events")
    assert uri == f"{shared.config['delta_root'].rstrip('/')}/{ns}/events"
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    keys = shared.s3.keys(bucket, prefix + "/")
    assert f"{prefix}/_delta_log/00000000000000000000.json" in keys
    assert f"{prefix}/_delta_log/00000000000000000001.json" in keys

    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=lake.delta_storage_options())
    assert table.version() == 1
    dataset = table.to_pyarrow_dataset()  # noqa: F841  (DuckDB scans it by name)
    rows = duckdb.connect().sql("SELECT id, tag, score FROM dataset ORDER BY id").fetchall()
    assert rows == [(1, "a", 1.5), (2, "B", 20.0), (3, "c", 3.5)]
    versions = TableVersion.objects.filter(table__namespace=ns, table__name="events").order_by("version")
    assert [(v.version, v.operation, v.row_count, v.run_id) for v in versions] == [
        (0, "append", 2, run.pk), (1, "merge", 3, run.pk)]
    assert versions[0].table.location == uri
    assert table_fingerprint(table.to_pyarrow_table()) == versions[1].fingerprint


def test_another_workspace_cannot_attach_the_same_catalog(world, shared, monkeypatch,
                                                          django_capture_on_commit_callbacks):
    ns = fresh_namespace()
    succeeded(trigger(world, spec(phase("w", "iceberg", table=f"{ns}.secret", catalog=CATALOG,
                                        sql="SELECT 42 AS answer")), django_capture_on_commit_callbacks))
    # The other workspace points its own connection at the same catalog, with locations of its own.
    theirs = copy.deepcopy(shared.config)
    theirs["delta_root"] = theirs["delta_root"].rstrip("/") + "-other"
    if theirs["type"] == "jdbc":
        theirs["warehouse"] = theirs["warehouse"].rstrip("/") + "-other"
    with pytest.raises(ValidationError, match="another workspace"):
        catalog_connection(world.other, theirs, shared.s3.secret, monkeypatch)
    # Saved around the admin's checks, it still does not reach the first workspace's tables.
    Connection.objects.create(workspace=world.other, name=CATALOG, kind=Connection.Kind.CATALOG, config=theirs,
                              environment=world.other.environments.get(name="dev"),
                              password_ref=SecretRef.objects.get(workspace=world.other, name="catalog-pw")
                              if theirs["type"] == "jdbc" else None)
    other = SimpleNamespace(access=lambda persona: Access(workspace=world.other, role="admin",
                                                          user=world.users["outsider"]))
    stolen = trigger(other, spec(phase("r", "iceberg", table=f"{ns}.copy", catalog=CATALOG, inputs=[f"{ns}.secret"],
                                       sql="SELECT * FROM secret")), django_capture_on_commit_callbacks)
    assert stolen.status == RunStatus.FAILED
    assert "another workspace" in errors(stolen)[0]
    assert not TableVersion.objects.filter(table__workspace=world.other).exists()
    # The workspace that attached the catalog first keeps using it.
    assert shared.lake(world.workspace).iceberg().load_table((ns, "secret")).scan().to_arrow().to_pylist() == [
        {"answer": 42}]
