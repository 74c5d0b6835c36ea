"""Spark Connect sessions a `spark` phase owns, and stopping what they run on the server.

On Spark Connect the application is the server's, shared by every client: there is no application
to kill. What a phase runs there belongs to its *session*, and a session outlives its client: when
the driver program dies (cancel, timeout, a worker killed with -9), the server goes on executing
the operation it was given. So the worker chooses each attempt's session id itself, records it
under the lease before the driver starts (``phase_log`` payload ``spark_connect_session``), and
the driver connects with it. Cancel and timeout interrupt that session's operations after stopping
the driver; a requeued attempt interrupts every earlier attempt's session before it starts its
own, so two attempts never run beside each other.

Interrupting happens in a short child process (``python -m lakehouse.spark.connect``), like the
driver itself: the gRPC client stays out of the worker process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

from lakehouse.spark.process import die_with_parent

log = logging.getLogger(__name__)

SESSION_KEY = "spark_connect_session"
USER_ID = "controlroom"  # the session's owner on the server: the same from every worker machine
INTERRUPT_TIMEOUT_S = 60


class InterruptFailed(RuntimeError):
    """The server could not be asked to stop a session; the message says why (for the phase)."""


def new_session_id() -> str:
    """A fresh session id (Spark Connect takes a UUID4)."""
    return str(uuid.uuid4())


def session_url(master: str, session_id: str) -> str:
    """``master`` (``sc://host:port[/;param=value…]``) with this session id and, unless it names
    one, Control Room's user id."""
    base, _, params = master.partition("/;")
    kept = [p for p in params.split(";") if p and not p.startswith("session_id=")]
    if not any(p.startswith("user_id=") for p in kept):
        kept.append(f"user_id={USER_ID}")
    return f"{base.rstrip('/')}/;" + ";".join([*kept, f"session_id={session_id}"])


def interrupt_sessions(master: str, session_ids: list[str], env: dict[str, str]) -> dict[str, list[str]]:
    """Interrupt every operation of these sessions on the server and release them; return the
    operation ids each had running. Raises InterruptFailed when the server cannot be asked."""
    if not session_ids:
        return {}
    request = json.dumps({"urls": {sid: session_url(master, sid) for sid in session_ids}})
    try:
        done = subprocess.run([sys.executable, "-m", "lakehouse.spark.connect", request], env=env, text=True,
                              capture_output=True, timeout=INTERRUPT_TIMEOUT_S, check=False,
                              preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        raise InterruptFailed(f"the Spark Connect server at {master} did not answer within "
                              f"{INTERRUPT_TIMEOUT_S} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        log.warning("interrupting Spark Connect sessions %s on %s failed: %s", session_ids, master,
                    done.stderr[-4000:])
        tail = (done.stderr.strip().splitlines() or ["no answer"])[-1][:300]
        raise InterruptFailed(f"the Spark Connect server at {master} could not be asked to stop the sessions "
                              f"({tail})")
    return json.loads(lines[-1])


class SessionStopper:
    """Stops one session's operations on the server, once, off the calling thread (a phase's stop
    hooks run on its heartbeat thread, which must keep renewing the lease meanwhile)."""

    def __init__(self, master: str, session_id: str, env: dict[str, str], warn: Callable[[str], None]) -> None:
        self.master, self.session_id, self.env, self.warn = master, session_id, env, warn
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin stopping the session (again: nothing)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"connect-stop-{self.session_id[:8]}",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            interrupt_sessions(self.master, [self.session_id], self.env)
        except InterruptFailed as exc:
            self.warn(f"Spark Connect session {self.session_id}: {exc}")
        except Exception as exc:  # logged in full; the phase says it in one line
            log.exception("stopping Spark Connect session %s", self.session_id)
            self.warn(f"Spark Connect session {self.session_id} could not be stopped ({type(exc).__name__})")

    def wait(self) -> None:
        """Until the server answered, if stopping began (at most the interrupt's own time limit)."""
        if self._thread is not None:
            self._thread.join(INTERRUPT_TIMEOUT_S + 5)


def main(argv: list[str]) -> int:
    """The child process: interrupt and release each session; print {session: [operation ids]}."""
    import signal

    from pyspark.sql import SparkSession

    signal.alarm(INTERRUPT_TIMEOUT_S)  # its own limit too: the client retries a gone server for minutes
    stopped: dict[str, Any] = {}
    for session_id, url in json.loads(argv[1])["urls"].items():
        spark = SparkSession.builder.remote(url).create()
        try:
            stopped[session_id] = list(spark.interruptAll())
        except Exception as exc:  # a session the server already closed has nothing left to run
            if "SESSION_CLOSED" not in str(exc) and "SESSION_NOT_FOUND" not in str(exc):
                raise
            stopped[session_id] = []
        finally:
            spark.stop()  # releases the session on the server: nothing more can run in it
    print(json.dumps(stopped))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
