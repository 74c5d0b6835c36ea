"""Runs one part of a SQL execution in a fresh process and reports its peak RSS, so a test can
hold the worker (storing a result) and the web server (exporting it) to a memory ceiling.

    python -m tests.rss_probe execute EXECUTION_ID
    python -m tests.rss_probe export EXECUTION_ID csv|parquet
    python -m tests.rss_probe floor 0          (imports only: the floor to compare with)

Prints one JSON line: {"peak_rss_mb": ..., "peak_anon_mb": ..., "seconds": ..., "bytes": ...,
"lines": ...}. ``peak_anon_mb`` is the most anonymous memory (RssAnon, sampled every 10 ms) the
process held: what it allocated, without the shared libraries' file pages, whose resident share
depends on the page cache (a freshly installed virtualenv maps ~40 MB more of pyarrow, duckdb and
deltalake at import than one whose files were read long ago). The database is the one
DATABASE_URL names (the test's own).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over exec from the forked parent, so a child of a big test process would report its size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class AnonPeak:
    """Samples RssAnon every 10 ms in a daemon thread; ``mb`` is the largest value seen."""

    def __init__(self) -> None:
        import threading

        self.kb = self._now()
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def _now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        raise RuntimeError("no RssAnon in /proc/self/status")

    def _sample(self) -> None:
        while True:
            self.kb = max(self.kb, self._now())
            time.sleep(0.01)

    @property
    def mb(self) -> float:
        self.kb = max(self.kb, self._now())
        return self.kb / 1024


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlroom.settings")
    import django

    django.setup()
    from django.test import RequestFactory

    from sqlwarehouse.execution import query_execute
    from sqlwarehouse.models import QueryExecution
    from sqlwarehouse.views import execution_export

    anon = AnonPeak()
    action, execution_id = argv[0], int(argv[1])
    began, size, lines = time.monotonic(), 0, 0
    if action == "execute":
        query_execute(execution_id=execution_id)
    elif action == "floor":
        import pyarrow.csv  # noqa: F401  (what an export loads)
    else:
        execution = QueryExecution.objects.select_related("user", "workspace").get(pk=execution_id)
        request = RequestFactory().get("/export")
        request.user = execution.user
        response = execution_export(request, execution.workspace.slug, execution_id, argv[2])
        for chunk in response.streaming_content:
            size += len(chunk)
            lines += chunk.count(b"\n")
    peak_mb = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1), "peak_anon_mb": round(anon.mb, 1),
                      "seconds": round(time.monotonic() - began, 2),
                      "bytes": size, "lines": lines}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
