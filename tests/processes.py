"""Start the README's run command (``scripts/run.sh``) for end-to-end tests, and always stop it.

``with run_command(tmp_path) as server: ...`` yields a :class:`RunningServer` once ``/healthz``
answers; on the way out the whole process group gets SIGINT (like Ctrl-C in a terminal), then
SIGKILL if anything is still alive after :data:`STOP_TIMEOUT` seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import HOST, free_port

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
# The run command must use its own embedded SQLite, broker folder and storage, whatever the suite uses.
_DROP = ("DATABASE_URL", "CELERY_BROKER_URL", "CONTROLROOM_TEST_SQLITE", "CONTROLROOM_MODE",
         "ARTIFACT_STORE_URL", "CONTROLROOM_WAREHOUSE_DIR", "CONTROLROOM_DATASETS_DIR", "STATIC_ROOT")
_PASSWORD = re.compile(r"Demo workspace ready\. Sign in as demo / (\S+)")
_UP = re.compile(r"Control Room is up at (http://\S+/)")


@dataclass
class RunningServer:
    url: str  # ends with "/"
    password: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    interrupted: bool = False

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: run.sh leads its own group

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def group_members(self) -> str:
        """``ps`` lines of the processes still in the group (for assertion messages)."""
        done = subprocess.run(["ps", "-ww", "-o", "pid,ppid,stat,etime,args", "-g", str(self.pgid)],
                              capture_output=True, text=True, check=False)
        return done.stdout.strip()

    def interrupt(self) -> None:
        """Send SIGINT to the whole group, as Ctrl-C in a terminal does."""
        self.interrupted = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGINT)

    def wait_group_gone(self, timeout: float) -> bool:
        """Reap run.sh and wait until no process of its group is left; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not self.group_alive():
                return True
            time.sleep(0.1)
        return self.proc.poll() is not None and not self.group_alive()


METRICS_TOKEN = "run-command-metrics-token"  # the tests read /metrics with it


def run_command_env(data_dir: Path, port: int) -> dict[str, str]:
    drop = {*_DROP, *(f"{name}_FILE" for name in _DROP)}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(CONTROLROOM_DATA_DIR=str(data_dir), PORT=str(port), PYTHONUNBUFFERED="1", METRICS_TOKEN=METRICS_TOKEN)
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "healthz", timeout=2) as response:  # noqa: S310 (http://127.0.0.1 only)
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait_up(server: RunningServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        log = server.log_path.read_text(errors="replace")
        if _UP.search(log) and _healthy(server.url):
            break
        if server.proc.poll() is not None:
            raise AssertionError(f"run.sh exited with {server.proc.returncode}; log:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not up after {START_TIMEOUT:.0f} s; log:\n{server.log_tail()}")
        time.sleep(0.2)
    password, up = _PASSWORD.search(log), _UP.search(log)
    assert password, f"no demo password printed; log:\n{server.log_tail()}"
    assert up and up.group(1) == server.url, f"announced {up and up.group(1)}, expected {server.url}"
    server.password = password.group(1)


@contextlib.contextmanager
def run_command(tmp_path: Path) -> Iterator[RunningServer]:
    """Run ``bash scripts/run.sh`` on a free port with its state in ``tmp_path/data``."""
    port, log_path = free_port(), tmp_path / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/run.sh"], cwd=REPO, env=run_command_env(tmp_path / "data", port),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = RunningServer(url=f"http://{HOST}:{port}/", password="", log_path=log_path, proc=proc)
    try:
        _wait_up(server)
        yield server
    finally:
        stop(server)


def stop(server: RunningServer) -> None:
    """SIGINT the group (unless the test already did), wait, then SIGKILL whatever is left."""
    if not server.interrupted and (server.proc.poll() is None or server.group_alive()):
        server.interrupt()
        server.wait_group_gone(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(5)
