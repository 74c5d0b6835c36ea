"""The Content-Security-Policy in a real browser, against the README's run command.

Debian's Chromium driven by Playwright (as in ``test_browser.py``) walks the pages whose
scripts matter under the policy: the job list, a run page whose log tail grows through htmx
polling, the SQL editor (CodeMirror, Ctrl-Enter), a result page with its chart, the artifact
page, the token page, and the admin site (signed in through ``/admin/`` by a staff user). Every
``securitypolicyviolation`` event and every console error is recorded; there must be none.
Then script injected into one of our pages must not run, while the same injection does run
in a context that bypasses CSP: the header, not luck, is what stops it.
Screenshots: ``tmp_path/*.png`` (the editor and the result page are copied to
``/tmp/controlroom-csp-*.png`` for a human to look at).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from tests.chromium import chromium
from tests.processes import REPO, RunningServer, run_command, run_command_env

# Its stack is the run command's own (embedded SQLite): the same in either pass, so it runs once.
pytestmark = [pytest.mark.slow, pytest.mark.once]
TIMEOUT_MS = 90_000
STAFF, STAFF_PASSWORD = "ops", "csp-staff-password-7"
RUN_URL = re.compile(r"/w/demo/runs/\d+/$")
RESULT_URL = re.compile(r"/w/demo/sql/\?execution=\d+$")  # the editor, its result below
SQL = "select 'north' as region, 3 as orders union all select 'south', 5 order by region"

# Installed before any page script: report violations to Python (that survives navigations),
# and count htmx requests per path so the test can tell polling happened.
LISTENERS = """
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolation({
  page: location.href, directive: e.violatedDirective, blocked: e.blockedURI,
  source: e.sourceFile, line: e.lineNumber, sample: e.sample,
}));
window.__htmxPaths = [];
document.addEventListener("htmx:afterRequest", (e) => {
  if (e.detail.successful) window.__htmxPaths.push(e.detail.pathInfo.requestPath);
});
"""

INJECT = """async () => {
  const script = document.createElement("script");
  script.textContent = "window.__injectedScript = 1";
  document.head.append(script);
  document.body.insertAdjacentHTML("beforeend", '<img src="data:," onerror="window.__injectedHandler = 1">');
  const link = document.createElement("a");
  link.href = "javascript:window.__injectedUrl = 1";
  document.body.append(link);
  link.click();
  const styled = document.createElement("div");
  styled.setAttribute("style", "color: rgb(1, 2, 3)");
  document.body.append(styled);
  await new Promise((resolve) => setTimeout(resolve, 500));
  return {
    script: window.__injectedScript || 0, handler: window.__injectedHandler || 0,
    url: window.__injectedUrl || 0, style: getComputedStyle(styled).color === "rgb(1, 2, 3)" ? 1 : 0,
  };
}"""


class Recorder:
    """Violations and console errors of every page of one browser context."""

    def __init__(self) -> None:
        self.violations: list[dict[str, Any]] = []
        self.console: list[str] = []

    def watch(self, context: BrowserContext) -> None:
        context.expose_function("__cspViolation", lambda violation: self.violations.append(violation))
        context.add_init_script(LISTENERS)
        context.on("console", self._on_console)
        context.on("weberror", lambda error: self.console.append(f"page error: {error.error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        # Chromium asks every page for /favicon.ico, which we do not serve.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.console.append(f"{message.text} ({message.location.get('url')})")

    def assert_clean(self) -> None:
        assert not self.violations, "CSP violations:\n" + "\n".join(map(str, self.violations))
        assert not self.console, "console errors:\n" + "\n".join(self.console)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with run_command(tmp_path) as running:
        port = running.url.rstrip("/").rsplit(":", 1)[1]
        made = subprocess.run(
            [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", STAFF,
             "--email", "ops@example.com"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**run_command_env(tmp_path / "data", int(port)), "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD},
        )
        assert made.returncode == 0, made.stderr
        yield running


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def sign_in(page: Page, username: str, password: str) -> None:
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert "/accounts/login/" not in page.url, page.locator("main").inner_text()


def assert_policy(header: str | None) -> None:
    assert header, "no Content-Security-Policy header"
    directives = dict(part.strip().split(" ", 1) for part in header.split(";"))
    assert directives["script-src"] == "'self'", header
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'", header
    assert directives["frame-ancestors"] == "'none'" and directives["base-uri"] == "'self'", header
    assert re.fullmatch(r"'self' 'nonce-[\w-]{16,}'", directives["style-src"]), header
    assert "unsafe" not in header, header


def test_pages_run_under_the_policy_and_injected_script_does_not(
        server: RunningServer, browser: Browser, tmp_path: Path) -> None:
    try:
        walk_the_pages(server, browser, tmp_path)
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- run.sh log (tail) ---\n{server.log_tail()}") from exc


def walk_the_pages(server: RunningServer, browser: Browser, tmp_path: Path) -> None:
    recorder = Recorder()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    recorder.watch(context)
    page = context.new_page()

    login = page.goto(server.url + "accounts/login/")
    assert login is not None
    assert_policy(login.headers.get("content-security-policy"))
    sign_in(page, "demo", server.password)

    # Job list, then a run whose log tail grows through htmx polling, without a reload.
    jobs = page.goto(server.url + "w/demo/jobs/")
    assert jobs is not None
    assert_policy(jobs.headers.get("content-security-policy"))
    assert page.evaluate("htmx.config.allowEval === false && htmx.config.includeIndicatorStyles === false")
    assert page.locator("style").count() == 0, "something injected a <style> element"
    page.click("main a[href$='/jobs/medallion/']")
    with page.expect_navigation(url=RUN_URL, wait_until="domcontentloaded") as navigation:
        page.get_by_role("button", name="Run now").click()
    served = navigation.value.text().count('class="line')
    page.evaluate("window.__marker = 1")
    expect(page.locator("#run-state")).to_have_text(re.compile(r"^\s*succeeded\s*$"), timeout=TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("RUN_SUCCEEDED", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__marker") == 1, "the run page was reloaded"
    assert page.locator("#log .line").count() > served, "no log line arrived after the page was served"
    log_polls = [p for p in page.evaluate("window.__htmxPaths") if "/log/?after=" in p]
    assert log_polls, page.evaluate("window.__htmxPaths")
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    # The artifact the run published.
    page.locator("#run-status").get_by_role("link", name="gold_revenue_by_country.csv").click()
    page.wait_for_url(re.compile(r"/w/demo/artifacts/\d+/$"))
    expect(page.locator("#preview th").first).to_be_visible()

    # The SQL editor: CodeMirror loads and is styled (its <style> carries the nonce), typing
    # reaches the form, Ctrl-Enter runs it and its result (with a chart) loads below the editor.
    page.goto(server.url + "w/demo/sql/")
    content = page.locator(".cm-editor .cm-content")
    expect(content).to_be_visible()
    assert page.eval_on_selector(".cm-editor", "e => getComputedStyle(e).borderTopColor") == "rgb(203, 213, 225)"
    content.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(SQL)
    assert page.eval_on_selector("#sql", "t => t.value") == SQL
    page.screenshot(path=str(tmp_path / "editor.png"), full_page=True)
    page.evaluate("window.__marker = 2")
    page.keyboard.press("Control+Enter")  # the result loads below the editor, without a navigation
    page.wait_for_url(RESULT_URL)
    expect(page.locator("#results #execution-state")).to_have_text("succeeded", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__marker") == 2, "the editor page was reloaded"
    expect(page.locator("#chart canvas")).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function("() => { const c = Chart.getChart(document.querySelector('#chart canvas'));"
                           " return c && c.data.labels.join() === 'north,south'; }", timeout=10_000)
    expect(page.locator("#result")).to_contain_text("south")
    page.screenshot(path=str(tmp_path / "result.png"), full_page=True)

    page.goto(server.url + "w/demo/tokens/")
    expect(page.locator("h1")).to_have_text("API tokens")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/accounts/login/"))

    # The admin site, reached as staff through /admin/, which signs in through our login.
    page.goto(server.url + "admin/")
    assert "/accounts/login/" in page.url, page.url
    sign_in(page, STAFF, STAFF_PASSWORD)
    page.wait_for_url(server.url + "admin/")
    expect(page.locator("#site-name")).to_be_visible()
    for path in ("admin/auth/user/", "admin/auth/user/add/", "admin/django_celery_beat/periodictask/add/"):
        response = page.goto(server.url + path)
        assert response is not None and response.ok, path
        assert_policy(response.headers.get("content-security-policy"))
        expect(page.locator("#content")).to_be_visible()
    page.screenshot(path=str(tmp_path / "admin.png"), full_page=True)

    recorder.assert_clean()
    for name in ("editor", "result"):
        shutil.copyfile(tmp_path / f"{name}.png", f"/tmp/controlroom-csp-{name}.png")

    # Injected script, event handler, javascript: URL and style attribute stay inert here...
    page.goto(server.url + "admin/")
    assert page.evaluate(INJECT) == {"script": 0, "handler": 0, "url": 0, "style": 0}
    blocked = {v["directive"] for v in recorder.violations}
    assert {"script-src-elem", "script-src-attr", "style-src-attr"} <= blocked, recorder.violations
    context.close()

    # ...and run in a context that ignores the header, so the header is what stopped them.
    bypass = browser.new_context(bypass_csp=True)
    control = bypass.new_page()
    control.goto(server.url + "accounts/login/")
    assert control.evaluate(INJECT) == {"script": 1, "handler": 1, "url": 1, "style": 1}
    bypass.close()
