"""The run command's supervisor (controlroom/supervisor.py) with stand-in children.

The supervisor runs in its own process (it owns SIGINT), started from a small driver script
with short back-offs and stop timeout; the children are tiny Python programs that crash, get
killed, leave a grandchild behind, or ignore SIGTERM. One test gives it a pseudo-terminal and
closes it, as closing a terminal window does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from controlroom.supervisor import backoff, exit_reason
from tests.conftest import REPO

DRIVER = """
import sys
from controlroom.supervisor import ChildSpec, Supervisor
py = sys.executable
children = [
    ChildSpec("crasher", [py, "-c", "import sys, time; time.sleep(0.05); sys.exit(3)"]),
    # like gunicorn's master: a process of its own, stopped by the parent on SIGTERM
    ChildSpec("steady", [py, "-c", "import signal, subprocess, sys, time; "
                         "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                         "signal.signal(signal.SIGTERM, lambda *a: (kid.kill(), kid.wait(), sys.exit(0))); "
                         "time.sleep(600)"]),
    ChildSpec("stubborn", [py, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                           "print('ignoring TERM', flush=True); time.sleep(600)"]),
]
sys.exit(Supervisor(children, ready_message="up", stop_timeout=1.5, backoff_first=0.1, backoff_cap=0.4,
                    stable_after=60).run())
"""
STARTED = re.compile(r"(?:started|restarted) (\w+) \(pid (\d+)\)")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def wait_for(condition, what: str, log_text, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; supervisor log:\n{log_text()}"
        time.sleep(0.05)


def test_exit_reasons_name_the_signal_or_the_code():
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(0) == "exit code 0"


def test_the_pause_before_a_restart_doubles_while_a_child_keeps_crashing_and_is_capped():
    assert [backoff(n, first=1, cap=30) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.fixture
def supervised(tmp_path: Path):
    log_path = tmp_path / "supervisor.log"
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    pids: dict[str, list[int]] = {}

    def log_text() -> str:
        text = log_path.read_text(errors="replace")
        pids.clear()
        for name, pid in STARTED.findall(text):
            pids.setdefault(name, []).append(int(pid))
        return text

    yield proc, log_text, pids
    for group in {pid for started in pids.values() for pid in started} | {proc.pid}:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(5)


@pytest.mark.slow
def test_crashed_children_are_restarted_with_their_reason_and_ctrl_c_stops_all(supervised):
    proc, log_text, pids = supervised
    wait_for(lambda: "up\n" in log_text() and "ignoring TERM" in log_text(), "the children to start", log_text)
    wait_for(lambda: log_text().count("restarted crasher") >= 4, "the crasher to be restarted a few times", log_text)
    crashes = r"crasher \(pid \d+\) died after \d+ s: exit code 3; restarting in ([\d.]+) s"
    pauses = [float(p) for p in re.findall(crashes, log_text())]
    assert pauses[:4] == [0.1, 0.2, 0.4, 0.4]  # doubling, capped

    # kill -9 the steady child: reported by signal name, its orphaned grandchild killed, restarted
    log_text()
    steady = pids["steady"][0]
    grandchildren = [int(p) for p in subprocess.run(["pgrep", "-g", str(steady)], capture_output=True,
                                                    text=True).stdout.split() if int(p) != steady]
    assert grandchildren
    os.kill(steady, signal.SIGKILL)
    wait_for(lambda: "restarted steady" in log_text(), "the steady child to be restarted", log_text)
    assert f"steady (pid {steady}) died after" in log_text() and "killed by SIGKILL; restarting in 0.1 s" in log_text()
    wait_for(lambda: not any(alive(p) for p in grandchildren), "the dead child's leftover process to be killed",
             log_text)
    assert alive(pids["stubborn"][0]) and alive(pids["steady"][1])

    # Ctrl-C: everything stops; the child that ignores SIGTERM is killed after the timeout
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(20) == 0
    text = log_text()
    assert "stopping crasher, steady and stubborn" in text
    assert "stubborn still running after 1.5 s: killing it" in text
    assert "steady still running" not in text  # it stopped on its one SIGTERM
    assert not [p for started in pids.values() for p in started if alive(p)]


@pytest.mark.slow
def test_sighup_stops_everything_like_ctrl_c(supervised):
    proc, log_text, pids = supervised
    wait_for(lambda: "up\n" in log_text() and "ignoring TERM" in log_text(), "the children to start", log_text)
    os.kill(proc.pid, signal.SIGHUP)
    assert proc.wait(20) == 0, log_text()
    text = log_text()
    assert "stopping crasher, steady and stubborn" in text
    assert "stubborn still running after 1.5 s: killing it" in text
    assert not [p for started in pids.values() for p in started if alive(p)]


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # after setsid: stdin's pty becomes the controlling terminal


@pytest.mark.slow
def test_closing_its_terminal_stops_everything_though_nothing_can_be_printed(tmp_path):
    """The terminal window closes: the kernel sends SIGHUP, and every write to it fails with EIO."""
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    master, slave = pty.openpty()
    errors = tmp_path / "stderr.log"
    with errors.open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], cwd=REPO, stdin=slave, stdout=slave,
                                stderr=err, start_new_session=True, preexec_fn=_take_terminal,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(slave)
    seen, pids = b"", []
    try:
        deadline = time.monotonic() + 30
        while not (b"up\r\n" in seen and b"ignoring TERM\r\n" in seen):  # whole lines: no write left
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)
        pids = [int(pid) for _, pid in STARTED.findall(seen.decode(errors="replace"))]
        os.close(master)  # the hang-up
        master = -1
        assert proc.wait(20) == 0, errors.read_text()
        assert errors.read_text() == "", seen  # no traceback from writing to the dead terminal
        wait_for(lambda: not [p for p in pids if alive(p)], "every child to be stopped", errors.read_text, timeout=5)
    finally:
        if master >= 0:
            os.close(master)
        for group in [*pids, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        proc.wait(5)
