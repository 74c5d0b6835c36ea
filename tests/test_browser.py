"""The run page in a real browser, against the README's run command (``scripts/run.sh``).

Debian's Chromium driven by Playwright signs in, clicks "Run now" on the medallion job, and
watches the run page: the status badge and the log follow the run live through htmx polling,
without a page reload, and the polling stops once the run has ended. Then the published CSV
artifact shows its preview table. Screenshot of the finished run page: ``tmp_path/run.png``,
copied to ``/tmp/controlroom-run.png`` for a human to look at.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from playwright.sync_api import Page, Request, Response, expect

from tests.chromium import chromium
from tests.processes import RunningServer, run_command

# Its stack is the run command's own (embedded SQLite): the same in either pass, so it runs once.
pytestmark = [pytest.mark.slow, pytest.mark.once]
RUN_TIMEOUT_MS = 90_000
SCREENSHOT_COPY = Path("/tmp/controlroom-run.png")
RUN_URL = re.compile(r"/w/demo/runs/\d+/$")


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium() as browser:
        yield browser.new_context(viewport={"width": 1280, "height": 900}).new_page()


def seqs_in(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'class="line[^"]*" data-seq="(\d+)"', html)]


def test_run_page_follows_the_run_live(page: Page, tmp_path: Path) -> None:
    problems: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_response(response: Response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            problems.append(f"HTTP {response.status} {response.request.method} {response.url}")

    def on_request(request: Request) -> None:
        requests.append(request.url)

    page.on("response", on_response)
    page.on("request", on_request)
    with run_command(tmp_path) as server:
        try:
            watch_a_run(page, server, tmp_path, requests)
        except Exception as exc:
            raise AssertionError(f"{exc}\n--- run.sh log (tail) ---\n{server.log_tail()}") from exc
    assert not problems, "\n".join(problems)


def watch_a_run(page: Page, server: RunningServer, tmp_path: Path, requests: list[str]) -> None:
    page.goto(server.url + "accounts/login/")
    page.fill("input[name=login]", "demo")
    page.fill("input[name=password]", server.password)
    page.click("main button[type=submit]")
    page.wait_for_url(server.url + "w/demo/")  # the workspace's overview
    page.get_by_role("link", name="Jobs", exact=True).first.click()
    page.wait_for_url(server.url + "w/demo/jobs/")

    page.click("main a[href$='/jobs/medallion/']")
    page.wait_for_url("**/w/demo/jobs/medallion/")
    with page.expect_navigation(url=RUN_URL, wait_until="domcontentloaded") as navigation:
        page.get_by_role("button", name="Run now").click()
    landed = navigation.value
    assert landed is not None and landed.ok, landed
    page.evaluate("window.__marker = 1")
    navigation_type = page.evaluate("performance.navigation.type")
    first_count = page.locator("#log .line").count()
    served = seqs_in(landed.text())  # the lines that came with the page, before any htmx request
    assert navigation_type != 1, "the run page was reloaded, not navigated to"
    assert "RUN_SUCCEEDED" not in landed.text(), "the run had ended before its page was served; nothing to watch"
    run_url = page.url

    state = page.locator("#run-state")
    expect(state).to_have_text(re.compile(r"^\s*(succeeded|failed)\s*$"), timeout=RUN_TIMEOUT_MS)
    log = page.locator("#log")
    assert state.inner_text().strip() == "succeeded", log.inner_text()
    expect(log).to_contain_text("RUN_SUCCEEDED", timeout=RUN_TIMEOUT_MS)
    expect(log).to_contain_text("PHASE_SUCCEEDED [publish#1]")

    # Same document all along: the marker survived and the lines were appended in place.
    assert page.evaluate("window.__marker") == 1, "the page was reloaded while the run was watched"
    assert page.evaluate("performance.navigation.type") == navigation_type
    assert page.url == run_url
    seqs = [int(s) for s in page.locator("#log .line").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert len(seqs) > first_count, f"no log lines appeared after landing ({first_count} -> {len(seqs)})"
    assert max(seqs) > max(served, default=0), f"served {served}, shown {seqs}"
    assert seqs == list(range(1, len(seqs) + 1)), f"log lines duplicated, missing or out of order: {seqs}"

    # Both pollers stop once the run has ended.
    page.wait_for_timeout(1500)
    polled = len(requests)
    page.wait_for_timeout(2500)
    assert requests[polled:] == [], f"still polling after the run ended: {requests[polled:]}"

    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
    shutil.copyfile(tmp_path / "run.png", SCREENSHOT_COPY)

    page.locator("#run-status").get_by_role("link", name="gold_revenue_by_country.csv").click()
    page.wait_for_url(re.compile(r"/w/demo/artifacts/\d+/$"))
    expect(page.locator("h1")).to_have_text("gold_revenue_by_country.csv")
    headers = page.locator("#preview th").all_inner_texts()
    assert "country" in headers, headers
    assert page.locator("#preview tr:has(td)").count() == 6, page.locator("#preview").inner_text()
    download = page.get_by_role("link", name="Download")
    expect(download).to_be_visible()
    href = download.get_attribute("href")
    assert href, "the Download link has no href"
    fetched = page.request.get(urljoin(page.url, href))
    assert fetched.ok and fetched.text().splitlines()[0].startswith("country,"), fetched.text()[:200]
