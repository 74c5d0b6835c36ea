"""The process supervisor of ``make run``: web, Celery worker and beat, kept alive until Ctrl-C.

``python -m controlroom.supervisor`` (``scripts/run.sh`` runs it after migrating and seeding)
starts gunicorn, a Celery worker and Celery beat, each in its own session, so the terminal's
Ctrl-C reaches only the supervisor. A child that exits, however it exits, is reported on one
line (its name and exit code or signal) and started again after a pause that doubles while it
keeps crashing (up to ``BACKOFF_CAP_S``). SIGINT, SIGTERM or SIGHUP (its terminal closed) stops
everything: one SIGTERM to each child's main process, up to ``STOP_TIMEOUT_S`` for its whole
process group to finish, then SIGKILL to the group. Only the main process is signalled because
it stops its own children: gunicorn's workers get their TERM from the master (a second one
inside a graceful quit can deadlock a worker and orphan it on the port), and a Celery pool child
with a TERM of its own may die holding the pool's queue lock, which hangs the worker's warm
shutdown until the KILL. After a hang-up its lines go nowhere; the stopping goes on all the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

STOP_TIMEOUT_S = 15.0
# SIGHUP's default would end the supervisor at once, silently, and leave its children running.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 30.0
# A child that ran this long before dying was not crash-looping: its next pause starts over.
STABLE_AFTER_S = 30.0
POLL_S = 0.2
PROMPT = "\u203a"  # the angle quote that starts run.sh's own lines
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    """What to run under one name."""

    name: str
    argv: Sequence[str]


@dataclass
class Child:
    """One child's current process and its crash history."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0  # consecutive exits within STABLE_AFTER_S of starting
    restart_at: float | None = None


def exit_reason(returncode: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``, from a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def backoff(crashes: int, *, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before the next start after ``crashes`` consecutive quick exits."""
    return min(cap, first * 2 ** max(crashes - 1, 0))


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor itself is killed (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Runs children until asked to stop; see the module docstring for the rules."""

    def __init__(self, specs: Sequence[ChildSpec], *, out: TextIO | None = None, ready_message: str = "",
                 stop_timeout: float = STOP_TIMEOUT_S, backoff_first: float = BACKOFF_FIRST_S,
                 backoff_cap: float = BACKOFF_CAP_S, stable_after: float = STABLE_AFTER_S) -> None:
        self.children = [Child(spec) for spec in specs]
        self.out = out or sys.stdout
        self.ready_message = ready_message
        self.stop_timeout, self.stable_after = stop_timeout, stable_after
        self.backoff_first, self.backoff_cap = backoff_first, backoff_cap
        self.stop_signal: str | None = None

    def say(self, line: str) -> None:
        """Print one line of the supervisor's own, like run.sh's (an empty ``line``: a blank one)."""
        try:
            print(f"{PROMPT} {line}" if line else "", file=self.out, flush=True)
        except (OSError, ValueError):  # the terminal is gone (EIO after a hang-up), or the stream closed
            self._lose_output()

    def _lose_output(self) -> None:
        # Supervising matters more than reporting: later lines, and what the failed write left in
        # the buffer (flushed again at exit), go to /dev/null instead of failing.
        with contextlib.suppress(OSError, ValueError):
            fd, devnull = self.out.fileno(), os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()
        if self.out.closed:
            self.out = open(os.devnull, "w")  # lives as long as the supervisor

    def run(self) -> int:
        """Start every child, keep them running, stop them all on SIGINT/SIGTERM/SIGHUP; returns 0."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            for child in self.children:
                self._start(child, "started")
            if self.ready_message:
                self.say(self.ready_message)
            while self.stop_signal is None:
                self._tend()
                time.sleep(POLL_S)
        finally:
            self.stop_all()  # our handlers stay: a second Ctrl-C must not cut the shutdown short
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_signal = self.stop_signal or signal.Signals(signum).name

    def _start(self, child: Child, verb: str) -> None:
        child.proc = subprocess.Popen(list(child.spec.argv), stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_die_with_parent)  # safe: the supervisor has one thread
        child.started_at, child.restart_at = time.monotonic(), None
        self.say(f"{verb} {child.spec.name} (pid {child.proc.pid})")

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and (code := child.proc.poll()) is not None:
                pid = child.proc.pid
                child.proc = None
                if _group_alive(pid):  # its own children (pool, gunicorn workers) would hold the port or work
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                lived = now - child.started_at
                child.crashes = child.crashes + 1 if lived < self.stable_after else 1
                delay = backoff(child.crashes, first=self.backoff_first, cap=self.backoff_cap)
                child.restart_at = now + delay
                self.say(f"{child.spec.name} (pid {pid}) died after {lived:.0f} s: {exit_reason(code)}; "
                         f"restarting in {delay:g} s")
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._start(child, "restarted")

    def stop_all(self) -> None:
        """TERM each running child once, wait up to stop_timeout for its group, then KILL what is left."""
        running = [c for c in self.children if c.proc is not None]
        names = [c.spec.name for c in self.children]
        self.say("")
        self.say(f"stopping {', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else f"stopping {names[0]}")
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            for child in running:
                assert child.proc is not None
                child.proc.poll()
            if not any(_group_alive(c.proc.pid) for c in running if c.proc is not None):
                break
            time.sleep(0.1)
        for child in running:
            assert child.proc is not None
            if _group_alive(child.proc.pid):
                self.say(f"{child.spec.name} still running after {self.stop_timeout:g} s: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)
            child.proc = None


def run_stack(port: str, bin_dir: Path) -> list[ChildSpec]:
    """``make run``'s children: the same command lines run.sh used to start itself."""
    return [
        ChildSpec("web", [str(bin_dir / "gunicorn"), "controlroom.wsgi:application", "--bind", f"127.0.0.1:{port}",
                          "--workers", "2", "--threads", "4", "--graceful-timeout", "10", "--access-logfile", "-",
                          "--log-level", "warning"]),
        ChildSpec("worker", [str(bin_dir / "celery"), "-A", "controlroom", "worker", "--loglevel", "INFO",
                             "--queues", "default,sql", "--concurrency", "2", "--prefetch-multiplier", "1",
                             "--hostname", "worker@%h"]),
        ChildSpec("beat", [str(bin_dir / "celery"), "-A", "controlroom", "beat", "--loglevel", "INFO",
                           "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile="]),
        *([ChildSpec("spark-worker", [str(bin_dir / "celery"), "-A", "controlroom", "worker", "--loglevel", "INFO",
                                      "--queues", "spark", "--concurrency", "1", "--prefetch-multiplier", "1",
                                      "--hostname", "spark@%h"])] if spark_available() else []),
    ]


def spark_available() -> bool:
    """Whether this machine can run spark phases (pyspark installed and a JDK 17 found); says why not."""
    import importlib.util

    from lakehouse.spark.runtime import ENABLE_HINT, RuntimeMissing, java17_home

    try:
        found = importlib.util.find_spec("pyspark") is not None and java17_home() is not None
    except RuntimeMissing as exc:
        print(f"spark phases off: {exc}", flush=True)
        return False
    if not found:
        print(f"spark phases off (they wait in the spark queue): {ENABLE_HINT}", flush=True)
    return found


def main() -> int:
    """Supervise the run stack on ``$PORT`` (default 8000) with this interpreter's venv."""
    port = os.environ.get("PORT", "8000")
    with contextlib.suppress(AttributeError):  # a terminal without UTF-8 must not kill the supervisor
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    supervisor = Supervisor(run_stack(port, Path(sys.prefix) / "bin"),
                            ready_message=f"Control Room is up at http://127.0.0.1:{port}/  (Ctrl-C stops it)")
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
