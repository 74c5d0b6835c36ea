"""The run page's log in Chromium, served by Django (pytest-django's live server): filter to one
phase, search with highlighted matches, then load earlier lines into the same log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from runs.models import EventType, Run
from tests.chromium import chromium
from tests.test_run_logs import log_lines, make_run, write

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def long_log(world, django_capture_on_commit_callbacks) -> Run:
    """Phase a: 300 lines; phase b: 700 lines, every one with 'needle' (made before the browser's
    event loop starts, since Django's ORM refuses to run inside it)."""
    run = make_run(world, django_capture_on_commit_callbacks)
    write(run, [("a", EventType.PHASE_CLAIMED, "a claimed, attempt 1"), *log_lines("a", 300, "a says"),
                ("b", EventType.PHASE_CLAIMED, "b claimed, attempt 1"), *log_lines("b", 700, "b finds a Needle at")])
    return run


@pytest.fixture
def signed_in(world, live_server, client) -> Iterator[BrowserContext]:
    """A browser context whose session cookie is the viewer's."""
    client.force_login(world.users["viewer"])
    cookie = client.cookies["sessionid"].value
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
        yield context


def test_filter_search_and_load_earlier(long_log, live_server, signed_in):
    problems: list[str] = []
    page = signed_in.new_page()
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(f"{live_server.url}/w/acme/runs/{long_log.pk}/")
    lines = page.locator("#log .line")
    expect(lines).to_have_count(500)
    at_bottom = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 5"
    page.wait_for_function(f"() => ({at_bottom})(document.getElementById('log'))")  # opens on the newest line
    expect(page.locator("#log-summary")).to_contain_text("The last 500 lines")

    page.select_option("#log-filters select[name=phase]", "a")
    page.click("#log-filters button[type=submit]")
    page.wait_for_url("**phase=a**")
    expect(lines).to_have_count(301)  # its claim and its 300 lines
    expect(page.locator("#log .line .phase").first).to_have_text("[a#1]")
    assert page.locator("#log-earlier").count() == 0

    page.select_option("#log-filters select[name=phase]", "b")
    page.fill("#log-filters input[name=q]", "needle")
    page.click("#log-filters button[type=submit]")
    page.wait_for_url("**q=needle**")
    expect(lines).to_have_count(500)
    expect(page.locator("#log mark").first).to_have_text("Needle")
    expect(page.locator("#log-summary")).to_contain_text("the last 500 matches are shown")
    newest = page.locator("#log .line").last.get_attribute("data-seq")

    page.click("#log-earlier")  # scrolls the log to its top, where the button is
    expect(lines).to_have_count(700)
    # The lines that were in view stay in view: the 200 older ones (over 2,000 px) went in above.
    page.wait_for_function("() => document.getElementById('log').scrollTop > 2000")
    expect(page.locator("#log-earlier")).to_have_count(0)
    seqs = [int(s) for s in page.locator("#log .line").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(seqs) and len(set(seqs)) == 700 and str(seqs[-1]) == newest
    expect(page.locator("#log mark")).to_have_count(700)
    download = page.locator("#log-download")
    assert download.get_attribute("href").endswith("?phase=b&q=needle")
    assert not problems, problems
