"""Schema browser (sqlwarehouse/schema.py and schema_views.py): the snapshot read from DuckDB and
from a real Trino, the page, the per-schema fragment (filter, cap), completion JSON, refresh, access."""

from __future__ import annotations

import uuid
from urllib.parse import unquote, urlsplit

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from connections.models import Connection, SecretRef
from sqlwarehouse import schema_views
from sqlwarehouse.engines import EngineError, duckdb_engine_for, open_engine
from sqlwarehouse.models import SchemaSnapshot
from sqlwarehouse.schema import completion_json, parsed_cache, schema_fetch, schema_get, schema_tables

WAREHOUSE_DDL = """
CREATE SCHEMA sales;
CREATE TABLE main.customers (id INTEGER, name VARCHAR, joined DATE);
CREATE TABLE sales.orders (id BIGINT, customer_id INTEGER, amount DECIMAL(12, 2));
CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE amount > 1000;
"""


def warehouse(world) -> Connection:
    return Connection.objects.get(workspace=world.workspace, name="warehouse")


def write(conn: Connection, sql: str) -> None:
    duckdb_engine_for(conn, read_only=False, environment=conn.workspace.environments.get(name="dev")).execute(sql)


def url(world, name: str, conn: Connection | None = None) -> str:
    args = [world.workspace.slug] + ([conn.pk] if conn is not None else [])
    return f"/w/{args[0]}/sql/" + {
        "schema": "schema/", "tables": "schema/{}/tables/", "completion": "schema/{}/completion.json",
        "refresh": "schema/{}/refresh/",
    }[name].format(*args[1:])


@pytest.fixture(autouse=True)
def fresh_parsed_cache():
    parsed_cache.clear()
    yield
    parsed_cache.clear()


@pytest.fixture
def duck(world):
    conn = warehouse(world)
    write(conn, WAREHOUSE_DDL)
    return conn


# --- DuckDB -------------------------------------------------------------------------------------


def test_fetch_reads_tables_views_and_column_types_in_order(world, duck):
    snapshot = schema_fetch(connection=duck, user=world.users["analyst"])
    assert set(snapshot.namespace) == {"warehouse"}
    schemas = snapshot.namespace["warehouse"]
    assert set(schemas) == {"main", "sales"}
    assert schemas["main"]["customers"] == [["id", "INTEGER"], ["name", "VARCHAR"], ["joined", "DATE"]]
    assert schemas["sales"]["orders"] == [["id", "BIGINT"], ["customer_id", "INTEGER"],
                                          ["amount", "DECIMAL(12,2)"]]
    assert "big_orders" in schemas["sales"]
    assert snapshot.tables == 3 and snapshot.error == ""
    assert SchemaSnapshot.objects.filter(connection=duck).count() == 1


def test_completion_json_has_column_names_and_duckdb_defaults(world, duck):
    data = completion_json(schema_fetch(connection=duck, user=world.users["analyst"]))
    assert data["default_catalog"] == "warehouse" and data["default_schema"] == "main"
    assert data["namespace"]["warehouse"]["sales"]["orders"] == ["id", "customer_id", "amount"]


def test_refresh_replaces_the_snapshot_and_get_serves_the_stored_one(world, duck):
    first = schema_fetch(connection=duck, user=world.users["analyst"])
    write(duck, "CREATE TABLE sales.refunds (id INTEGER)")
    assert "refunds" not in schema_get(connection=duck, user=world.users["analyst"]).namespace["warehouse"]["sales"]
    client = world.client("analyst")
    response = client.post(url(world, "refresh", duck))
    assert response.status_code == 302
    again = SchemaSnapshot.objects.get(connection=duck)
    assert again.pk == first.pk and again.fetched_at > first.fetched_at
    assert again.namespace["warehouse"]["sales"]["refunds"] == [["id", "INTEGER"]]
    assert again.tables == 4


def test_get_refetches_when_older_than_max_age(world, duck):
    first = schema_fetch(connection=duck, user=world.users["analyst"])
    SchemaSnapshot.objects.filter(pk=first.pk).update(fetched_at=first.fetched_at.replace(year=2000))
    write(duck, "CREATE TABLE extra (x INTEGER)")
    assert "extra" not in schema_get(connection=duck, user=world.users["analyst"]).namespace["warehouse"]["main"]
    fresh = schema_get(connection=duck, user=world.users["analyst"], max_age_s=60)
    assert "extra" in fresh.namespace["warehouse"]["main"]


def test_stored_reads_parse_once_per_version_and_see_another_process_refresh(world, duck):
    from django.utils import timezone

    analyst = world.users["analyst"]
    first = schema_get(connection=duck, user=analyst)  # fetched: nothing stored yet
    with CaptureQueriesContext(db_connection) as queries:
        again = schema_get(connection=duck, user=analyst)
    assert len(queries) == 1 and "namespace" not in queries[0]["sql"].split("FROM")[0]
    assert again.namespace is first.namespace
    assert completion_json(again)["namespace"] is completion_json(again)["namespace"]
    # Another process refreshed: a new fetched_at, a new namespace.
    SchemaSnapshot.objects.filter(connection=duck).update(
        namespace={"warehouse": {"main": {"only": [["x", "INTEGER"]]}}}, tables=1, fetched_at=timezone.now())
    seen = schema_get(connection=duck, user=analyst)
    assert seen.namespace == {"warehouse": {"main": {"only": [["x", "INTEGER"]]}}} and seen.tables == 1
    assert completion_json(seen)["namespace"] == {"warehouse": {"main": {"only": ["x"]}}}


def test_page_lists_catalogs_and_schemas_but_not_tables(world, duck):
    response = world.client("analyst").get(url(world, "schema"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "warehouse" in html and "sales" in html and "2 tables" in html
    assert 'hx-trigger="toggle once"' in html and "?catalog=warehouse&amp;schema=sales" in html
    assert "customers" not in html  # tables load per schema
    assert "Refresh" in html and "took" in html


def test_page_says_how_old_the_snapshot_is(world, duck):
    from datetime import timedelta

    client = world.client("analyst")
    assert "Read <span" in (html := client.get(url(world, "schema")).content.decode()) and "just now" in html
    SchemaSnapshot.objects.filter(connection=duck).update(fetched_at=SchemaSnapshot.objects.get().fetched_at
                                                          - timedelta(minutes=3))
    html = client.get(url(world, "schema")).content.decode()
    assert "3\xa0minutes ago" in html and "3 tables" in html


def test_page_renders_from_the_snapshot_without_the_engine(world, duck, monkeypatch):
    schema_fetch(connection=duck, user=world.users["analyst"])

    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was opened")

    monkeypatch.setattr("sqlwarehouse.schema.open_engine", no_engine)
    client = world.client("analyst")
    with CaptureQueriesContext(db_connection) as queries:
        assert client.get(url(world, "schema")).status_code == 200
    assert len(queries) <= 8
    assert client.get(url(world, "completion", duck)).status_code == 200
    assert client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "sales"}).status_code == 200


def test_fragment_shows_tables_with_column_types_and_filters(world, duck):
    client = world.client("analyst")
    response = client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "sales"},
                          headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "orders" in html and "big_orders" in html and "DECIMAL(12,2)" in html and 'name="q"' in html
    response = client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "sales", "q": "BIG",
                                                       "part": "list"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert "big_orders" in html and 'data-table="orders"' not in html and 'name="q"' not in html
    full = client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "sales"})
    assert full.status_code == 200 and "<html" in full.content.decode()


def test_fragment_caps_at_500_tables_and_asks_to_refine(world, duck):
    write(duck, "CREATE SCHEMA wide;" + "".join(f"CREATE TABLE wide.t{i:04d} (a INTEGER);" for i in range(620)))
    client = world.client("analyst")
    html = client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "wide"},
                      headers={"HX-Request": "true"}).content.decode()
    assert html.count("<tr><td>") == schema_views.TABLE_LIMIT == 500
    assert "first 500 of 620 tables" in html and "refine the filter" in html
    assert "t0499" in html and "t0500" not in html
    html = client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "wide", "q": "t06",
                                                   "part": "list"}, headers={"HX-Request": "true"}).content.decode()
    assert html.count("<tr><td>") == 20 and "refine" not in html
    snapshot = SchemaSnapshot.objects.get(connection=duck)
    found, matched = schema_tables(snapshot, catalog="warehouse", schema="wide", q="", limit=10)
    assert len(found) == 10 and matched == 620


def test_unknown_schema_says_so(world, duck):
    client = world.client("analyst")
    response = client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "nope"})
    assert response.status_code == 404
    response = client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "nope"},
                          headers={"HX-Request": "true"})
    assert response.status_code == 200 and "not in the stored schema" in response.content.decode()


def test_completion_view_and_not_modified(world, duck):
    client = world.client("analyst")
    response = client.get(url(world, "completion", duck))
    assert response.status_code == 200
    data = response.json()
    assert data["namespace"]["warehouse"]["main"]["customers"] == ["id", "name", "joined"]
    assert client.get(url(world, "completion", duck), headers={"If-None-Match": response["ETag"]}).status_code == 304


def test_htmx_refresh_returns_the_browser_fragment(world, duck):
    response = world.client("analyst").post(url(world, "refresh", duck), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<div id="schema-browser"')
    assert "sales" in html


def test_engine_failure_is_one_sentence_and_keeps_the_snapshot(world, duck, monkeypatch, caplog):
    schema_fetch(connection=duck, user=world.users["analyst"])

    def broken(*args, **kwargs):
        raise EngineError("IO Error: something deep inside /secret/path")

    monkeypatch.setattr("sqlwarehouse.schema.open_engine", broken)
    client = world.client("analyst")
    html = client.post(url(world, "refresh", duck), headers={"HX-Request": "true"}).content.decode()
    assert "could not be read" in html and "/secret/path" not in html
    assert "sales" in html  # the stored snapshot still shows
    assert "/secret/path" in caplog.text
    SchemaSnapshot.objects.all().delete()
    html = client.get(url(world, "schema")).content.decode()
    assert "could not be read" in html and "/secret/path" not in html
    assert client.get(url(world, "completion", duck)).status_code == 502


def test_connection_select_and_unknown_connection(world, duck):
    other = Connection.objects.create(workspace=world.workspace, name="scratch", kind=Connection.Kind.DUCKDB,
                                      config={"database": "scratch.duckdb"})
    client = world.client("analyst")
    html = client.get(url(world, "schema"), {"connection": other.pk}).content.decode()
    assert "scratch" in html and "0 tables" in html and "sales" not in html
    foreign = Connection.objects.get(workspace=world.other, name="warehouse")
    assert client.get(url(world, "schema"), {"connection": foreign.pk}).status_code == 404
    # The select swaps only the browser part (htmx), the whole page otherwise.
    html = client.get(url(world, "schema"), {"connection": duck.pk}, headers={"HX-Request": "true"}).content.decode()
    assert html.lstrip().startswith('<div id="schema-browser"') and "sales" in html and "<select" not in html


def test_page_caps_schemas_per_catalog(world, duck, monkeypatch):
    monkeypatch.setattr(schema_views, "SCHEMA_LIMIT", 1)
    html = world.client("analyst").get(url(world, "schema")).content.decode()
    assert "2 schemas" in html and "and 1 more schema, not listed here" in html
    assert "schema=main" in html and "schema=sales" not in html


@pytest.mark.parametrize(("persona", "status"), [("outsider", 404), ("viewer", 403), ("analyst", 200),
                                                 ("operator", 200), ("admin", 200)])
def test_access(world, duck, persona, status):
    client = world.client(persona)
    assert client.get(url(world, "schema")).status_code == status
    assert client.get(url(world, "completion", duck)).status_code == status
    assert client.get(url(world, "tables", duck), {"catalog": "warehouse", "schema": "main"}).status_code == status
    assert client.post(url(world, "refresh", duck)).status_code == (302 if status == 200 else status)


def test_foreign_connection_is_404_and_anonymous_is_sent_to_sign_in(world, duck):
    foreign = Connection.objects.get(workspace=world.other, name="warehouse")
    client = world.client("analyst")
    assert client.get(url(world, "completion", foreign)).status_code == 404
    assert client.post(url(world, "refresh", foreign)).status_code == 404
    from django.test import Client

    assert Client().get(url(world, "schema")).status_code == 302
    assert client.get(url(world, "refresh", duck)).status_code == 405


# --- a Trino catalog that fails (fake engine) ----------------------------------------------------


class FakeTrino:
    """Answers SHOW CATALOGS and information_schema.columns from a dict; one catalog is broken."""

    def __init__(self, catalogs: dict) -> None:
        self.catalogs, self.sql = catalogs, []

    def run(self, sql, parameters, timeout_s):
        import pyarrow as pa

        from sqlwarehouse.engines import StatementStream

        self.sql.append(sql)
        if sql == "SHOW CATALOGS":
            batch = pa.record_batch({"Catalog": list(self.catalogs)})
            return StatementStream(["Catalog"], ["varchar(6)"], iter([batch]))
        catalog = sql.split('FROM "')[1].split('".information_schema')[0].replace('""', '"')
        if self.catalogs[catalog] is None:
            raise EngineError(f"Catalog '{catalog}'\nis unavailable")
        rows = self.catalogs[catalog]

        def batches():
            yield pa.record_batch({k: [r[i] for r in rows[:1]] for i, k in enumerate("stcd")})
            yield pa.record_batch({k: [r[i] for r in rows[1:]] for i, k in enumerate("stcd")})

        return StatementStream(list("stcd"), ["varchar"] * 4, batches())

    def close(self):
        pass


def test_a_failing_catalog_is_recorded_and_the_others_kept(world, monkeypatch):
    engine = FakeTrino({
        "system": [("runtime", "nodes", "node_id", "varchar")],
        'we"ird': [("s", "t", "a", "integer"), ("s", "t", "b", "varchar"), ("s", "u", "c", "date")],
        "broken": None,
    })
    seen = {}

    def fake_open(connection, *, user, read_only, environment=None):
        seen.update(user=user, read_only=read_only)
        return engine

    monkeypatch.setattr("sqlwarehouse.schema.open_engine", fake_open)
    conn = Connection.objects.create(workspace=world.workspace, name="lake", kind=Connection.Kind.TRINO,
                                     config={"host": "trino.invalid"})
    snapshot = schema_fetch(connection=conn, user=world.users["operator"])
    assert seen == {"user": "operator", "read_only": True}
    assert snapshot.namespace == {'we"ird': {"s": {"t": [["a", "integer"], ["b", "varchar"]], "u": [["c", "date"]]}}}
    assert snapshot.tables == 2
    assert snapshot.error == "broken: Catalog 'broken' is unavailable"
    assert not any('"system"' in sql for sql in engine.sql)
    assert any('FROM "we""ird".information_schema.columns' in sql for sql in engine.sql)
    data = completion_json(snapshot)
    assert data == {"namespace": {'we"ird': {"s": {"t": ["a", "b"], "u": ["c"]}}}, "default_catalog": 'we"ird',
                    "default_schema": "s"}
    html = world.client("analyst").get(url(world, "schema"), {"connection": conn.pk}).content.decode()
    assert "1 catalog could not be read: broken" in html and "is unavailable" in html


# --- a real Trino (tests/trino_fixtures.py) ------------------------------------------------------

NATION = [["nationkey", "bigint"], ["name", "varchar(25)"], ["regionkey", "bigint"], ["comment", "varchar(152)"]]


@pytest.fixture
def trino(world, trino_server, monkeypatch):
    """A Trino connection of 'acme' (service user and password from the suite's server)."""
    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_SCHEMA_TRINO_PASSWORD", unquote(parts.password or ""))
    ref = SecretRef.objects.create(workspace=world.workspace, name="trino-password", source=SecretRef.Source.ENV,
                                   locator="CONTROLROOM_SECRET_TEST_SCHEMA_TRINO_PASSWORD")
    return Connection.objects.create(
        workspace=world.workspace, name="trino", kind=Connection.Kind.TRINO, password_ref=ref,
        config={"host": parts.hostname, "port": parts.port, "user": unquote(parts.username or ""),
                "http_scheme": parts.scheme, "verify": trino_server.ca_file or True, "catalog": "tpch",
                "schema": "tiny"},
    )


def trino_queries(trino_server, user: str) -> list[str]:
    """Queries Trino remembers for ``user`` (the service user may see everyone's)."""
    cursor = trino_server.connect(trino_server.service_user).cursor()
    cursor.execute("SELECT query FROM system.runtime.queries WHERE \"user\" = ? ORDER BY created", [user])
    return [row[0] for row in cursor.fetchall()]


def trino_write(conn: Connection, username: str, sql: str) -> None:
    engine = open_engine(conn, user=username, read_only=False)
    try:
        stream = engine.run(sql, [], 60)
        if stream is not None:
            list(stream.batches)
    finally:
        engine.close()


@pytest.mark.slow
def test_trino_catalogs_schemas_and_column_types(world, trino):
    snapshot = schema_fetch(connection=trino, user=world.users["analyst"])
    assert {"tpch", "memory"} <= set(snapshot.namespace) and "system" not in snapshot.namespace
    assert snapshot.error == ""
    tpch = snapshot.namespace["tpch"]
    assert {"tiny", "sf1"} <= set(tpch) and "information_schema" not in tpch
    assert tpch["tiny"]["nation"] == NATION
    assert set(tpch["tiny"]) == {"customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"}
    assert snapshot.tables == sum(len(t) for schemas in snapshot.namespace.values() for t in schemas.values())
    assert snapshot.fetch_ms > 0

    client = world.client("analyst")
    html = client.get(url(world, "schema"), {"connection": trino.pk}).content.decode()
    assert "tpch" in html and "memory" in html and "?catalog=tpch&amp;schema=tiny" in html
    html = client.get(url(world, "tables", trino), {"catalog": "tpch", "schema": "tiny"},
                      headers={"HX-Request": "true"}).content.decode()
    assert 'data-table="nation"' in html and "varchar(25)" in html and 'data-table="lineitem"' in html


@pytest.mark.slow
def test_trino_completion_json(world, trino):
    response = world.client("analyst").get(url(world, "completion", trino))
    assert response.status_code == 200
    data = response.json()
    assert data["default_catalog"] == "tpch" and data["default_schema"] == "tiny"
    assert data["namespace"]["tpch"]["tiny"]["nation"] == ["nationkey", "name", "regionkey", "comment"]
    assert all(isinstance(c, str) for c in data["namespace"]["tpch"]["sf1"]["orders"])


@pytest.mark.slow
def test_trino_refresh_replaces_the_snapshot(world, trino):
    schema = f"s_{uuid.uuid4().hex[:10]}"
    client = world.client("analyst")
    assert client.get(url(world, "schema"), {"connection": trino.pk}).status_code == 200  # first read
    trino_write(trino, "operator", f"CREATE SCHEMA memory.{schema}")
    trino_write(trino, "operator", f"CREATE TABLE memory.{schema}.fresh (id bigint, label varchar)")
    assert schema not in SchemaSnapshot.objects.get(connection=trino).namespace["memory"]
    response = client.post(url(world, "refresh", trino), headers={"HX-Request": "true"})
    assert response.status_code == 200 and schema in response.content.decode()
    snapshot = SchemaSnapshot.objects.get(connection=trino)
    assert snapshot.namespace["memory"][schema] == {"fresh": [["id", "bigint"], ["label", "varchar"]]}
    assert SchemaSnapshot.objects.filter(connection=trino).count() == 1


@pytest.mark.slow
def test_trino_reads_as_the_read_only_identity_and_cached_reads_skip_the_engine(world, trino, trino_server):
    client = world.client("operator")  # may write, but the schema is read as operator~ro
    before = len(trino_queries(trino_server, "operator~ro"))
    assert client.post(url(world, "refresh", trino)).status_code == 302
    fetched = trino_queries(trino_server, "operator~ro")[before:]
    assert fetched[0] == "SHOW CATALOGS" and any("information_schema.columns" in q for q in fetched)
    assert "memory" in "".join(fetched) and '"system"' not in "".join(fetched)
    assert not any("information_schema" in q for q in trino_queries(trino_server, "operator"))
    seen = len(trino_queries(trino_server, "operator~ro"))
    assert client.get(url(world, "schema"), {"connection": trino.pk}).status_code == 200
    assert client.get(url(world, "completion", trino)).status_code == 200
    assert client.get(url(world, "tables", trino), {"catalog": "tpch", "schema": "tiny", "q": "nat"},
                      headers={"HX-Request": "true"}).status_code == 200
    assert len(trino_queries(trino_server, "operator~ro")) == seen


@pytest.mark.slow
def test_trino_fragment_filter_and_cap(world, trino, monkeypatch):
    client = world.client("analyst")
    params = {"catalog": "tpch", "schema": "sf1", "part": "list"}
    html = client.get(url(world, "tables", trino), {**params, "q": "PART"}, headers={"HX-Request": "true"}).content
    assert html.count(b"<tr><td>") == 2 and b'data-table="part">part</code>' in html
    assert b'data-table="partsupp">partsupp</code>' in html
    assert b"2 tables whose name contains" in html
    monkeypatch.setattr(schema_views, "TABLE_LIMIT", 5)
    html = client.get(url(world, "tables", trino), params, headers={"HX-Request": "true"}).content
    assert html.count(b"<tr><td>") == 5 and b"first 5 of 8 tables" in html and b"refine the filter" in html


@pytest.mark.slow
@pytest.mark.parametrize(("persona", "status"), [("outsider", 404), ("viewer", 403)])
def test_trino_access(world, trino, trino_server, persona, status):
    client = world.client(persona)
    before = len(trino_queries(trino_server, f"{persona}~ro"))
    assert client.get(url(world, "schema"), {"connection": trino.pk}).status_code == status
    assert client.get(url(world, "completion", trino)).status_code == status
    assert client.get(url(world, "tables", trino), {"catalog": "tpch", "schema": "tiny"}).status_code == status
    assert client.post(url(world, "refresh", trino)).status_code == status
    assert len(trino_queries(trino_server, f"{persona}~ro")) == before


@pytest.mark.slow  # waits for a refused connection
def test_unreachable_trino_is_one_sentence(world, eager_celery, django_capture_on_commit_callbacks):
    from tests.servers import free_port

    conn = Connection.objects.create(workspace=world.workspace, name="down", kind=Connection.Kind.TRINO,
                                     config={"host": "127.0.0.1", "port": free_port(), "http_scheme": "http"})
    where = f"http://127.0.0.1:{conn.config['port']}"
    with pytest.raises(EngineError, match=f"Trino at {where} could not be reached: connection refused"):
        schema_fetch(connection=conn, user=world.users["analyst"])
    response = world.client("analyst").get(url(world, "schema"), {"connection": conn.pk})
    html = response.content.decode()
    assert response.status_code == 200 and "The schema of connection “down” could not be read" in html
    assert f"Trino at {where} could not be reached: connection refused" in html  # what was tried, what failed
    completion = world.client("analyst").get(url(world, "completion", conn))
    assert completion.status_code == 502 and "connection refused" in completion.json()["error"]
    assert where in completion.json()["error"]
    from sqlwarehouse.execution import query_submit

    with django_capture_on_commit_callbacks(execute=True):
        execution = query_submit(access=world.access("analyst"), connection=conn, sql="SELECT 1")
    execution.refresh_from_db()  # the editor's run says the same
    assert execution.status == "failed"
    assert execution.error == f"Trino at {where} could not be reached: connection refused (nothing listens on that " \
                              "port: is the server running, is the port right?)."
    assert not SchemaSnapshot.objects.filter(connection=conn).exists()
