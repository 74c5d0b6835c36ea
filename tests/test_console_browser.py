"""The ops console in Chromium, served by Django's live server (workers eager in the server
thread): the overview, the jobs list's health and pause toggle, a grid cell opening that phase's
log, a repair of the failed phase, and the schedule form's errors and next fire times.
Screenshots go to /tmp/controlroom-<page>.png for a human to look at."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from runs.models import Run
from runs.services.jobs import job_create
from runs.services.runs import run_create
from runs.services.schedules import schedule_set
from tests.chromium import chromium

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
FLAKY = """name: flaky
notifications: {events: [failure, recovery], email: [oncall@example.com]}
phases:
  - {name: load, kind: sql, config: {table: t, sql: "select 1 as x"}}
  - {name: check, kind: sql, depends_on: [load], config: {sql: "select count(*) from upstream_flags"}}
  - {name: publish, kind: sql, depends_on: [check], config: {table: p, sql: "select * from t"}}
"""


@pytest.fixture
def operator_browser(world, live_server, client, failed_twice) -> Iterator[BrowserContext]:
    client.force_login(world.users["operator"])
    cookie = client.cookies["sessionid"].value
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
        yield context


@pytest.fixture
def failed_twice(world, eager_celery, django_capture_on_commit_callbacks):
    """Made before the browser's event loop starts (the ORM refuses to run inside it)."""
    operator = world.access("operator")
    job = job_create(access=operator, spec_text=FLAKY)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            run_create(access=operator, job=job)
    schedule_set(access=operator, job=job, environment="dev", cron="0 6 * * 1-5", timezone="Europe/Berlin")
    return list(Run.objects.filter(job=job).order_by("id"))


def shot(page: Page, name: str) -> None:
    page.screenshot(path=f"/tmp/controlroom-{name}.png", full_page=True)


def test_an_operator_finds_fixes_and_repairs_a_failing_job(world, live_server, operator_browser, failed_twice,
                                                           settings):
    problems: list[str] = []
    page = operator_browser.new_page()
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    _first, second = failed_twice

    page.goto(f"{live_server.url}/w/acme/")
    expect(page.locator('#last-24h strong[data-state="failed"]')).to_have_text("2")
    expect(page.locator("#failing-jobs")).to_contain_text("flaky")
    expect(page.locator("#failures")).to_contain_text("upstream_flags")
    shot(page, "overview")

    page.get_by_role("link", name="Jobs", exact=True).first.click()
    row = page.locator('tr[data-job="flaky"]')
    expect(row.locator(".strip .sq.failed")).to_have_count(2)
    expect(row.locator(".success-rate")).to_have_text("0%")
    row.get_by_role("button", name="Pause").click()
    expect(page.locator(".messages")).to_contain_text("schedule paused")
    expect(page.locator('tr[data-job="flaky"]')).to_contain_text("paused")
    shot(page, "jobs")
    page.locator('tr[data-job="flaky"]').get_by_role("button", name="Resume").click()
    expect(page.locator(".messages")).to_contain_text("schedule resumed")

    page.locator('tr[data-job="flaky"]').get_by_role("link", name="grid").click()
    expect(page.locator("#grid .run-col")).to_have_count(2)
    shot(page, "grid")
    page.locator(f'#grid a.sq[href*="/runs/{second.pk}/?phase=check"]').click()
    page.wait_for_url(re.compile(rf"/w/acme/runs/{second.pk}/\?phase=check"))
    expect(page.locator("#notifications")).to_contain_text("oncall@example.com")  # sent by the worker
    expect(page.locator("#notifications")).to_contain_text("sent")
    lines = page.locator("#log .line")
    expect(lines.first).to_be_visible()
    assert all("check" in text for text in lines.all_inner_texts() if "[" in text), lines.all_inner_texts()[:5]
    shot(page, "run-phase-log")

    # The upstream data arrives; repair only the failed phase (its downstream follows).
    import duckdb

    duckdb.connect(str(settings.WAREHOUSE_DIR / "acme" / "dev" / "warehouse.duckdb")).execute(
        "create table upstream_flags as select 1 as ok").close()
    page.locator("#repair summary").click()
    page.locator('#repair input[value="load"]').uncheck()
    page.locator('#repair input[value="check"]').check()
    page.get_by_role("button", name="Repair run").click()
    page.wait_for_url(re.compile(r"/w/acme/runs/\d+/$"))
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=20_000)
    expect(page.locator("h1").locator("..")).to_contain_text(f"repair of run #{second.pk}")
    expect(page.locator("#notifications")).to_contain_text("Recovery")  # success after a failure
    shot(page, "repaired")

    # A bad filter is named, a missing page keeps the navigation, the job column links to the job.
    page.goto(f"{live_server.url}/w/acme/runs/?status=exploded")
    expect(page.locator("#filter-error")).to_contain_text("'status' must be one of")
    page.get_by_role("link", name="flaky", exact=True).first.click()
    page.wait_for_url(re.compile(r"/w/acme/jobs/flaky/$"))
    page.goto(f"{live_server.url}/w/acme/runs/99999/")
    expect(page.locator("#error-message")).to_have_text("No run 99999 in this workspace.")
    page.get_by_role("link", name="Runs", exact=True).click()
    page.wait_for_url(re.compile(r"/w/acme/runs/$"))

    page.goto(f"{live_server.url}/w/acme/jobs/flaky/schedule/")
    expect(page.locator("#schedule-dev .next-fires time")).to_have_count(5)
    form = page.locator("#schedule-stage")
    form.locator('input[name="cron"]').fill("0 25 * * *")
    form.locator('input[name="timezone"]').fill("Mars/Base")
    form.get_by_role("button", name="Save stage schedule").click()
    expect(page.locator("#schedule-stage .schedule-errors li")).to_have_count(2)
    shot(page, "schedule-errors")
    assert not problems, problems
