"""The executor and phase-context protocols, shared by Celery workers and the standalone executor.

A phase kind is a module with two functions (``runs.kinds`` names it):

- ``config_errors(config) -> list[str]``: checked when a job version is saved;
- ``execute(ctx) -> dict``: runs the phase against a :class:`PhaseContextProtocol` and returns
  its output, or raises :class:`PhaseFailure` with a message for the user.

Whatever engine a phase starts (a DuckDB query, a Trino query, a Spark application) registers a
stop hook with ``ctx.on_stop``; cancel, timeout and a lost lease call every hook, from the
heartbeat thread, so the engine stops where it runs and not only in this process."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("controlroom.executors")


class PhaseFailure(Exception):
    """The phase failed for a reason the user can act on (the message says which)."""


@runtime_checkable
class PhaseContextProtocol(Protocol):
    """What a phase kind's ``execute`` may use; both contexts implement all of it."""

    phase: Any  # .pk, .name, .kind, .config, .timeout_s, .attempt
    run_id: int
    environment_name: str  # dev, stage or prod
    parameters: dict[str, Any]
    scratch: Path
    lease_token: str
    outputs: list[dict[str, Any]]
    stopped: bool
    timed_out: bool

    def log(self, message: str, *, level: str = "info", **payload: Any) -> None: ...

    def progress(self, message: str, **payload: Any) -> None: ...

    def on_stop(self, hook: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...

    def time_out(self) -> None: ...

    def duckdb(self, name: str) -> Any: ...

    def add_artifact(self, *, name: str, path: Path, media_type: str) -> dict[str, Any]: ...

    def cleanup(self) -> None: ...


class StopHooks:
    """The stop half of a context: hooks run once on stop, and at once if registered after it."""

    def __init__(self, *, prefix: str) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix=prefix))
        self.outputs: list[dict[str, Any]] = []
        self.stopped = False
        self.timed_out = False
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when the phase must stop (cancel, timeout, lost lease); now if it already must."""
        with self._lock:
            if not self.stopped:
                self._hooks.append(hook)
                return
        self._call(hook)

    def stop(self) -> None:
        """Called from the heartbeat thread: stop every engine this phase started."""
        with self._lock:
            self.stopped = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            self._call(hook)

    def time_out(self) -> None:
        """The phase ran past its timeout: stop it like a cancel, and remember why."""
        self.timed_out = True
        self.stop()

    @staticmethod
    def _call(hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception:  # one engine failing to stop must not keep the others running
            log.exception("a stop hook failed")

    def cleanup(self) -> None:
        """Remove the phase's scratch folder."""
        shutil.rmtree(self.scratch, ignore_errors=True)
