"""The one-page SQL editor in Chromium against the live server: a run (Ctrl-Enter) whose result
loads below the editor without leaving the page, cancel, tabs that survive a reload, the schema
panel (click to insert, preview), column completion, the confirmation before a DROP, an EXPLAIN
as a plan. Screenshots of each state go to $WORKBENCH_SHOTS when it is set."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page, expect

from connections.models import Connection
from sqlwarehouse.engines import duckdb_engine_for
from sqlwarehouse.models import QueryExecution
from tests.chromium import chromium, orm
from tests.test_editor_js import completion_labels, replace_text

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SHOTS = os.environ.get("WORKBENCH_SHOTS", "")


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


@pytest.fixture
def revenue_demo(world) -> None:
    warehouse = Connection.objects.get(workspace=world.workspace, name="warehouse")
    duckdb_engine_for(warehouse, read_only=False, environment=world.workspace.environments.get(name="dev")).execute(
        "CREATE TABLE revenue_demo AS SELECT range AS id, 'c' || (range % 3) AS country, "
        "(range * 1234.5)::DECIMAL(12,2) AS revenue FROM range(40)")


@pytest.fixture
def open_editor(world, live_server) -> Iterator[Callable[..., Page]]:
    """Opens the editor in a new browser context signed in as a persona. The sessions are made
    before Chromium starts: Django's ORM refuses to run inside Playwright's event loop."""
    from django.test import Client

    cookies = {}
    for persona in ("analyst", "admin"):
        client = Client()
        client.force_login(world.users[persona])
        cookies[persona] = client.cookies["sessionid"].value
    with chromium() as browser:

        def open_as(persona: str = "analyst", path: str = "/w/acme/sql/", editor: bool = True) -> Page:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "sessionid", "value": cookies[persona], "url": live_server.url}])
            page = context.new_page()
            page.problems = []
            page.on("pageerror", lambda exc: page.problems.append(str(exc)))
            page.goto(live_server.url + path)
            if editor:
                expect(page.locator(".cm-content")).to_be_visible()
            return page

        yield open_as


def run_with_keys(page: Page, sql: str) -> None:
    replace_text(page, sql)
    page.keyboard.press("Control+Enter")


def test_ctrl_enter_runs_in_place_pages_and_copies(revenue_demo, open_editor, eager_celery, settings):
    settings.SQL_INLINE_RUNS = 2  # as the run command: the web process runs them (sqlwarehouse.inline)
    page = open_editor()
    page.evaluate("window.__samePage = true")
    run_with_keys(page, "select id, country, revenue from revenue_demo order by id")
    expect(page.locator("#results #execution-state")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#results #result tr")).to_have_count(41)
    expect(page).to_have_url(re.compile(r"/w/acme/sql/\?execution=\d+$"))  # set in the task after the rows
    assert page.evaluate("window.__samePage") is True  # no navigation, no reload
    cell = page.locator("#results #result tr").nth(40).locator("td").nth(3)
    expect(cell).to_have_text("48,145.50")
    assert cell.evaluate("td => getComputedStyle(td).textAlign") == "right"
    page.wait_for_function("() => window.Chart && Object.values(Chart.instances).length === 1", timeout=10_000)
    shot(page, "1-result")

    tsv = page.evaluate("CRResultTools.resultTsv()").splitlines()
    assert tsv[0] == "id\tcountry\trevenue" and tsv[40] == "39\tc0\t48145.50" and len(tsv) == 41
    page.locator("#copy-tsv").click()
    expect(page.locator("#result-note")).to_contain_text("Copied 40 rows as TSV")

    page.evaluate("CREditor.setText('select range as n from range(250)')")
    page.locator("#limit").select_option("100")
    page.locator("button[name=run]").click()
    expect(page.locator("#results #execution-status")).to_contain_text("100 rows", timeout=15_000)
    expect(page.locator("#results .pagination")).to_have_count(0)  # LIMIT 100: one page
    page.wait_for_function("() => Object.values(Chart.instances).length === 1")  # the old chart went with its result
    page.locator("#limit").select_option("none")
    page.locator("button[name=run]").click()
    expect(page.locator("#results .pagination")).to_contain_text("Page 1 of 3", timeout=15_000)
    page.locator("#results .pagination a", has_text="Next").click()
    expect(page.locator("#results .pagination")).to_contain_text("Page 2 of 3")
    expect(page.locator("#results #result tr").nth(1).locator("td").first).to_have_text("101")
    assert urlparse(page.url).path == "/w/acme/sql/" and page.evaluate("window.__samePage") is True

    page.evaluate("CREditor.setText('select 1 as not_this;\\nselect 2 as this_one')")
    page.evaluate("CREditor.view.focus(); CREditor.view.dispatch({selection: {anchor: 22, head: 42}})")
    page.keyboard.press("Control+Enter")  # the selection runs alone
    expect(page.locator("#results #result")).to_contain_text("this_one", timeout=15_000)
    last_sql = orm(lambda: QueryExecution.objects.order_by("-id").values_list("sql", flat=True).first())
    assert last_sql == "select 2 as this_one"  # (the limit is "none" here)

    shown = page.locator("#results").get_attribute("data-execution")
    expect(page).to_have_url(re.compile(rf"\?execution={shown}$"))
    execution = re.search(r"execution=(\d+)", page.url).group(1)
    page.reload()  # the URL brings the same result back
    expect(page.locator(f'#results[data-execution="{execution}"] #execution-state')).to_have_text("succeeded")
    assert not page.problems, page.problems


@pytest.fixture
def worker_thread(monkeypatch) -> Iterator[list[threading.Thread]]:
    """The worker's part in a thread of its own, as a Celery worker would run it: the run's POST
    answers at once and the query runs (and can be cancelled) meanwhile."""
    from django.db import connection

    from sqlwarehouse import tasks

    threads: list[threading.Thread] = []

    def execute(execution_id: int) -> None:
        try:
            tasks.query_execute_service(execution_id=execution_id)
        finally:
            connection.close()

    def apply_async(args, **kwargs) -> None:
        threads.append(threading.Thread(target=execute, args=args, daemon=True))
        threads[-1].start()

    monkeypatch.setattr(tasks.query_execute, "apply_async", apply_async)
    yield threads
    for thread in threads:
        thread.join(timeout=20)


def test_cancel_a_long_query(open_editor, worker_thread):
    page = open_editor()
    run_with_keys(page, "select count(*) from range(1000000000000) a")  # hours, unless cancelled
    expect(page.locator("#results #execution-state")).to_have_text("running", timeout=10_000)
    expect(page.locator("#results #elapsed")).to_contain_text(" s")
    page.wait_for_timeout(700)  # a poll or two: the elapsed time moves on
    shot(page, "2-running")
    page.locator("#results #cancel").click()
    expect(page.locator("#results #execution-state")).to_have_text("cancelled", timeout=15_000)
    expect(page.locator("#results #query-error")).to_have_text("The query was cancelled.")
    assert urlparse(page.url).path == "/w/acme/sql/"
    worker_thread[0].join(timeout=15)
    assert not worker_thread[0].is_alive()
    assert orm(lambda: QueryExecution.objects.get().status) == "cancelled"
    assert not page.problems, page.problems


def test_two_tabs_survive_a_reload(open_editor, eager_celery):
    page = open_editor()
    run_with_keys(page, "select 1 as first_tab")
    expect(page.locator("#results #execution-state")).to_have_text("succeeded", timeout=15_000)
    page.locator("#add-tab").click()
    expect(page.locator(".query-tab")).to_have_count(2)
    run_with_keys(page, "select 2 as second_tab")
    expect(page.locator("#results #result")).to_contain_text("second_tab", timeout=15_000)
    page.locator(".query-tab").nth(1).locator(".tab-label").dblclick()
    page.keyboard.type("Revenue check")
    page.keyboard.press("Enter")
    page.wait_for_timeout(400)  # the text is stored 300 ms after the last key

    page.reload()
    expect(page.locator(".query-tab")).to_have_count(2)
    expect(page.locator(".query-tab").nth(1)).to_contain_text("Revenue check")
    assert page.evaluate("CREditor.text()") == "select 2 as second_tab"
    expect(page.locator("#results #result")).to_contain_text("second_tab")
    page.locator(".query-tab").nth(0).locator(".tab-label").click()
    assert page.evaluate("CREditor.text()") == "select 1 as first_tab"
    expect(page.locator("#results #result")).to_contain_text("first_tab")  # its own last result
    shot(page, "3-tabs")
    page.locator(".query-tab").nth(1).locator(".tab-close").click()
    page.reload()
    expect(page.locator(".query-tab")).to_have_count(1)
    assert page.evaluate("CREditor.text()") == "select 1 as first_tab"

    page.locator("#add-tab").click()  # saving a tab's SQL keeps it in that tab
    page.evaluate("CREditor.setText('select 3 as saved_tab')")
    page.locator("summary", has_text="Save as a query").click()
    page.locator("input[name=title]").fill("Third")
    page.locator("button[name=save]").click()
    page.wait_for_url(re.compile(r"\?saved=\d+$"))
    expect(page.locator(".query-tab")).to_have_count(2)
    expect(page.locator('.query-tab[aria-selected="true"] .tab-label')).to_have_text("Third")
    assert page.evaluate("CREditor.text()") == "select 3 as saved_tab"
    assert not page.problems, page.problems


def test_schema_panel_inserts_names_previews_and_completes_columns(revenue_demo, open_editor, eager_celery):
    page = open_editor()
    page.wait_for_selector("#sql[data-schema-state=ready]", state="attached", timeout=15_000)
    replace_text(page, "select  from ")
    page.keyboard.press("End")
    page.locator("#schema-side details.schema summary", has_text="main").click()
    table = page.locator('#schema-side .insert-name[data-table="revenue_demo"]')
    table.click()
    assert re.fullmatch(r"select  from \w+\.main\.revenue_demo", page.evaluate("CREditor.text()"))
    page.locator(".cm-content").click()
    page.keyboard.press("Control+Home")
    for _ in range(len("select ")):
        page.keyboard.press("ArrowRight")
    page.locator('#schema-side .insert-name[data-column="revenue"]').click()
    assert page.evaluate("CREditor.text()").startswith("select revenue from ")
    shot(page, "4-tree")

    replace_text(page, "select reve from revenue_demo")
    for _ in range(len(" from revenue_demo")):
        page.keyboard.press("ArrowLeft")
    page.keyboard.press("Control+Space")
    expect(page.locator(".cm-tooltip-autocomplete")).to_contain_text("revenue")
    assert completion_labels(page)[0] == "revenue", completion_labels(page)
    shot(page, "5-completion")
    page.keyboard.press("Escape")

    page.locator('#schema-side .preview-table[data-table="revenue_demo"]').click()
    expect(page.locator("#results #result tr")).to_have_count(41, timeout=15_000)
    assert re.fullmatch(r"SELECT \* FROM \w+\.main\.revenue_demo LIMIT 100", page.evaluate("CREditor.text()"))

    page.locator("#toggle-schema").click()
    expect(page.locator("#schema-side")).to_be_hidden()
    page.reload()
    expect(page.locator("#schema-side")).to_be_hidden()
    page.locator("#toggle-schema").click()
    expect(page.locator("#schema-side")).to_be_visible()
    assert not page.problems, page.problems


def test_a_drop_asks_first_and_explain_shows_a_plan(revenue_demo, open_editor, eager_celery):
    page = open_editor("admin")
    run_with_keys(page, "drop table revenue_demo")
    dialog = page.locator("dialog#confirm-write")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("DROP TABLE")
    shot(page, "6-confirm")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(page.locator("#run-note")).to_have_text("Not run.")
    assert orm(lambda: QueryExecution.objects.count()) == 0  # dismissed: nothing ran

    page.locator("button[name=run]").click()
    page.locator("dialog#confirm-write #confirm-run").click()
    expect(page.locator("#results #execution-state")).to_have_text("succeeded", timeout=15_000)
    assert orm(lambda: list(QueryExecution.objects.values_list("sql", flat=True))) == ["drop table revenue_demo"]

    page.evaluate("CREditor.setText('select 1 as one')")
    page.locator("button[name=explain]").click()
    plan = page.locator("#results pre.plan")
    expect(plan).to_be_visible(timeout=15_000)
    assert "monospace" in plan.evaluate("p => getComputedStyle(p).fontFamily")
    assert plan.evaluate("p => getComputedStyle(p).whiteSpace") == "pre"
    expect(page.locator("#results #result")).to_have_count(0)
    expect(page.locator("#results #chart")).to_have_count(0)
    shot(page, "7-explain")
    assert not page.problems, page.problems


def test_old_draft_parameters_format_and_share(open_editor, live_server, eager_celery):
    page = open_editor(path="/w/acme/sql/history/", editor=False)
    page.evaluate("""() => localStorage.setItem(  // the editor before tabs kept one draft
      'controlroom:draft:acme:new', JSON.stringify({text: 'select :n * 1000 as n'}))""")
    page.goto(live_server.url + "/w/acme/sql/")
    expect(page.locator(".query-tab")).to_have_count(1)
    assert page.evaluate("CREditor.text()") == "select :n * 1000 as n"

    page.locator("button[name=run]").click()
    expect(page.locator("#results #query-error")).to_contain_text(":n needs a value", timeout=15_000)
    field = page.locator('#param-values input[name="param.n"]')
    expect(field).to_be_focused()
    field.fill("7")
    page.locator("button[name=run]").click()
    expect(page.locator("#results #result tr").nth(1).locator("td").nth(1)).to_have_text("7,000", timeout=15_000)

    page.evaluate("CREditor.setText('select a,sum(b) from t group by a')")
    page.locator("#format-sql").click()
    page.wait_for_function("() => CREditor.text().startsWith('SELECT\\n  a,')")
    assert page.evaluate("CREditor.text()") == "SELECT\n  a,\n  SUM(b)\nFROM t\nGROUP BY\n  a"

    link = page.locator("#share-link").get_attribute("data-url")
    assert re.fullmatch(re.escape(live_server.url) + r"/w/acme/sql/\?execution=\d+", link)
    page.locator("#share-link").click()
    expect(page.locator("#result-note")).to_contain_text("Link copied")
    admin = open_editor("admin", urlparse(link).path + "?" + urlparse(link).query)  # an admin may see it
    expect(admin.locator("#results #result")).to_contain_text("7,000")
    assert admin.evaluate("CREditor.text()") == "select :n * 1000 as n"  # as written, not as LIMIT wrapped it
    expect(admin.locator('#param-values input[name="param.n"]')).to_have_value("7")
    expect(admin.locator("#limit")).to_have_value("1000")
    shot(admin, "8-shared")
    assert not page.problems and not admin.problems, page.problems + admin.problems


@pytest.fixture
def second_connection(world) -> int:
    return Connection.objects.create(workspace=world.workspace, name="zz-lake", kind=Connection.Kind.DUCKDB,
                                     config={"database": "lake.duckdb"}).pk


def test_a_link_naming_a_connection_chooses_it_for_the_open_tab(second_connection, open_editor, eager_celery):
    page = open_editor()
    first = page.locator("select[name=connection]").input_value()
    assert first != str(second_connection)
    run_with_keys(page, "select 1 as kept")
    expect(page.locator("#results #execution-state")).to_have_text("succeeded", timeout=15_000)
    page.goto(page.url.split("?")[0] + f"?connection={second_connection}")  # e.g. from the schema page
    expect(page.locator("#results #execution-state")).to_have_text("succeeded")  # the tab is restored
    page.wait_for_timeout(300)
    expect(page.locator("select[name=connection]")).to_have_value(str(second_connection))
    assert page.evaluate("CREditor.text()") == "select 1 as kept"  # the tab keeps its SQL
    assert not page.problems, page.problems


def test_the_first_rows_show_while_the_result_is_stored(open_editor, settings, monkeypatch):
    """An inline run (sqlwarehouse.inline): the answer to Run carries the first rows, shown at once
    and marked as being stored; the stored result then replaces them without another key press."""
    from sqlwarehouse import results

    settings.SQL_INLINE_RUNS = 2
    release, real_store = threading.Event(), results.blob_store_file

    def held_store(**kwargs):
        assert release.wait(30)
        return real_store(**kwargs)

    monkeypatch.setattr(results, "blob_store_file", held_store)
    page = open_editor()
    run_with_keys(page, "select range as n, range * 2 as m from range(250)")
    expect(page.locator("#results #storing")).to_have_text("First 100 rows; reading and storing the result…",
                                                           timeout=15_000)
    expect(page.locator("#results #result tr")).to_have_count(101)
    expect(page.locator("#results #execution-state")).to_have_text("running")
    shot(page, "5-first-rows-while-storing")
    release.set()
    expect(page.locator("#results #execution-state")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#results .pagination")).to_contain_text("Page 1 of 3")
    expect(page.locator("#results a", has_text="CSV")).to_be_visible()
    shot(page, "6-stored")
    assert not page.problems, page.problems
