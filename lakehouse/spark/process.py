"""Running a `spark` phase's driver program as a child process, and stopping its application.

``DriverProcess`` starts ``python -m lakehouse.spark.driver`` in its own process group, told to
die with the worker (parent-death signal), with the secret settings in a 0600 properties file
named by ``PYSPARK_SUBMIT_ARGS`` (never a command-line argument). Its output is read line by line:
``@@controlroom`` lines are the driver's announcements (application, progress, done), every other
line is the driver's log, masked before anyone sees it.

Stopping (cancel, timeout, a lost lease) sends SIGTERM (the driver cancels its jobs and stops the
session), then SIGKILL to the whole group after a grace period; on a standalone cluster the
application is also killed through the master's web UI, so no executor outlives the phase.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lakehouse.spark.driver import MARK

log = logging.getLogger("controlroom.runs")
GRACE_S = 5.0
TAIL_LINES = 60
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (runs in the child, before exec)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Masker:
    """Replaces secret values in text with ``***`` (longest first)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class DriverProcess:
    """One driver program; iterate ``events()`` for its announcements and log lines."""

    def __init__(self, *, job: dict[str, Any], folder: Path, env: dict[str, str], secret_properties: str,
                 masker: Masker) -> None:
        self.folder, self.masker = folder, masker
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        job_file = folder / "job.json"
        job_file.write_text(json.dumps(job))
        env = {**env, "PYTHONUNBUFFERED": "1"}  # the script's prints reach the log as they happen
        if secret_properties:
            props = folder / "secret.properties"
            fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secret_properties)
            env["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {props} pyspark-shell"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lakehouse.spark.driver", str(job_file)], env=env, cwd=folder,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True, preexec_fn=die_with_parent)
        self._stopping = threading.Event()

    def events(self) -> Iterator[tuple[str, Any]]:
        """("app" | "progress" | "done", value) announcements and ("log", masked line), until exit."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith(MARK):
                try:
                    kind, value = next(iter(json.loads(line[len(MARK):]).items()))
                except (ValueError, StopIteration, AttributeError):
                    kind, value = "log", line
                else:
                    yield kind, value
                    continue
            masked = self.masker(line)
            self.tail.append(masked)
            yield "log", masked

    def answer(self, text: str) -> None:
        """Send one line to the driver (``go`` once the application is recorded)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()

    def wait(self) -> int:
        """The driver's exit status (negative: killed by that signal)."""
        return self.proc.wait()

    def stop(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM (the driver stops its session), then SIGKILL to the group after ``grace_s``."""
        if self._stopping.is_set() or self.proc.poll() is not None:
            return
        self._stopping.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def error_line(self) -> str:
        """The most telling line of a failed driver's output: the traceback's last line."""
        lines = [line for line in self.tail if line.strip()]
        for line in reversed(lines):
            text = line.strip()
            if text.startswith(("Traceback", "File ", "^", "~")) or text.startswith(MARK):
                continue
            if ": " in text and text.split(":", 1)[0].replace(".", "").isidentifier():
                return text[:500]
        return (lines[-1].strip() if lines else "the driver produced no output")[:500]


# --- the standalone master ----------------------------------------------------------------------


def master_apps(ui_url: str, timeout: float = 5.0) -> dict[str, str]:
    """{application id: state} of a standalone master (its UI's JSON), active and completed."""
    with urllib.request.urlopen(f"{ui_url.rstrip('/')}/json/", timeout=timeout) as answer:  # noqa: S310
        data = json.load(answer)
    return {app["id"]: app.get("state", "") for key in ("activeapps", "completedapps") for app in data.get(key, [])}


def master_kill(ui_url: str, app_id: str, *, wait_s: float = 10.0,
                sleep: Callable[[float], None] = time.sleep) -> str:
    """Kill ``app_id`` through the master's UI (``spark.ui.killEnabled``, on by default) and wait
    until the master no longer lists it as running; its last state ("" if unknown)."""
    base = ui_url.rstrip("/")
    try:
        # Spark 4.1's master refuses the kill (403) without the CSRF token its page puts in each form.
        with urllib.request.urlopen(f"{base}/", timeout=5.0) as page:  # noqa: S310 (http(s) checked)
            token = re.search(r'name="csrfToken" value="([^"]+)"', page.read().decode(errors="replace"))
        fields = {"id": app_id, "terminate": "true", **({"csrfToken": token.group(1)} if token else {})}
        url, body = f"{base}/app/kill/", urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 (http(s) checked)
        with urllib.request.urlopen(request, timeout=5.0):  # noqa: S310 (the connection's http(s) URL)
            pass
    except OSError as exc:  # already gone, or the master is down: the wait below tells
        log.info("killing Spark application %s through %s: %s", app_id, ui_url, exc)
    deadline, state = time.monotonic() + wait_s, ""
    while time.monotonic() < deadline:
        try:
            state = master_apps(ui_url).get(app_id, "")
        except OSError:
            return state
        if state not in ("RUNNING", "WAITING", "SUBMITTED"):
            return state
        sleep(0.25)
    return state
