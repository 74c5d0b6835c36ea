"""Publishing to Superset (lakehouse/superset.py) against a real Superset 6.1
(tests/superset_server.py) and the real test Trino: a table becomes a physical dataset of a
``trino://superset~ro@…`` database that logs in to Trino with Superset's own read-only login
(never the Trino service user's, whose password Superset never stores) and whose chart data
Superset reads from Trino as that identity; that login reads, writes nothing and impersonates no
one; publishing again updates the same objects (and replaces a login stored before); a saved
query becomes a virtual dataset and a chart; the pages link to Superset; only operators and
admins publish; an unreachable or refusing Superset, or a missing or unreadable password of
Superset's Trino login, is one sentence and leaves nothing half-written."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
import trino
from django.utils import timezone

from connections.models import Connection, SecretRef
from connections.probe import connection_test
from controlroom.models import AuditEvent
from lakehouse.models import Table, TableVersion
from lakehouse.superset_models import SupersetPublication
from sqlwarehouse.models import SavedQuery
from tests.servers import free_port
from tests.superset_server import superset_server  # noqa: F401  (the session's Superset)

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]
ROWS = [[1, "north", 10.5], [2, "south", 20.25], [3, "north", 4.25]]


class Superset:
    """The test's own view of Superset's API (signed in as its admin), independent of the app's client."""

    def __init__(self, server: Any) -> None:
        self.url, self.http = server.url, requests.Session()
        token = self.http.post(f"{self.url}/api/v1/security/login", timeout=30, json={
            "username": server.username, "password": server.password, "provider": "db", "refresh": False,
        }).json()["access_token"]
        self.http.headers.update({"Authorization": f"Bearer {token}", "Referer": f"{self.url}/"})
        csrf = self.http.get(f"{self.url}/api/v1/security/csrf_token/", timeout=30).json()["result"]
        self.http.headers["X-CSRFToken"] = csrf

    def get(self, path: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/api/v1/{path}", timeout=60)
        assert response.ok, (path, response.status_code, response.text[:500])
        return response.json()

    def count(self, resource: str) -> int:
        return self.get(f"{resource}/?q=(page_size:100)")["count"]

    def data(self, query_context: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.http.post(f"{self.url}/api/v1/chart/data", json=query_context, timeout=120)
        assert response.ok, response.text[:1000]
        return response.json()["result"][0]["data"]


@pytest.fixture
def lake(world, trino_server, superset_server, monkeypatch) -> dict[str, Any]:  # noqa: F811
    """A Trino table ``iceberg.<ns>.orders_<n>`` with three rows, registered as a table of acme's dev;
    Trino and Superset connections; a fresh namespace, table and Trino connection name per test
    (Superset's SQLite metadata keeps dataset names unique across databases, and a database's name
    is made of the Trino connection's)."""
    suffix = uuid.uuid4().hex[:8]
    ns, name = f"superset_{suffix}", f"orders_{suffix}"
    with trino_server.connect(user="operator") as conn:  # a writer, by the shipped rules
        cursor = conn.cursor()
        cursor.execute(f"CREATE SCHEMA iceberg.{ns}")
        cursor.fetchall()
        cursor.execute(f"CREATE TABLE iceberg.{ns}.{name} AS SELECT * FROM (VALUES "
                       "(1, 'north', DOUBLE '10.5'), (2, 'south', DOUBLE '20.25'), (3, 'north', DOUBLE '4.25')) "
                       "AS t (id, region, amount)")
        cursor.fetchall()
    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_TRINO_PASSWORD", unquote(parts.password or ""))
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_SUPERSET_PASSWORD", superset_server.password)
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_TRINO_BI_PASSWORD", unquote(urlsplit(trino_server.bi_url).password))
    ws = world.workspace
    trino_secret = SecretRef.objects.create(workspace=ws, name="trino-password", source="env",
                                            locator="CONTROLROOM_SECRET_TEST_TRINO_PASSWORD")
    superset_secret = SecretRef.objects.create(workspace=ws, name="superset-password", source="env",
                                               locator="CONTROLROOM_SECRET_TEST_SUPERSET_PASSWORD")
    SecretRef.objects.create(workspace=ws, name="trino-bi-password", source="env",
                             locator="CONTROLROOM_SECRET_TEST_TRINO_BI_PASSWORD")
    trino = Connection.objects.create(
        workspace=ws, name=f"trino-{suffix}", kind="trino", password_ref=trino_secret,
        config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme,
                "user": trino_server.service_user, "verify": trino_server.ca_file or True,
                "catalog": "iceberg", "schema": ns, "iceberg_catalogs": {"lakehouse": "iceberg"}})
    superset = Connection(workspace=ws, name="superset", kind="superset", password_ref=superset_secret,
                          config={"url": superset_server.url, "username": superset_server.username,
                                  "trino_connection": trino.name, "trino_user": "superset",
                                  "trino_password_ref": "trino-bi-password", "verify": True})
    superset.full_clean()
    superset.save()
    table = Table.objects.create(workspace=ws, environment=ws.environments.get(name="dev"), catalog_name="lakehouse",
                                 namespace=ns, name=name, format=Table.Format.ICEBERG)
    TableVersion.objects.create(table=table, version=1, operation="create", row_count=3, committed_at=timezone.now(),
                                schema=[{"name": "id", "type": "int", "nullable": True}])
    return {"ns": ns, "name": name, "table": table, "trino": trino, "superset": superset,
            "api": Superset(superset_server)}


def publish_table(world, persona: str, table: Table):
    return world.client(persona).post(f"/w/acme/tables/{table.pk}/superset/", follow=True)


def events(target: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="superset.publish", target_id=str(target.pk)).order_by("seq"))


def ro_queries(trino_server, ns: str) -> list[str]:
    """The states of the queries Trino ran as ``superset~ro`` that read namespace ``ns``."""
    with trino_server.connect(user=trino_server.service_user) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT state FROM system.runtime.queries WHERE \"user\" = 'superset~ro' AND query LIKE ?",
                       [f"%{ns}%"])
        return [row[0] for row in cursor.fetchall()]


def stored_database(superset_server, database_id: int) -> dict[str, Any]:  # noqa: F811
    """Superset's row of the database, its credentials decrypted, and whether the Trino service
    user's password is anywhere in Superset's metadata (decrypted columns included)."""
    stored = superset_server.metadata()
    (row,) = [d for d in stored["databases"] if d["id"] == database_id]
    return row


def service_password_in_superset(superset_server, trino_server, *, seen: frozenset[str] = frozenset(),  # noqa: F811
                                 databases: tuple[int, ...] | None = None) -> list[str]:
    """Where Superset's metadata holds the Trino service user's password: lines of its SQL dump
    (but those in ``seen``), and databases (of ``databases``, default all) whose decrypted
    credentials have it."""
    password, stored = unquote(urlsplit(trino_server.url).password), superset_server.metadata()
    return ([line[:200] for line in stored["dump"].splitlines() if password in line and line not in seen]
            + [f"database {d['id']}" for d in stored["databases"]
               if password in json.dumps(d) and (databases is None or d["id"] in databases)])


def metadata_lines(superset_server) -> frozenset[str]:  # noqa: F811
    return frozenset(superset_server.metadata()["dump"].splitlines())


def test_a_table_is_published_read_only_and_republished_in_place(world, lake, trino_server,
                                                                  superset_server):  # noqa: F811
    api, table = lake["api"], lake["table"]
    datasets_before, databases_before = api.count("dataset"), api.count("database")
    seen = metadata_lines(superset_server)
    page = publish_table(world, "operator", table)
    assert page.status_code == 200
    text = page.content.decode()
    assert f"{table.namespace}.{table.name} published to Superset" in text, text[:3000]
    pub = SupersetPublication.objects.get(table=table)
    assert pub.connection == lake["superset"] and pub.chart_id is None and pub.published_by == world.users["operator"]

    database = api.get(f"database/{pub.database_id}/connection")["result"]
    assert database["sqlalchemy_uri"].startswith(f"trino://superset~ro@127.0.0.1:{urlsplit(trino_server.url).port}/")
    assert database["sqlalchemy_uri"].endswith("/iceberg") and database["allow_dml"] is False
    assert urlsplit(trino_server.url).password not in json.dumps(database)  # the password is not shown back
    # Superset logs in as superset~ro with that login's own password; the service user is nowhere.
    row = stored_database(superset_server, pub.database_id)
    assert json.loads(row["encrypted_extra"]) == {"auth_method": "basic", "auth_params": {
        "username": "superset~ro", "password": unquote(urlsplit(trino_server.bi_url).password)}}
    assert row["sqlalchemy_uri"].startswith("trino://superset~ro@") and not row["impersonate_user"]
    assert trino_server.service_user not in row["sqlalchemy_uri"] + row["encrypted_extra"]
    assert service_password_in_superset(superset_server, trino_server, seen=seen, databases=(pub.database_id,)) == []
    dataset = api.get(f"dataset/{pub.dataset_id}")["result"]
    assert (dataset["table_name"], dataset["schema"], dataset["sql"]) == (table.name, table.namespace, None)
    assert {c["column_name"] for c in dataset["columns"]} == {"id", "region", "amount"}
    counts = (api.count("dataset"), api.count("database"))
    assert counts == (datasets_before + 1, databases_before + 1)

    # Superset reads the rows from Trino, as the read-only identity.
    rows = api.data({"datasource": {"id": pub.dataset_id, "type": "table"}, "result_format": "json",
                     "result_type": "full", "queries": [{"columns": ["id", "region", "amount"], "metrics": [],
                                                         "orderby": [["id", True]], "row_limit": 100}]})
    assert [[r["id"], r["region"], r["amount"]] for r in rows] == ROWS
    assert "FINISHED" in ro_queries(trino_server, lake["ns"])

    # The table page links to the dataset, for every member; only operators and admins get the button.
    viewer_page = world.client("viewer").get(f"/w/acme/tables/{table.pk}/").content.decode()
    assert f'id="superset-link" href="{pub.dataset_url}"' in viewer_page.replace("&amp;", "&")
    assert 'id="superset-publish"' not in viewer_page
    assert "Publish to Superset again" in world.client("operator").get(f"/w/acme/tables/{table.pk}/").content.decode()

    # A new column in Trino, then publish again: the same objects, updated, and nothing new.
    with trino_server.connect(user="operator") as conn:
        cursor = conn.cursor()
        cursor.execute(f"ALTER TABLE iceberg.{lake['ns']}.{table.name} ADD COLUMN note varchar")
        cursor.fetchall()
    again = publish_table(world, "admin", table)
    assert "published to Superset" in again.content.decode()
    second = SupersetPublication.objects.get(table=table)
    assert (second.pk, second.database_id, second.dataset_id) == (pub.pk, pub.database_id, pub.dataset_id)
    assert second.published_by == world.users["admin"] and second.published_at > pub.published_at
    assert (api.count("dataset"), api.count("database")) == counts
    updated = api.get(f"dataset/{pub.dataset_id}")["result"]
    assert "note" in {c["column_name"] for c in updated["columns"]}
    assert updated["description"] != dataset["description"] and "published by admin" in updated["description"]

    first, last = events(table)
    assert first.after["ok"] and first.after["created"] == ["database", "dataset"] and first.before is None
    assert last.after["updated"] == ["database", "dataset"] and last.after["created"] == []
    assert last.before == {"database_id": pub.database_id, "dataset_id": pub.dataset_id, "chart_id": None}
    assert last.actor_label == "admin"


def test_a_saved_query_becomes_a_virtual_dataset_and_chart(world, lake):
    api = lake["api"]
    saved = SavedQuery.objects.create(
        workspace=world.workspace, title="Revenue by region", owner=world.users["analyst"], connection=lake["trino"],
        sql=f"SELECT region, amount FROM iceberg.{lake['ns']}.{lake['name']};",
        chart={"type": "bar", "x": "region", "y": ["amount"]})
    charts_before = api.count("chart")
    page = world.client("operator").post(f"/w/acme/sql/saved/{saved.pk}/superset/", follow=True).content.decode()
    assert "“Revenue by region” published to Superset" in page and 'id="superset-chart-link"' in page
    pub = SupersetPublication.objects.get(saved_query=saved)
    dataset = api.get(f"dataset/{pub.dataset_id}")["result"]
    assert dataset["sql"] == f"SELECT region, amount FROM iceberg.{lake['ns']}.{lake['name']}"
    assert dataset["table_name"] == f"Revenue by region (controlroom acme query {saved.pk})"
    chart = api.get(f"chart/{pub.chart_id}")["result"]
    assert chart["viz_type"] == "echarts_timeseries_bar" and chart["slice_name"] == dataset["table_name"]
    data = api.get(f"chart/{pub.chart_id}/data/")["result"][0]["data"]
    assert sorted((r["region"], r["amount"]) for r in data) == [("north", 14.75), ("south", 20.25)]
    assert api.count("chart") == charts_before + 1

    # A new version of the SQL and another chart type: the same dataset and chart, changed.
    SavedQuery.objects.filter(pk=saved.pk).update(
        sql=f"SELECT region, amount * 2 AS amount FROM iceberg.{lake['ns']}.{lake['name']}", version=2,
        chart={"type": "line", "x": "region", "y": ["amount"]})
    world.client("operator").post(f"/w/acme/sql/saved/{saved.pk}/superset/")
    again = SupersetPublication.objects.get(saved_query=saved)
    assert (again.dataset_id, again.chart_id, again.database_id) == (pub.dataset_id, pub.chart_id, pub.database_id)
    assert api.get(f"chart/{pub.chart_id}")["result"]["viz_type"] == "echarts_timeseries_line"
    data = api.get(f"chart/{pub.chart_id}/data/")["result"][0]["data"]
    assert sorted((r["region"], r["amount"]) for r in data) == [("north", 29.5), ("south", 40.5)]
    assert api.count("chart") == charts_before + 1
    detail = world.client("viewer").get(f"/w/acme/sql/saved/{saved.pk}/").content.decode().replace("&amp;", "&")
    assert f'href="{again.dataset_url}"' in detail and f'href="{again.chart_url}"' in detail
    assert [e.after["created"] for e in events(saved)] == [["database", "dataset", "chart"], []]


def test_only_operators_and_admins_publish(world, lake):
    table = lake["table"]
    saved = SavedQuery.objects.create(workspace=world.workspace, title="q", owner=world.users["analyst"],
                                      connection=lake["trino"], sql="SELECT 1 AS x")
    for url in (f"/w/acme/tables/{table.pk}/superset/", f"/w/acme/sql/saved/{saved.pk}/superset/"):
        for persona in ("viewer", "analyst"):
            assert world.client(persona).post(url).status_code == 403, (persona, url)
        assert world.client("outsider").post(url).status_code == 404
        assert world.client("operator").get(url).status_code == 405
        anonymous = world.client("operator").__class__().post(url)
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert 'id="superset-publish"' not in world.client("analyst").get(f"/w/acme/tables/{table.pk}/").content.decode()
    assert not SupersetPublication.objects.exists() and not AuditEvent.objects.filter(action="superset.publish")


def test_an_unreachable_superset_is_one_sentence_and_writes_nothing(world, lake):
    table = lake["table"]
    port = free_port()
    Connection.objects.filter(pk=lake["superset"].pk).update(config={**lake["superset"].config,
                                                                     "url": f"http://127.0.0.1:{port}"})
    page = publish_table(world, "operator", table).content.decode()
    assert (f"Superset at http://127.0.0.1:{port} could not be reached to sign in: connection refused "
            "(nothing listens on that port") in page
    assert not SupersetPublication.objects.exists()
    (event,) = events(table)
    assert event.after["ok"] is False and "could not be reached" in event.after["error"]


def test_a_refusing_superset_leaves_nothing_half_written(world, lake, monkeypatch):
    api, table = lake["api"], lake["table"]
    before = (api.count("database"), api.count("dataset"))
    # A table Trino does not have: the database is made, the dataset refused, and the database removed again.
    ghost = Table.objects.create(workspace=table.workspace, environment=table.environment, catalog_name="lakehouse",
                                 namespace=table.namespace, name="no_such_table", format=Table.Format.ICEBERG)
    page = publish_table(world, "operator", ghost).content.decode()
    assert "Superset refused to create the dataset:" in page, page[:3000]
    assert (api.count("database"), api.count("dataset")) == before
    (event,) = events(ghost)
    assert event.after["ok"] is False and event.after["error"].startswith("Superset refused to create the dataset")
    # Superset connects to Trino when the database is made: with a wrong password of its login it refuses.
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_TRINO_BI_PASSWORD", "not-the-password")
    page = publish_table(world, "operator", table).content.decode()
    assert "Superset refused to create the database:" in page and "not-the-password" not in page
    assert (api.count("database"), api.count("dataset")) == before
    assert not SupersetPublication.objects.exists()
    # A wrong Superset password: refused at the sign-in.
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_SUPERSET_PASSWORD", "wrong-password")
    page = publish_table(world, "operator", table).content.decode()
    assert f"Superset at {api.url} refused the sign-in of &#x27;admin&#x27;" in page
    assert [e.after["ok"] for e in events(table)] == [False, False] and not SupersetPublication.objects.exists()


def test_the_bi_login_reads_and_nothing_more(lake, trino_server):
    """Superset's Trino login, used directly: it reads, as itself; it creates, writes and
    rewrites nothing; it acts as no one else (a writer, the service user, another reader)."""
    table = f"iceberg.{lake['ns']}.{lake['name']}"

    def run(sql: str, *, user: str = "superset~ro") -> list[list[Any]]:
        with trino_server.connect_bi(user=user) as conn:
            cursor = conn.cursor()
            cursor.execute(sql)
            return cursor.fetchall()

    assert run(f"SELECT id, region, amount FROM {table} ORDER BY id") == ROWS
    assert run("SELECT current_user") == [["superset~ro"]]
    for sql in (f"CREATE TABLE iceberg.{lake['ns']}.made_by_superset (id int)",
                f"INSERT INTO {table} VALUES (4, 'east', DOUBLE '1.0')", f"DELETE FROM {table}",
                f"CREATE TABLE memory.default.t_{lake['ns']} AS SELECT 1 AS x",
                f"ALTER TABLE {table} EXECUTE optimize"):
        with pytest.raises(trino.exceptions.TrinoUserError, match="Access Denied"):
            run(sql)
    for other in ("operator", "superset", trino_server.service_user, "alice~ro"):
        with pytest.raises(trino.exceptions.TrinoUserError,
                           match=f"Access Denied: User superset~ro cannot impersonate user {other}"):
            run("SELECT 1", user=other)
    with pytest.raises(trino.exceptions.TrinoUserError, match="Access Denied"):
        run("SET SESSION AUTHORIZATION operator")
    assert run(f"SELECT count(*) FROM {table}") == [[3]]


def test_a_database_stored_with_the_service_login_is_re_keyed(world, lake, trino_server,
                                                                superset_server):  # noqa: F811
    """A database published before Superset had a login of its own (as the service user,
    impersonating superset~ro) gets Superset's own login on the next publish; the service
    password is then in no database of Superset's (only in its action log of the old request,
    which is why the upgrade notes say to rotate it)."""
    api, trino_conn = lake["api"], lake["trino"]
    parts = urlsplit(trino_server.url)
    old = api.http.post(f"{api.url}/api/v1/database/", timeout=120, json={
        "database_name": f"controlroom acme {trino_conn.name} iceberg",
        "sqlalchemy_uri": f"trino://superset~ro@{parts.hostname}:{parts.port}/iceberg",
        "extra": json.dumps({"engine_params": {"connect_args": {"http_scheme": "https",
                                                                "verify": trino_server.ca_file}}}),
        "masked_encrypted_extra": json.dumps({"auth_method": "basic", "auth_params": {
            "username": trino_server.service_user, "password": unquote(parts.password)}})})
    assert old.status_code == 201, old.text[:1000]
    # What the fix removes (Superset's action log keeps the request too: rotate the service password).
    made = service_password_in_superset(superset_server, trino_server, databases=(old.json()["id"],))
    assert f"database {old.json()['id']}" in made
    page = publish_table(world, "operator", lake["table"]).content.decode()
    assert "published to Superset" in page, page[:3000]
    pub = SupersetPublication.objects.get(table=lake["table"])
    assert pub.database_id == old.json()["id"]
    row = stored_database(superset_server, pub.database_id)
    assert json.loads(row["encrypted_extra"])["auth_params"]["username"] == "superset~ro"
    left = service_password_in_superset(superset_server, trino_server, databases=(pub.database_id,))
    assert left and all(line.startswith('INSERT INTO "logs"') for line in left), left  # the log of the old POST only


def test_a_missing_or_unreadable_bi_password_is_one_sentence_and_writes_nothing(world, lake, monkeypatch):
    api, table, conn = lake["api"], lake["table"], lake["superset"]
    before = (api.count("database"), api.count("dataset"))
    monkeypatch.delenv("CONTROLROOM_SECRET_TEST_TRINO_BI_PASSWORD")
    page = publish_table(world, "operator", table).content.decode()
    assert ("Superset connection &#x27;superset&#x27; cannot log in to Trino: secret &#x27;trino-bi-password&#x27; "
            "cannot be read; ask a workspace admin.") in page, page[:3000]
    cases = [  # saved around the admin's checks (or before the key existed)
        ({**conn.config, "trino_password_ref": "gone"},
         "Superset connection 'superset' names 'gone' as its Trino password, and this workspace has no secret "
         "reference of that name."),
        ({k: v for k, v in conn.config.items() if k != "trino_password_ref"},
         "Superset connection 'superset' is misconfigured: 'trino_password_ref' must name the secret reference of "
         "the password of Superset's own Trino login (<user>~ro)."),
        ({**conn.config, "trino_password_ref": "trino-password"},
         "Superset connection 'superset' names the Trino service user's password ('trino-password'); choose the "
         "password of Superset's own read-only Trino login."),
    ]
    for config, sentence in cases:
        Connection.objects.filter(pk=conn.pk).update(config=config)
        page = publish_table(world, "operator", table).content.decode().replace("&#x27;", "'").replace("&lt;", "<")
        assert sentence in page.replace("&gt;", ">"), (sentence, page[:3000])
    assert (api.count("database"), api.count("dataset")) == before
    assert not SupersetPublication.objects.exists()
    assert [e.after["ok"] for e in events(table)] == [False] * 4


def test_test_connection_signs_in(world, lake, monkeypatch):
    result = connection_test(access=world.access("admin"), connection=lake["superset"])
    assert result.ok, result.message
    assert result.message == (f"Superset at {lake['api'].url} signed in as admin; it will read through Trino "
                              f"connection '{lake['trino'].name}' as superset~ro, whose login Trino accepted")
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_TRINO_BI_PASSWORD", "not-the-bi-password")
    refused = connection_test(access=world.access("admin"), connection=lake["superset"])
    assert not refused.ok and "refused Superset's login superset~ro" in refused.message
    assert "not-the-bi-password" not in refused.message
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_SUPERSET_PASSWORD", "wrong-password")
    failed = connection_test(access=world.access("admin"), connection=lake["superset"])
    assert not failed.ok and "refused the sign-in of 'admin'" in failed.message


def test_publish_from_the_table_page_in_a_browser(world, lake, live_server, client):
    """Chromium: the operator clicks "Publish to Superset" and the page links to the dataset
    (``SUPERSET_SHOTS=<folder>`` keeps a screenshot)."""
    import os

    from tests.chromium import chromium, shot

    table = lake["table"]
    client.force_login(world.users["operator"])
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                              "url": live_server.url}])
        page = context.new_page()
        page.goto(f"{live_server.url}/w/acme/tables/{table.pk}/")
        page.click("#superset-publish")
        page.wait_for_selector("#superset-link")
        href = page.get_attribute("#superset-link", "href")
        assert page.inner_text("#superset-publish") == "Publish to Superset again"
        assert "published to Superset" in page.inner_text(".messages")
        shot(page, "superset-table-page", os.environ.get("SUPERSET_SHOTS", ""))
        context.close()
    assert href == SupersetPublication.objects.get(table=table).dataset_url
