"""The README's run command, end to end over real HTTP: ``scripts/run.sh`` on embedded defaults
serves the demo, a signed-in user runs the medallion job and the lakehouse job to success through
the HTML forms (the lakehouse one on the embedded catalog: no server; its tables then listed on the
tables page), the API refuses a request without a token, a worker killed with SIGKILL is restarted by the
supervisor while the web keeps answering, and Ctrl-C (SIGINT to the process group) stops every
child it started.

No ``db`` fixture: the test speaks only HTTP (urllib + a cookie jar) to the server it starts.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlroom.supervisor import spark_available
from tests.processes import METRICS_TOKEN, STOP_TIMEOUT, RunningServer, run_command

# make run adds a Celery worker on the spark queue where pyspark and a JDK 17 are installed.
CHILDREN = {"web", "worker", "beat"} | ({"spark-worker"} if spark_available() else set())

# Its stack is the run command's own (embedded SQLite): the same in either pass, so it runs once.
pytestmark = [pytest.mark.slow, pytest.mark.once]
RUN_TIMEOUT = 90.0
REQUEST_ID = "e2e-run-command.42"
# What controlroom/supervisor.py prints when it starts a child; the last one per name is current.
STARTED = re.compile(r"(?:started|restarted) (web|worker|beat|spark-worker) \(pid (\d+)\)")


@dataclass
class Page:
    status: int
    url: str
    headers: Message
    text: str


class Web:
    """A minimal browser: cookies, redirects followed, HTTP errors returned rather than raised."""

    def __init__(self, base: str) -> None:
        self.base = base
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def open(self, path: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Page:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        url = urllib.parse.urljoin(self.base, path)
        request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310 (http://127.0.0.1)
        try:
            with self.opener.open(request, timeout=30) as response:
                return Page(response.status, response.geturl(), response.headers, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Page(exc.code, exc.geturl(), exc.headers, exc.read().decode(errors="replace"))


@dataclass
class Form:
    action: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    options: dict[str, list[str]] = field(default_factory=dict)


class FormParser(HTMLParser):
    """The inputs (name -> value) and selects (name -> options) of the form with ``form_id``."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.form, self.inside, self.select = form_id, Form(), False, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form" and attr.get("id") == self.form_id:
            self.inside, self.form.action = True, attr.get("action", "")
        elif self.inside and tag == "input" and attr.get("name"):
            self.form.fields[attr["name"]] = attr.get("value", "")
        elif self.inside and tag == "select":
            self.select = attr.get("name", "")
            self.form.options[self.select] = []
        elif self.inside and tag == "option" and self.select:
            self.form.options[self.select].append(attr.get("value", ""))

    def handle_data(self, data: str) -> None:
        options = self.form.options.get(self.select)
        if self.inside and options is not None and options and not options[-1]:
            options[-1] = data.strip()  # <option>dev</option>: the text is the value

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self.select = ""
        elif tag == "form":
            self.inside = False


def parse_form(html: str, form_id: str) -> Form:
    parser = FormParser(form_id)
    parser.feed(html)
    return parser.form


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, f"no csrfmiddlewaretoken in:\n{html[:2000]}"
    return found.group(1)


def run_state(html: str) -> str:
    found = re.search(r'id="run-state">\s*(\w+)\s*<', html)
    return found.group(1) if found else "?"


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", html)))


def children(server: RunningServer) -> dict[str, int]:
    """The current pid of each supervised child, from the supervisor's own lines."""
    return {name: int(pid) for name, pid in STARTED.findall(server.log_path.read_text(errors="replace"))}


def live_processes(pgid: int) -> set[int]:
    """Pids of the processes still running (not zombies) in the process group ``pgid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else []
        except OSError:
            continue
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            found.add(int(entry.name))
    return found


def gone_soon(pgid: int, timeout: float = 5.0) -> bool:
    """True once nothing of the group runs any more (a SIGKILLed process takes a moment to exit)."""
    deadline = time.monotonic() + timeout
    while live_processes(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not live_processes(pgid)


def sign_in(web: Web, server: RunningServer) -> Page:
    """Sign in as demo with the password the command printed; returns the page it lands on."""
    login = web.open("accounts/login/")
    assert login.status == 200, login.text[:2000]
    return web.open("accounts/login/", {"csrfmiddlewaretoken": csrf_token(login.text), "login": "demo",
                                        "password": server.password})


def trigger_demo_run(web: Web, job_slug: str = "medallion") -> Page:
    """Press Run now on a demo job with the form exactly as the page renders it."""
    job = web.open(f"w/demo/jobs/{job_slug}/")
    form = parse_form(job.text, "trigger-form")
    assert form.action and "csrfmiddlewaretoken" in form.fields, job.text[:3000]
    return web.open(urllib.parse.urljoin(job.url, form.action), {**form.fields, "environment": "dev"})


def wait_for_run(web: Web, run: Page, timeout: float = RUN_TIMEOUT) -> Page:
    deadline, page = time.monotonic() + timeout, run
    while run_state(page.text) not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        page = web.open(run.url)
    return page


def test_run_command_serves_the_demo_end_to_end(tmp_path: Path) -> None:
    with run_command(tmp_path) as server:
        web = Web(server.url)

        def why(message: str) -> str:
            return f"{message}\n--- run.sh log (tail) ---\n{server.log_tail()}"

        # Every response names its request; a well-formed incoming id is echoed back.
        minted = web.open("healthz")
        assert minted.status == 200 and json.loads(minted.text) == {"status": "ok"}, why(minted.text)
        assert re.fullmatch(r"[0-9a-f]{32}", minted.headers.get("X-Request-ID", "")), why(str(minted.headers))
        echoed = web.open("healthz", headers={"X-Request-ID": REQUEST_ID})
        assert echoed.headers.get("X-Request-ID") == REQUEST_ID, why(str(echoed.headers))

        # Sign in with the password the command printed; one workspace: home is its overview.
        home = sign_in(web, server)
        assert home.status == 200 and home.url == server.url + "w/demo/", why(f"{home.url}\n{home.text[:2000]}")
        assert "Runs in the last 24 hours" in home.text, why(home.text[:2000])
        jobs = web.open("w/demo/jobs/")
        assert "medallion" in jobs.text and "lakehouse" in jobs.text

        # Trigger the medallion job with the form exactly as the page renders it.
        job = web.open("w/demo/jobs/medallion/")
        form = parse_form(job.text, "trigger-form")
        assert form.action and "csrfmiddlewaretoken" in form.fields, why(job.text[:3000])
        assert {k: v for k, v in form.fields.items() if k.startswith("param_")} == {
            "param_source_file": "orders.csv", "param_min_amount": "0"}, form.fields
        assert "dev" in form.options.get("environment", []), form.options
        run = web.open(urllib.parse.urljoin(job.url, form.action), {**form.fields, "environment": "dev"})
        assert run.status == 200 and re.search(r"/w/demo/runs/\d+/$", run.url), why(f"{run.url}\n{run.text[:3000]}")

        page = wait_for_run(web, run)
        log = text_of(page.text)
        assert run_state(page.text) == "succeeded", why(f"run {run.url} is {run_state(page.text)}:\n{log[-3000:]}")
        assert "RUN_SUCCEEDED" in log and "PHASE_SUCCEEDED [publish#1]" in log, why(log[-3000:])
        assert "gold_revenue_by_country.csv" in page.text, why(log[-3000:])

        # The lakehouse demo, the same way: Iceberg and Delta tables on the embedded catalog.
        job = web.open("w/demo/jobs/lakehouse/")
        form = parse_form(job.text, "trigger-form")
        assert {k: v for k, v in form.fields.items() if k.startswith("param_")} == {
            "param_source_file": "orders.csv"}, form.fields
        run = web.open(urllib.parse.urljoin(job.url, form.action), {**form.fields, "environment": "dev"})
        assert run.status == 200 and re.search(r"/w/demo/runs/\d+/$", run.url), why(f"{run.url}\n{run.text[:3000]}")
        page = wait_for_run(web, run)
        log = text_of(page.text)
        assert run_state(page.text) == "succeeded", why(f"run {run.url} is {run_state(page.text)}:\n{log[-3000:]}")
        assert "PHASE_SUCCEEDED [check_gold#1]" in log, why(log[-3000:])
        assert "check refunds to review (sql, warn) warn: 26 failing row(s)" in log, why(log[-3000:])
        assert "failing_rows.parquet" in page.text, why(log[-3000:])
        tables = web.open("w/demo/tables/")
        listed = re.findall(r'<tr class="table-row"><td><a [^>]+>([\w.]+)</a></td>\s*<td><span class="badge">(\w+)<',
                            tables.text)
        assert sorted(listed) == [("bronze.orders", "iceberg"), ("gold.daily_revenue", "delta"),
                                  ("gold.revenue_by_country", "iceberg"), ("silver.orders", "iceberg")], \
            why(tables.text[-3000:])

        # Ready, and the metrics add up over gunicorn's two workers, the Celery worker and beat.
        ready = web.open("readyz")
        assert ready.status == 200 and all(c["ok"] for c in json.loads(ready.text)["checks"].values()), ready.text
        scrape = Web(server.url).open("metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scrape.status == 200, why(scrape.text[:500])
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(scrape.text) for s in f.samples}

        def total(name: str, **labels: str) -> float:
            return sum(v for (n, got), v in samples.items() if n == name and set(labels.items()) <= set(got))

        assert total("controlroom_runs_total", job_slug="medallion", state="succeeded") == 1, scrape.text[:3000]
        assert total("controlroom_runs_total", job_slug="lakehouse", state="succeeded") == 1
        assert total("controlroom_celery_worker_up") >= 1  # the worker's own beat, written by the worker
        assert total("controlroom_table_freshness_seconds", table="gold.daily_revenue") > 0
        # Two /healthz requests above, whichever of the two web processes took them: shared files.
        assert total("controlroom_http_request_duration_seconds_count", view="healthz") >= 2
        assert Web(server.url).open("metrics").status == 404  # no token: nothing

        # The JSON API wants a bearer token; a signed-in session does not count.
        for client in (web, Web(server.url)):
            api = client.open("api/v1/workspaces/demo/runs", headers={"X-Request-ID": REQUEST_ID})
            assert api.status == 401, why(f"{api.status} {api.text[:500]}")
            assert api.headers.get_content_type() == "application/json", api.headers
            assert json.loads(api.text)["error"]["code"] == "unauthenticated", api.text
            assert api.headers.get("X-Request-ID") == REQUEST_ID

        assert_ctrl_c_stops_everything(server)


def test_run_command_restarts_a_worker_killed_with_sigkill(tmp_path: Path) -> None:
    """kill -9 of the Celery worker: the supervisor names the signal, kills the worker's orphaned
    pool, starts a new worker; the web and beat are untouched, and runs still complete (the one
    in flight is redelivered or reaped, a new one runs on the new worker)."""
    with run_command(tmp_path) as server:
        web = Web(server.url)

        def why(message: str) -> str:
            return f"{message}\n--- run.sh log (tail) ---\n{server.log_tail()}"

        assert sign_in(web, server).status == 200
        before = children(server)
        assert set(before) == CHILDREN, why(str(before))
        in_flight = trigger_demo_run(web)
        assert re.search(r"/w/demo/runs/\d+/$", in_flight.url), why(in_flight.url)

        os.kill(before["worker"], signal.SIGKILL)
        assert web.open("healthz").status == 200  # the web does not depend on the worker
        deadline = time.monotonic() + 30
        while children(server)["worker"] == before["worker"] and time.monotonic() < deadline:
            time.sleep(0.2)
        after = children(server)
        assert after["worker"] != before["worker"], why("the worker was not restarted")
        log = server.log_path.read_text(errors="replace")
        assert f" worker (pid {before['worker']}) died after" in log, why("no line names the dead worker")
        assert re.search(rf"worker \(pid {before['worker']}\) died after \d+ s: killed by SIGKILL; restarting in",
                         log), why("the line does not give the reason")
        assert gone_soon(before["worker"]), why("the dead worker's pool processes were left running")
        assert (after["web"], after["beat"]) == (before["web"], before["beat"]) and log.count(" died after ") == 1

        page = wait_for_run(web, in_flight)
        assert run_state(page.text) == "succeeded", why(f"in-flight run: {text_of(page.text)[-2000:]}")
        page = wait_for_run(web, trigger_demo_run(web))
        assert run_state(page.text) == "succeeded", why(f"run after the restart: {text_of(page.text)[-2000:]}")
        assert web.open("w/demo/jobs/").status == 200

        assert_ctrl_c_stops_everything(server)


def assert_ctrl_c_stops_everything(server: RunningServer) -> None:
    started = children(server)
    began = time.monotonic()
    server.interrupt()
    gone = server.wait_group_gone(STOP_TIMEOUT)
    left = "" if gone else server.group_members()
    assert gone, (f"{time.monotonic() - began:.1f} s after SIGINT run.sh exited={server.proc.poll() is not None}, "
                  f"processes still in its group:\n{left}\n--- run.sh log (tail) ---\n{server.log_tail()}")
    assert server.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pgid, 0)
    stopping = "stopping web, worker, beat and spark-worker" if "spark-worker" in CHILDREN else \
        "stopping web, worker and beat"
    assert stopping in server.log_path.read_text(errors="replace")
    # The children run in sessions of their own (Ctrl-C in a terminal reaches only the supervisor):
    # each of them, and whatever it started, must be gone too.
    assert set(started) == CHILDREN, server.log_tail()
    left = {name: pid for name, pid in started.items() if not gone_soon(pid, 1.0)}
    assert not left, f"still running after Ctrl-C: {left}\n{server.log_tail()}"
