"""The child processes of a dbt phase (git, dbt), each in its own session and stoppable.

Each child starts in a new session (its own process group), told by the kernel to die with the
worker (util-linux's ``setpriv --pdeathsig``), and registers a stop hook: cancel, the phase's
timeout and a lost lease send its group SIGINT (dbt then cancels the queries it has open on the
engine, as on Ctrl-C) and SIGKILL ``STOP_GRACE_S`` later if it is still there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SETPRIV = shutil.which("setpriv")
STOP_GRACE_S = 10.0
# dbt through its own interpreter, with Python's SIGINT handler put back: a Celery worker's child
# may inherit SIGINT ignored, and dbt cancels its engine queries only on KeyboardInterrupt.
_DBT_MAIN = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'dbt'; from dbt.cli.main import cli; sys.exit(cli())")


class ProcessFailed(RuntimeError):
    """A child exited with a non-zero status (or timed out); the text is its last error line."""


class ChildProcess:
    """A child in its own process group whose merged output is read line by line."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> None:
        command = [SETPRIV, "--pdeathsig", "KILL", "--", *argv] if SETPRIV else list(argv)
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                                     start_new_session=True)
        self.stopped = False
        self._killer: threading.Timer | None = None

    @property
    def pid(self) -> int:
        """The child's process id (also its process group's)."""
        return self.proc.pid

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGINT to the group now, SIGKILL after the grace period (from the heartbeat's thread)."""
        if self.stopped:
            return
        self.stopped = True
        self._signal(signal.SIGINT)
        self._killer = threading.Timer(STOP_GRACE_S, self._signal, args=(signal.SIGKILL,))
        self._killer.daemon = True
        self._killer.start()

    def lines(self) -> Iterator[str]:
        """The child's output, line by line, without line ends, until it closes its output."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            yield line.rstrip("\r\n")

    def wait(self, timeout_s: float | None = None) -> int:
        """The exit status; whatever is left in the group is killed (a helper that outlived it)."""
        try:
            status = self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self._signal(signal.SIGKILL)
                self.proc.wait()
            self._signal(signal.SIGKILL)
            if self._killer is not None:
                self._killer.cancel()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return status


def run_quietly(ctx: Any, argv: list[str], *, env: dict[str, str], timeout_s: float) -> str:
    """Run a short child to its end (stoppable); its output, or ProcessFailed with its last line."""
    child = ChildProcess(argv, env=env)
    ctx.on_stop(child.stop)
    timer = threading.Timer(timeout_s, child.stop)
    timer.daemon = True
    timer.start()
    try:
        output = list(child.lines())
        status = child.wait()
    finally:
        timer.cancel()
    if child.stopped:
        raise ProcessFailed("stopped" if ctx.stopped else f"did not finish within {timeout_s:g} s")
    if status != 0:
        last = next((line for line in reversed(output) if line.strip()), f"exit status {status}")
        raise ProcessFailed(last.strip()[:500])
    return "\n".join(output)


def dbt_command(dbt: Path) -> list[str]:
    """The argv prefix that runs dbt from its virtualenv (``dbt`` is beside its ``python``)."""
    return [str(dbt.parent / "python"), "-c", _DBT_MAIN]
