"""The connections pages in Chromium, as the admin: a DuckDB connection created through its
form, a field error shown beside its field, Test connection answered in place (htmx) on the
edit page and on the list, and a secret reference that resolves. Each page is photographed to
``/tmp/workspace-admin-connections-*.png``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from connections.models import Connection
from controlroom.models import AuditEvent
from tests.chromium import chromium

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SHOTS = "/tmp/workspace-admin-connections-{}.png"
VALUE = "browser-secret-never-shown"


def test_admin_creates_a_duckdb_connection_and_tests_it(world, live_server, client, monkeypatch):
    monkeypatch.setenv("CONTROLROOM_SECRET_BROWSER", VALUE)
    client.force_login(world.users["admin"])
    cookie = client.cookies["sessionid"].value
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text)
                if msg.type == "error" and "Failed to load resource" not in msg.text else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        page.goto(f"{live_server.url}/w/acme/settings/members/")
        page.locator("nav.subnav").get_by_role("link", name="Secret references").click()
        form = page.locator("#secret-form")
        form.get_by_label("Name").fill("browser-pw")
        form.get_by_label("Source").select_option("env")
        form.get_by_label("Locator").fill("CONTROLROOM_SECRET_BROWSER")
        form.get_by_role("button", name="Add").click()
        expect(page.locator('tr[data-secret="browser-pw"] .badge')).to_have_text("resolves")
        assert VALUE not in page.content()
        page.screenshot(path=SHOTS.format("secrets"), full_page=True)

        page.locator("nav.subnav").get_by_role("link", name="Connections").click()
        page.get_by_role("link", name="DuckDB (embedded)").click()
        form = page.locator("#connection-form")
        form.get_by_label("Name").fill("scratch")
        form.get_by_label("Database").fill("../outside.duckdb")
        form.get_by_role("button", name="Create connection").click()
        expect(page.locator('[data-field="database"] .errorlist')).to_contain_text("no ..")
        page.screenshot(path=SHOTS.format("form-error"), full_page=True)
        form.get_by_label("Database").fill("scratch.duckdb")
        form.get_by_role("button", name="Create connection").click()
        expect(page.locator(".messages li")).to_contain_text("Connection scratch created.")

        page.locator("#connection-test").get_by_role("button", name="Test connection").click()
        result = page.locator("#connection-test .probe-result")
        expect(result).to_contain_text("DuckDB answered SELECT 1 (the dev database)")
        expect(result).to_have_attribute("data-ok", "true")
        page.screenshot(path=SHOTS.format("edit"), full_page=True)

        page.get_by_role("link", name="← Connections").click()
        row = page.locator('tr[data-connection="scratch"]')
        row.get_by_role("button", name="Test connection").click()
        expect(row.locator(".probe-result")).to_contain_text("DuckDB answered SELECT 1")
        page.screenshot(path=SHOTS.format("list"), full_page=True)
        assert page.url.endswith("/w/acme/settings/connections/")  # answered in place, no navigation
        page.goto(f"{live_server.url}/w/acme/settings/connections/new/trino/")
        page.screenshot(path=SHOTS.format("trino-form"), full_page=True)
        page.goto(f"{live_server.url}/w/acme/settings/connections/new/catalog/")
        page.screenshot(path=SHOTS.format("catalog-form"), full_page=True)
    assert not problems, problems
    conn = Connection.objects.get(workspace=world.workspace, name="scratch")
    assert conn.kind == "duckdb" and conn.config == {"database": "scratch.duckdb"}
    assert AuditEvent.objects.filter(action="connection.test", target_id=str(conn.pk)).count() == 2
