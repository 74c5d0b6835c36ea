"""The real SQL editor pages in Chromium, served by Django (pytest-django's live server, with the
worker's part run eagerly in the server thread): completion from the workspace's schema, unsaved
text that survives a reload and a closed tab (the query tabs keep it), a run whose result loads
under the editor with live status, and the chart of that result."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from connections.models import Connection
from sqlwarehouse.engines import duckdb_engine_for
from tests.chromium import chromium
from tests.test_editor_js import completion_labels, type_at_end

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def signed_in(world, live_server, client) -> Iterator[BrowserContext]:
    """A browser context whose session cookie is the analyst's."""
    client.force_login(world.users["analyst"])
    cookie = client.cookies["sessionid"].value
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
        yield context


@pytest.fixture
def orders_demo(world) -> None:
    """A table in the workspace's DuckDB warehouse (made before the browser's event loop starts,
    since Django's ORM refuses to run inside it)."""
    warehouse = Connection.objects.get(workspace=world.workspace, name="warehouse")
    duckdb_engine_for(warehouse, read_only=False, environment=world.workspace.environments.get(name="dev")).execute(
        "CREATE TABLE orders_demo AS SELECT range AS id, (range % 7) * 10 AS amount FROM range(40)")


def test_editor_completes_keeps_drafts_runs_and_charts(orders_demo, live_server, signed_in, eager_celery):
    editor = f"{live_server.url}/w/acme/sql/"
    problems: list[str] = []
    page = signed_in.new_page()
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(editor)
    page.wait_for_selector("#sql[data-schema-state=ready]", state="attached", timeout=15_000)

    type_at_end(page, "select id, amount from orders_d")
    page.keyboard.press("Control+Space")
    expect(page.locator(".cm-tooltip-autocomplete")).to_be_visible()
    assert "orders_demo" in completion_labels(page)
    page.wait_for_timeout(150)  # the popup ignores keys for its first 75 ms
    page.keyboard.press("Enter")
    page.keyboard.type(" order by id")
    text = "select id, amount from orders_demo order by id"
    expect(page.locator("#sql")).to_have_value(text)

    page.wait_for_timeout(500)  # the tab's text is stored 300 ms after the last key
    page.reload()
    expect(page.locator("#sql")).to_have_value(text)
    page.close()
    page = signed_in.new_page()  # the tab was closed; a new one opens the editor again
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(editor)
    expect(page.locator("#sql")).to_have_value(text)

    page.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")  # the result loads under the editor: the page stays
    page.wait_for_url(re.compile(r"/w/acme/sql/\?execution=\d+$"))
    expect(page.locator("#execution-state")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#result tr")).to_have_count(41)  # header and 40 rows
    page.wait_for_function("() => window.Chart && Object.values(Chart.instances).length === 1", timeout=10_000)
    points = page.evaluate("() => Object.values(Chart.instances)[0].data.datasets[0].data.length")
    assert points == 40
    assert not problems, problems
