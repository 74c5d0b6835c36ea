"""The SQL editor against a real Trino (tests/trino_server.py): the end user's identity, exact
numbers, cancel that reaches the engine, the read-only bypass corpus stopped by the engine alone,
and stored results that page without asking Trino again."""

from __future__ import annotations

import threading
import time
from urllib.parse import unquote, urlsplit

import pytest
from django.db import connections

from connections.models import Connection, SecretRef
from sqlwarehouse.execution import query_cancel, query_execute, query_submit
from sqlwarehouse.models import QueryExecution
from tests.sql_bypass_corpus import ENGINE_BYPASSES

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
# Session-level statements Trino accepts from anybody; each lives and dies with its own query,
# so accepting them changes nothing (the parser still refuses them for read-only users).
SESSION_ONLY = ("SET SESSION", "RESET SESSION", "SET TIME ZONE", "SET PATH", "START TRANSACTION",
                "DEALLOCATE PREPARE", "PREPARE ", "SET ROLE")


@pytest.fixture
def trino(world, trino_server, monkeypatch) -> Connection:
    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_TRINO_PASSWORD", unquote(parts.password or ""))
    secret = SecretRef.objects.create(workspace=world.workspace, name="trino-password", source="env",
                                      locator="CONTROLROOM_SECRET_TEST_TRINO_PASSWORD")
    # Scoped to dev: an operator writes there (through a connection for every environment, the
    # lake prod reads, only admins would).
    return Connection.objects.create(
        workspace=world.workspace, name="trino", kind="trino", password_ref=secret,
        environment=world.workspace.environments.get(name="dev"),
        config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme,
                "user": trino_server.service_user, "verify": trino_server.ca_file or True,
                "catalog": "memory", "schema": "default"})


def run(world, persona: str, connection: Connection, sql: str, **kw) -> QueryExecution:
    execution = query_submit(access=world.access(persona), connection=connection, sql=sql, **kw)
    if execution.status == QueryExecution.Status.QUEUED:
        query_execute(execution_id=execution.pk)  # the worker's part, here
    execution.refresh_from_db()
    return execution


def queries_of(trino_server, user: str) -> list[tuple[str, str, str]]:
    """(query_id, state, error_code) of ``user``'s queries, from Trino's own system table."""
    with trino_server.connect(user=trino_server.service_user) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT query_id, state, coalesce(error_code, '') FROM system.runtime.queries "
                       "WHERE \"user\" = ? ORDER BY created", [user])
        return [tuple(row) for row in cursor.fetchall()]


def test_queries_run_as_the_end_user_and_keep_their_digits(world, trino, trino_server):
    execution = run(world, "analyst", trino, "SELECT n.name, CAST(c.acctbal AS decimal(12, 2)) AS acctbal, "
                                             "c.custkey + 9007199254740992 AS big, "
                                             "DECIMAL '12345678901234567890.12' AS wide "
                                             "FROM tpch.tiny.customer c JOIN tpch.tiny.nation n "
                                             "ON c.nationkey = n.nationkey ORDER BY c.custkey")
    assert execution.status == "succeeded", execution.error
    assert execution.row_count == 1500 and execution.engine_query_id
    assert [c["type"] for c in execution.columns] == ["varchar(25)", "decimal(12, 2)", "bigint", "decimal(22, 2)"]
    # Exact decimals and integers past 2**53, on the page and in the stored Parquet file.
    assert execution.rows[0] == ["MOROCCO", "711.56", "9007199254740993", "12345678901234567890.12"]
    assert execution.rows[1][2] == "9007199254740994"
    mine = {q[0]: q for q in queries_of(trino_server, "analyst~ro")}
    assert execution.engine_query_id in mine and mine[execution.engine_query_id][1] == "FINISHED"


def test_the_engine_alone_stops_the_bypass_corpus(world, trino, trino_server, settings):
    setup = run(world, "operator", trino, "CREATE TABLE t (a integer); CREATE TABLE s (a integer); "
                                          "INSERT INTO t VALUES 1, 2, 3; INSERT INTO s VALUES 1")
    assert setup.status == "succeeded", setup.error
    settings.SQL_PARSER_CHECK = False
    accepted = []
    for dialect, sql, why in ENGINE_BYPASSES:
        if dialect != "trino":
            continue
        execution = run(world, "analyst", trino, sql)
        if execution.status != "failed" and not sql.upper().startswith(SESSION_ONLY):
            accepted.append(f"{sql!r} ({why})")
    assert not accepted, "the read-only identity ran: " + "; ".join(accepted)
    check = run(world, "operator", trino, "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM s), "
                                          "(SELECT count(*) FROM information_schema.tables "
                                          "WHERE table_schema = 'default')")
    assert check.rows == [[3, 1, 2]], "a bypass changed data or created a table"
    settings.SQL_PARSER_CHECK = True
    refused = run(world, "analyst", trino, "INSERT INTO t VALUES 4")
    assert refused.status == "failed" and "read-only" in refused.error and not refused.engine_query_id


def test_cancel_stops_the_trino_query(world, trino, trino_server):
    execution = query_submit(access=world.access("analyst"), connection=trino,
                             sql="SELECT count(*) FROM tpch.sf1000.lineitem a CROSS JOIN tpch.sf1000.lineitem b")
    worker = threading.Thread(target=lambda: (query_execute(execution_id=execution.pk), connections.close_all()))
    worker.start()
    deadline = time.monotonic() + 60
    while not QueryExecution.objects.get(pk=execution.pk).engine_query_id:
        assert time.monotonic() < deadline, "the query never reached Trino"
        time.sleep(0.05)
    query_id = QueryExecution.objects.get(pk=execution.pk).engine_query_id
    asked = time.monotonic()
    query_cancel(access=world.access("analyst"), execution=execution)
    state = None
    while time.monotonic() - asked < 10:
        state = {q[0]: q for q in queries_of(trino_server, "analyst~ro")}.get(query_id)
        if state and state[1] == "FAILED":
            break
        time.sleep(0.1)
    stopped_after = time.monotonic() - asked
    worker.join(30)
    print(f"Trino query {query_id} stopped {stopped_after:.2f} s after the cancel request")
    assert state is not None and state[1:] == ("FAILED", "USER_CANCELED"), state
    assert stopped_after < 2.0, f"the engine stopped the query only after {stopped_after:.1f} s"
    execution.refresh_from_db()
    assert execution.status == "cancelled" and execution.error == "The query was cancelled."


def test_stored_result_pages_without_asking_trino_again(world, trino, trino_server):
    execution = run(world, "analyst", trino, "SELECT orderkey, totalprice FROM tpch.tiny.orders")
    assert execution.status == "succeeded" and execution.row_count == 15000
    before = len(queries_of(trino_server, "analyst~ro"))
    client = world.client("analyst")
    for url in ("?page=7", "?page=150&sort=totalprice&dir=desc", "rows.json", "export.csv"):
        response = client.get(f"/w/acme/sql/executions/{execution.pk}/{url}")
        assert response.status_code == 200
        if hasattr(response, "streaming_content"):
            body = b"".join(response.streaming_content)
            assert body.count(b"\n") == 15001
    assert len(queries_of(trino_server, "analyst~ro")) == before


def test_the_first_rows_come_without_another_round_trip_and_none_twice(world, trino, trino_server):
    """The engine hands over the rows the client already holds (no request between execute and
    the first batch); the stream goes on from the next page, so every row comes exactly once,
    in order, and Trino sees the query end normally (FINISHED, not cancelled)."""
    import pyarrow.parquet as pq

    from artifacts.storage import get_store
    from sqlwarehouse.engines import open_engine

    engine = open_engine(trino, user="analyst", read_only=True)
    session = engine._settings.get("http_session")
    assert session is not None  # the test server's CA: the engine's own session, whose requests we count
    requests_made: list[str] = []
    session.hooks["response"].append(lambda response, *a, **kw: requests_made.append(response.request.method))
    stream = engine.run("SELECT x FROM UNNEST(sequence(1, 25)) AS t(x)", [], 60)
    after_execute = len(requests_made)
    first = next(stream.batches)
    assert first.num_rows == 25 and len(requests_made) == after_execute  # no request for the first rows
    assert [b.num_rows for b in stream.batches] == []  # the rest: nothing, after the final request
    engine.close()

    pages: list[list] = []
    execution = query_submit(access=world.access("analyst"), connection=trino,
                             sql="SELECT x + 10000 * y AS x FROM UNNEST(sequence(1, 10000)) AS t(x) "
                                 "CROSS JOIN UNNEST(sequence(0, 11)) AS u(y) ORDER BY 1")
    query_execute(execution_id=execution.pk, on_first_page=lambda columns, rows: pages.append(rows))
    execution.refresh_from_db()
    assert execution.status == "succeeded" and execution.row_count == 120000, execution.error
    assert len(pages) == 1 and pages[0] == [[n] for n in range(1, len(pages[0]) + 1)]
    with get_store().open(execution.result.sha256) as fh:
        column = pq.read_table(fh).column("x").to_pylist()
    assert column == list(range(1, 120001))
    states = {q[0]: q[1:] for q in queries_of(trino_server, "analyst~ro")}
    assert states[execution.engine_query_id] == ("FINISHED", "")


def test_a_statement_timeout_stops_the_query_with_a_clear_message(world, trino):
    world.workspace.sql_timeout_s = 1
    world.workspace.save()
    execution = run(world, "analyst", trino, "SELECT count(*) FROM tpch.sf1000.lineitem")
    assert execution.status == "failed" and "statement timeout" in execution.error


def _database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def _probe(*args: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": _database_url()}
    done = subprocess.run([sys.executable, "-m", "tests.rss_probe", *args], env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_result_cut_at_the_row_cap_ends_its_query_in_trino(world, trino, trino_server):
    """Past the workspace's row cap the stored result is cut, and the query itself is ended in
    Trino at once (not left blocked on its output buffer until Trino's 5-minute client timeout)."""
    world.workspace.sql_row_cap = 1000
    world.workspace.save()
    execution = query_submit(access=world.access("analyst"), connection=trino,
                             sql="SELECT orderkey, comment FROM tpch.sf1.orders")
    query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    assert execution.status == "succeeded" and execution.truncated and execution.row_count == 1000
    states = {query_id: (state, code) for query_id, state, code in queries_of(trino_server, "analyst~ro")}
    assert states[execution.engine_query_id] == ("FAILED", "USER_CANCELED"), states[execution.engine_query_id]


def test_the_limit_selector_on_trino_reads_only_its_rows_and_keeps_an_ordered_querys_top(world, trino,
                                                                                         trino_server):
    """An unordered query runs as written (no LIMIT stage) and only the limit's rows are read: the
    result is those rows, not marked cut, and the editor reopens it with that limit chosen. An
    ordered query keeps its LIMIT, so its rows are the top ones."""
    from sqlwarehouse.workbench import limited

    sql = "SELECT custkey FROM tpch.tiny.customer"
    ran, row_limit = limited(sql, "trino", 100)
    execution = query_submit(access=world.access("analyst"), connection=trino, sql=ran, row_limit=row_limit)
    query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    assert execution.status == "succeeded", execution.error
    assert execution.sql == sql and execution.row_count == 100 and not execution.truncated
    states = {query_id: (state, code) for query_id, state, code in queries_of(trino_server, "analyst~ro")}
    assert states[execution.engine_query_id] in {("FINISHED", ""), ("FAILED", "USER_CANCELED")}
    page = world.client("analyst").get(f"/w/acme/sql/?execution={execution.pk}").content.decode()
    assert '<option value="100" selected>' in page and "AS limited" not in page

    ordered = "SELECT custkey FROM tpch.tiny.customer ORDER BY custkey DESC"
    ran, row_limit = limited(ordered, "trino", 100)
    execution = query_submit(access=world.access("analyst"), connection=trino, sql=ran, row_limit=row_limit)
    query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    assert "LIMIT 100" in execution.sql and execution.row_count == 100 and not execution.truncated
    assert [row[0] for row in execution.rows[:3]] == [1500, 1499, 1498]


def test_five_million_rows_store_and_export_to_csv_in_flat_memory(world, trino):
    """The worker streams 5,000,000 tpch rows into Parquet, and the server streams them out as CSV,
    each process allocating under 300 MB at its peak (what Redash's 1M-row OOM looked like)."""
    world.workspace.sql_row_cap = 5_000_000
    world.workspace.save()
    execution = query_submit(access=world.access("analyst"), connection=trino,
                             sql="SELECT orderkey, partkey, quantity, extendedprice, shipdate "
                                 "FROM tpch.sf1.lineitem LIMIT 5000000")
    stored = _probe("execute", str(execution.pk))
    execution.refresh_from_db()
    assert execution.status == "succeeded", execution.error
    assert execution.row_count == 5_000_000 and not execution.truncated
    exported = _probe("export", str(execution.pk), "csv")
    print(f"worker: stored 5M rows in {stored['seconds']} s, peak RSS {stored['peak_rss_mb']} MB "
          f"(anonymous {stored['peak_anon_mb']} MB); "
          f"server: CSV of {exported['bytes'] / 1e6:.0f} MB in {exported['seconds']} s, "
          f"peak RSS {exported['peak_rss_mb']} MB (anonymous {exported['peak_anon_mb']} MB)")
    assert exported["lines"] == 5_000_001  # the header and every row
    # What each process allocated (its anonymous memory), not the shared libraries' file pages.
    assert exported["peak_anon_mb"] < 300 and stored["peak_anon_mb"] < 300


def test_an_sso_analyst_runs_as_their_stable_name_and_is_read_only_in_trino(world, trino, trino_server, settings):
    """A person made by single sign-on (an awkward preferred name, a group mapped to analyst)
    reaches Trino as their derived username with the read-only suffix, and the shipped rules
    refuse their writes even with the parser check off; as an operator (a group change) they write."""
    from django.contrib.auth import get_user_model

    from controlroom.access import Access
    from controlroom.models import IdpGroupMapping, Membership
    from controlroom.sso import engine_username, memberships_sync

    name = engine_username("Ana María.Lyst@corp", "0b6c2f0e-subject")
    user = get_user_model().objects.create_user(username=name)
    IdpGroupMapping.objects.create(workspace=world.workspace, group="analysts", role="analyst")
    IdpGroupMapping.objects.create(workspace=world.workspace, group="ops", role="operator")

    def as_sso(sql: str) -> QueryExecution:
        membership = Membership.objects.get(user=user, workspace=world.workspace)
        execution = query_submit(access=Access(workspace=world.workspace, role=membership.role, user=user),
                                 connection=trino, sql=sql)
        query_execute(execution_id=execution.pk)
        execution.refresh_from_db()
        return execution

    memberships_sync(user, ["analysts"])
    me = as_sso("SELECT current_user")
    assert me.status == "succeeded", me.error
    assert me.rows == [[f"{name}~ro"]] and name == "Ana-Mar-a.Lyst@corp"
    settings.SQL_PARSER_CHECK = False  # the engine alone
    refused = as_sso("CREATE TABLE memory.default.sso_t (a integer)")
    assert refused.status == "failed" and "Access Denied" in refused.error
    memberships_sync(user, ["ops"])  # moved to ops at the IdP: an operator, who writes in dev
    made = as_sso("CREATE TABLE memory.default.sso_t (a integer)")
    assert made.status == "succeeded", made.error
    assert as_sso("SELECT current_user").rows == [[name]]
