"""The SQL editor's interactive latency, through the browser and the whole path: Ctrl-Enter in the
one-page editor to the first result row on screen, for a 25-row query, vs. the bare client's
time for the same query in the same run (the trino DB-API for Trino, with a new connection as a
script would open, and on a kept connection as the editor's engine keeps them; duckdb for DuckDB).

The stack is the README's run command (web under gunicorn, a Celery worker, beat) on a throwaway
PostgreSQL and Redis, with a real Trino; Debian's Chromium signs in as the demo user and runs
each query --repeat times per engine, alternating with the bare client. The browser time is
measured in the page (performance.now() at the key press to the first row in the DOM). Prints
medians, the ratio (target <= 1.1 on Trino) and the DuckDB time (target < 150 ms), then where
the editor's time went: in the browser (key press to the request, the server's time to the
first byte, the answer, the answer to the first row shown) and on the server (submit to the
claim, claim to the stored result; the rows show before they are stored: sqlwarehouse.inline).

    .venv/bin/python benchmarks/sql_interactive.py [--repeat 9] [--no-trino]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import _common  # sets up sys.path and the environment; must come first

# Each case: 25 rows. trino-agg reads 150,000 generated rows first: the same fixed cost on a
# longer query, to show how the ratio depends on the query's own time.
QUERIES = {"duckdb": "SELECT range AS n, range * 2 AS m FROM range(25)", "trino": "SELECT * FROM tpch.tiny.nation",
           "trino-agg": "SELECT nationkey, count(*) AS customers, sum(acctbal) AS balance FROM tpch.sf1.customer "
                        "GROUP BY nationkey"}
# Installed before each run: the time of the Ctrl-Enter key press, then of the first cell of a
# result panel that replaced the one on screen (a restored tab may already show an older result).
WATCH_JS = """() => {
  const old = document.getElementById('results');
  if (old) old.dataset.old = '1';
  window.__pressed = null; window.__firstRow = null;
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.ctrlKey && window.__pressed === null) window.__pressed = performance.now();
  }, true);
  const check = () => {
    if (document.querySelector('#results:not([data-old]) #result tr td')) {
      window.__firstRow = performance.now();
      window.__rows = document.querySelectorAll('#results:not([data-old]) #result tr').length - 1;
      return true;
    }
    return false;
  };
  const observer = new MutationObserver(() => { if (check()) observer.disconnect(); });
  observer.observe(document.body, {childList: true, subtree: true});
}"""


@contextlib.contextmanager
def run_command(env: dict[str, str], data_dir: Path):
    """scripts/run.sh on PostgreSQL and Redis (the same processes as production, fewer of them)."""
    from tests.processes import RunningServer, _wait_up, run_command_env, stop
    from tests.servers import HOST, free_port

    port = free_port()
    log_path = data_dir / "run.log"
    full_env = {**run_command_env(data_dir / "data", port), **env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=_common.REPO, env=full_env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = RunningServer(url=f"http://{HOST}:{port}/", password="", log_path=log_path, proc=proc)
    try:
        _wait_up(server)
        yield server
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--no-trino", action="store_true", help="DuckDB only (no Trino server)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(_common.servers(redis=True))
        trino = None
        if not args.no_trino:
            from tests.trino_server import TrinoServer

            _common.say("starting Trino")
            trino = TrinoServer()
            trino.start()
            stack.callback(trino.stop)
            env["CONTROLROOM_SECRET_BENCH_TRINO_PASSWORD"] = unquote(urlsplit(trino.credentials_url).password or "")
        _common.say("starting the run command")
        data_dir = Path(os.environ["CONTROLROOM_DATA_DIR"])
        server = stack.enter_context(run_command(env, data_dir))
        connections = prepare(trino)
        _common.say("")
        report(args, server, trino, connections, data_dir)


def prepare(trino) -> dict[str, int]:
    """The demo workspace's connections to measure: its DuckDB warehouse and a Trino one."""
    from connections.models import Connection, SecretRef
    from controlroom.models import Workspace

    workspace = Workspace.objects.get(slug="demo")
    found = {"duckdb": Connection.objects.get(workspace=workspace, kind="duckdb", name="warehouse").pk}
    if trino is not None:
        parts = urlsplit(trino.credentials_url)
        secret = SecretRef.objects.create(workspace=workspace, name="bench-trino", source="env",
                                          locator="CONTROLROOM_SECRET_BENCH_TRINO_PASSWORD")
        found["trino"] = Connection.objects.create(
            workspace=workspace, name="trino", kind="trino", password_ref=secret,
            config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme, "user": trino.user,
                    "verify": str(trino.ca_file), "catalog": "tpch", "schema": "tiny"}).pk
        found["trino-agg"] = found["trino"]
    return found


# Where the browser's time went, from the run request's resource timing: key press to the request
# leaving, to its answer's first byte (the server), to its last byte, and to the first row shown.
PHASES_JS = """() => {
  const run = performance.getEntriesByType('resource').filter((e) => e.name.includes('/sql/run/')).pop();
  if (!run) return null;  // not recorded (the browser's timing buffer): left out of the medians
  return [run.requestStart - window.__pressed, run.responseStart - run.requestStart,
          run.responseEnd - run.responseStart, window.__firstRow - run.responseEnd];
}"""


def breakdown(connection_id: int, since, until) -> tuple[float, float]:
    """Medians, over the executions between ``since`` and ``until``: submit to claim, and claim
    to the stored result."""
    from sqlwarehouse.models import QueryExecution

    queued, executing = [], []
    for e in QueryExecution.objects.filter(connection_id=connection_id, started_at__gte=since,
                                           started_at__lt=until, finished_at__isnull=False):
        claimed = e.finished_at.timestamp() - e.duration_ms / 1000
        queued.append(claimed - e.started_at.timestamp())
        executing.append(e.duration_ms / 1000)
    return statistics.median(queued or [0.0]), statistics.median(executing or [0.0])


def report(args, server, trino, connections: dict[str, int], data_dir: Path) -> None:
    import duckdb
    from django.utils import timezone
    from playwright.sync_api import sync_playwright

    from tests.chromium import CHROMIUM, CHROMIUM_ARGS
    from tests.trino_server import trino_connect

    kept_session = None

    def bare(engine: str, *, kept: bool = False) -> float:
        """One query as a script would run it (a new connection), or, ``kept``, on a connection
        kept from the last (as the editor's engine keeps them: sqlwarehouse.engines.trino)."""
        nonlocal kept_session
        began = time.perf_counter()
        if engine.startswith("trino") and kept:  # not closed: closing would close the kept session
            conn = trino_connect(trino.credentials_url, user="demo~ro", ca_file=trino.ca_file)
            kept_session = kept_session or conn._http_session
            conn._http_session = kept_session
            cursor = conn.cursor()
            cursor.execute(QUERIES[engine])
            rows = cursor.fetchall()
        elif engine.startswith("trino"):
            with trino_connect(trino.credentials_url, user="demo~ro", ca_file=trino.ca_file) as conn:
                cursor = conn.cursor()
                cursor.execute(QUERIES[engine])
                rows = cursor.fetchall()
        else:
            with duckdb.connect() as conn:
                rows = conn.execute(QUERIES[engine]).fetchall()
        assert len(rows) == 25, len(rows)
        return time.perf_counter() - began

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.goto(server.url + "accounts/login/")
        page.fill('input[name="login"]', "demo")
        page.fill('input[name="password"]', server.password)
        page.click('button[type="submit"]')
        page.wait_for_url(re.compile(r"/w/"))

        def browser_run(engine: str) -> float:
            page.goto(f"{server.url}w/demo/sql/?connection={connections[engine]}")
            page.wait_for_function("() => window.CREditor !== undefined")
            page.evaluate("(sql) => window.CREditor.setText(sql)", QUERIES[engine])
            page.locator(".cm-content").click()
            page.evaluate(WATCH_JS)
            page.keyboard.press("Control+Enter")
            try:
                page.wait_for_function("() => window.__firstRow !== null", timeout=30_000)
            except Exception:
                page.screenshot(path=str(data_dir / "failed.png"), full_page=True)
                raise SystemExit(f"{engine}: no rows on screen after 30 s (screenshot {data_dir / 'failed.png'}); "
                                 f"the run command's log:\n{server.log_tail(40)}") from None
            seconds = page.evaluate("() => window.__firstRow - window.__pressed") / 1000
            if (split := page.evaluate(PHASES_JS)) is not None:
                phases[engine].append(split)
            return seconds

        print(f"SQL editor, Ctrl-Enter to the first row on screen (25 rows): median of {args.repeat}, "
              "alternating with the bare client, same run")
        windows, phases = {}, {engine: [] for engine in connections}
        for engine in connections:
            bare(engine), browser_run(engine)  # warm both paths
            since = timezone.now()
            windows[engine] = (since, None)
            times: dict[str, list[float]] = {"bare": [], "editor": [], "kept": []}
            for i in range(args.repeat):
                _common.say(f"{engine}: round {i + 1}/{args.repeat}")
                order = (("bare", bare), ("editor", browser_run))
                if engine.startswith("trino"):
                    order += (("kept", lambda e: bare(e, kept=True)),)
                for name, fn in order if i % 2 == 0 else order[::-1]:
                    times[name].append(fn(engine))
            _common.say("")
            b, e = statistics.median(times["bare"]), statistics.median(times["editor"])
            windows[engine] = (since, timezone.now())
            met = "met" if e < 0.15 else "not met"
            target = "(target <= 1.1)" if engine.startswith("trino") else f"(target < 150 ms: {met})"
            print(f"  {engine:9}  bare client {b * 1000:7.1f} ms   editor {e * 1000:7.1f} ms   "
                  f"ratio {e / b:6.2f}  {target}   p90 editor {_common.pct(times['editor'], 90) * 1000:.0f} ms")
            if engine.startswith("trino"):
                k = statistics.median(times["kept"])
                print(f"  {'':9}  bare client on a kept connection {k * 1000:7.1f} ms   ratio {e / k:6.2f}")
        browser.close()
    for engine, (since, until) in windows.items():  # the ORM after Playwright's event loop has closed
        queued, executing = breakdown(connections[engine], since, until)
        split = [statistics.median([p[i] for p in phases[engine][-args.repeat:]] or [0.0]) for i in range(4)]
        print(f"  {engine:9}  in the browser: key to request {split[0]:.1f} ms, server {split[1]:.1f} ms, "
              f"answer {split[2]:.1f} ms, answer to first row {split[3]:.1f} ms; on the server: submit to "
              f"claim {queued * 1000:.1f} ms, claim to the stored result {executing * 1000:.1f} ms (medians)")


if __name__ == "__main__":
    main()
