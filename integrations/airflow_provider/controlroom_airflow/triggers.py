"""The trigger a deferred ``ControlRoomRunOperator`` waits on: polls GET runs/<id> in the
triggerer's event loop until the run ends, or until the task's ``execution_timeout`` is up; cancels
the run when a user kills the deferred task (Airflow 3.3+ calls ``on_kill`` on mark failed/success
or clear)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from controlroom_airflow.hooks import TERMINAL, ControlRoomError, ControlRoomHook


class ControlRoomRunTrigger(BaseTrigger):
    """Fires once, when the run ends: ``{"status": <run status>, "run_id": …}``;
    ``{"status": "timeout", …}`` when ``end_by`` (a Unix time: the task's ``execution_timeout``)
    passes first, leaving the run for the task to cancel; or ``{"status": "error", "message": …}``
    when Control Room refuses the read or stays unreachable for ``max_errors`` polls in a row.
    Only the connection id is serialized, never the token.

    ``on_kill`` (a user marked the deferred task failed or succeeded, or cleared it) cancels the
    run. Airflow does not call it when it times the trigger out, nor on a triggerer restart."""

    def __init__(self, *, controlroom_conn_id: str, workspace: str, run_id: int, poll_interval: float = 10.0,
                 max_errors: int = 5, end_by: float | None = None) -> None:
        super().__init__()
        self.controlroom_conn_id, self.workspace, self.run_id = controlroom_conn_id, workspace, int(run_id)
        self.poll_interval, self.max_errors = float(poll_interval), int(max_errors)
        self.end_by = None if end_by is None else float(end_by)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the keyword arguments that rebuild this trigger in the triggerer."""
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"controlroom_conn_id": self.controlroom_conn_id, "workspace": self.workspace,
                 "run_id": self.run_id, "poll_interval": self.poll_interval, "max_errors": self.max_errors,
                 "end_by": self.end_by})

    async def on_kill(self) -> None:
        """The user killed the deferred task: cancel its run (a run that already ended is left be).
        Never raises: Airflow would only log it."""
        try:
            client = await ControlRoomHook(self.controlroom_conn_id).aget_conn()
            run = await client.acancel_run(run_id=self.run_id)
        except Exception as exc:
            self.log.warning("Could not cancel Control Room run %s after the task was killed: %s", self.run_id, exc)
            return
        if run is None:
            self.log.info("Control Room run %s had already ended; nothing to cancel", self.run_id)
        else:
            self.log.info("Cancelled Control Room run %s (the task was killed): it is %s", self.run_id,
                          run["status"])

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the run every ``poll_interval`` seconds; yield one event when it has ended."""
        try:
            client = await ControlRoomHook(self.controlroom_conn_id).aget_conn()
        except Exception as exc:  # a missing or incomplete connection: tell the task, do not hang
            yield TriggerEvent({"status": "error", "run_id": self.run_id, "message": str(exc)})
            return
        errors = 0
        while True:
            try:
                run = await client.aget_run(workspace=self.workspace, run_id=self.run_id)
            except ControlRoomError as exc:
                errors += 1
                if not exc.transient or errors >= self.max_errors:
                    yield TriggerEvent({"status": "error", "run_id": self.run_id, "message": str(exc)})
                    return
                self.log.warning("%s (attempt %d of %d); polling again", exc, errors, self.max_errors)
            else:
                errors = 0
                if run["status"] in TERMINAL:
                    self.log.info("Control Room run %s ended: %s", self.run_id, run["status"])
                    yield TriggerEvent({"status": run["status"], "run_id": self.run_id})
                    return
                self.log.info("Control Room run %s is %s; next look in %.0f s", self.run_id, run["status"],
                              self.poll_interval)
            wait = self.poll_interval
            if self.end_by is not None:
                if (left := self.end_by - time.time()) <= 0:
                    self.log.info("Control Room run %s: the task's execution_timeout is up", self.run_id)
                    yield TriggerEvent({"status": "timeout", "run_id": self.run_id,
                                        "message": "the task's execution_timeout is up"})
                    return
                wait = min(wait, left)
            await asyncio.sleep(wait)
