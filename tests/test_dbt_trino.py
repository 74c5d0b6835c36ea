"""A `dbt` phase on the suite's real Trino: dbt-trino builds the test project (tests/dbt_project/) in
the Iceberg catalog as the run's identity, after a `trino` phase made its source table."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from artifacts.models import Artifact
from connections.models import Connection, SecretRef
from lakehouse.models import Table, TableEdge, TableVersion
from runs.models import RunStatus
from tests.test_dbt import FAILING, artifact_bytes, dbt_venv, project_files, run_to_end, synced_job  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def trino_connection(world, trino_server, monkeypatch) -> tuple[Connection, str]:
    parts = urlsplit(trino_server.url)
    password = unquote(parts.password or "")
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_TRINO_PASSWORD", password)
    secret = SecretRef.objects.create(workspace=world.workspace, name="trino-password", source="env",
                                      locator="CONTROLROOM_SECRET_TEST_TRINO_PASSWORD")
    conn = Connection.objects.create(
        workspace=world.workspace, name="trino", kind="trino", password_ref=secret,
        environment=world.workspace.environments.get(name="dev"),
        config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme, "catalog": "iceberg",
                "user": trino_server.service_user, "verify": trino_server.ca_file or True})
    return conn, password


@pytest.mark.usefixtures("dbt_venv")
def test_dbt_build_on_trino_as_the_runs_identity(world, repo, source, trino_server, monkeypatch, eager_celery,
                                                 django_capture_on_commit_callbacks):
    _, password = trino_connection(world, trino_server, monkeypatch)
    schema = f"dbt{uuid.uuid4().hex[:10]}"
    raw = (f"CREATE SCHEMA iceberg.{schema};\n"
           f"CREATE TABLE iceberg.{schema}.raw_customers AS SELECT * FROM (VALUES (1, 'Ann', 'de'), "
           "(2, 'Bob', 'fr'), (3, 'Cy', 'xx'), (4, 'Di', 'de')) t(id, name, country)")
    spec = yaml.safe_dump({"name": "shop-trino", "phases": [
        {"name": "raw", "kind": "trino", "config": {"sql": raw}},
        {"name": "transform", "kind": "dbt",
         "config": {"project": "analytics/shop", "connection": "trino", "target_schema": schema}}]})
    job, _ = synced_job(world, repo, source, {"jobs/shop.yaml": spec, **project_files()}, "shop-trino")
    began = time.monotonic()
    run = run_to_end(world, job, django_capture_on_commit_callbacks)
    print(f"\ndbt build (Trino) run: {time.monotonic() - began:.1f} s")
    phase = run.phases.get(name="transform")
    assert run.status == RunStatus.FAILED
    assert phase.error == f"dbt build failed: test {FAILING} failed (1 failing row)", phase.error

    checks = {c["name"]: (c["status"], c["failing"]) for c in phase.output["checks"]}
    assert checks == {"not_null_stg_customers_id": ("pass", 0), "unique_stg_customers_id": ("pass", 0),
                      FAILING: ("fail", 1)}
    artifacts = {a.name: a for a in Artifact.objects.filter(run=run, phase=phase)}
    assert set(artifacts) == {"manifest.json", "run_results.json", "failing_rows.parquet"}
    rows = pq.read_table(pa.BufferReader(artifact_bytes(artifacts["failing_rows.parquet"]))).to_pylist()
    assert rows == [{"failed_check": FAILING, "country_code": "XX", "country_name": None, "customers": 1}]
    results = json.loads(artifact_bytes(artifacts["run_results.json"]))["results"]
    assert sorted(r["status"] for r in results) == ["fail", "pass", "pass", "success", "success", "success"]

    # The relations are tables of the registry (Trino's catalog, the target schema), read and written.
    tables = {t.name: t for t in Table.objects.filter(workspace=world.workspace, format="trino")}
    assert set(tables) == {"raw_customers", "stg_customers", "countries", "customers_by_country"}
    assert {(t.catalog_name, t.namespace) for t in tables.values()} == {("iceberg", schema)}
    built = TableVersion.objects.get(table=tables["customers_by_country"])
    assert (built.run, built.row_count) == (run, 3) and built.fingerprint
    edges = {(e.table_version.table.name, e.direction) for e in TableEdge.objects.filter(run=run, phase=phase)}
    assert ("raw_customers", "read") in edges and ("customers_by_country", "write") in edges

    # dbt ran as the operator who started the run (the service user impersonating them).
    with trino_server.connect(user=trino_server.service_user) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT \"user\", query FROM system.runtime.queries")  # filtered here: its text names nothing
        creators = {user for user, query in cursor.fetchall()
                    if f'{schema}"."customers_by_country' in query and "create table" in query.lower()}
        assert creators == {"operator"}
    with trino_server.connect(user="checker") as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT count(*) FROM iceberg.{schema}.customers_by_country")
        assert cursor.fetchall() == [[3]]
    # The password reached dbt in the scratch profile only: never the log nor an artifact.
    messages = "\n".join(run.events.values_list("message", flat=True))
    assert password and password not in messages
    assert all(password.encode() not in artifact_bytes(a) for a in artifacts.values())
