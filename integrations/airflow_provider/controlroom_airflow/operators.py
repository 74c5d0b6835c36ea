"""``ControlRoomRunOperator``: trigger a run of a Control Room job and wait for it to end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, TaskDeferralTimeout

from controlroom_airflow.hooks import TERMINAL, ControlRoomClient, ControlRoomError, ControlRoomHook, idempotency_key
from controlroom_airflow.triggers import ControlRoomRunTrigger

# What Airflow sets as next_method when it fails a deferred task itself (airflow.sdk.bases.operator).
TRIGGER_FAIL = "__fail__"


class ControlRoomRunOperator(BaseOperator):
    """Trigger a run of ``job`` in ``workspace`` through Control Room's REST API, log the run's
    console link, and wait for it to end; the task fails (``AirflowException``, with the run's
    error) when the run fails or is cancelled. Returns the finished run as Control Room reports
    it (``GET runs/<id>``), so downstream tasks can read its ``id`` or ``output_manifest``.

    :param workspace: the workspace slug (the API token must belong to it).
    :param job: the job slug.
    :param environment: dev, stage or prod.
    :param parameters: the run's parameters (templated; JSON values).
    :param controlroom_conn_id: an Airflow connection whose host is Control Room's URL and whose
        password is an API token with the runs:read and runs:write scopes.
    :param deferrable: wait in the triggerer (frees the worker slot; needs a triggerer running).
        With False the task polls in the worker.
    :param poll_interval: seconds between two looks at the run.

    Each task try asks with its own Idempotency-Key (DAG, task, DAG run, map index, try), so a
    request the network repeated makes one run, and an Airflow retry makes a new one.

    A killed task cancels its run (``POST /api/v1/ops/runs/<id>/cancel``, as the connection's
    token): ``on_kill`` when the waiting task is marked failed or success, cleared, or passes its
    ``execution_timeout``; for a deferred task the trigger's ``on_kill`` (a user's kill), the
    trigger's own ``execution_timeout`` deadline, or Airflow's deferral timeout. A run that has
    already ended is left as it is; a cancel that fails is logged and never hides why the task failed.
    """

    template_fields: Sequence[str] = ("workspace", "job", "environment", "parameters")
    template_fields_renderers = {"parameters": "json"}
    ui_color = "#dbeafe"

    def __init__(self, *, workspace: str, job: str, environment: str = "dev",
                 parameters: dict[str, Any] | None = None, controlroom_conn_id: str = ControlRoomHook.default_conn_name,
                 deferrable: bool = True, poll_interval: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workspace, self.job, self.environment = workspace, job, environment
        self.parameters = parameters or {}
        self.controlroom_conn_id, self.deferrable, self.poll_interval = controlroom_conn_id, deferrable, poll_interval
        self._run_id: int | None = None  # the run this task waits on, for on_kill

    def _client(self) -> ControlRoomClient:
        return ControlRoomHook(self.controlroom_conn_id).get_conn()

    def execute(self, context: Context) -> dict[str, Any]:
        """Trigger the run, then wait for it (deferred, or polling here)."""
        ti = context["ti"]
        end_by = None if self.execution_timeout is None else time.time() + self.execution_timeout.total_seconds()
        client = self._client()
        key = idempotency_key(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)
        run = client.trigger_run(workspace=self.workspace, job=self.job, environment=self.environment,
                                 parameters=self.parameters, key=key)
        self._run_id = run["id"]  # from here on, a kill cancels it
        url = client.run_url(self.workspace, run["id"])
        self.log.info("Control Room run %s of %s/%s (%s, version %s): %s", run["id"], self.workspace, self.job,
                      run["environment"], run["version"], url)
        ti.xcom_push(key="run_id", value=run["id"])
        ti.xcom_push(key="run_url", value=url)
        if run["status"] in TERMINAL:
            return self._finish(run, url)
        if self.deferrable:
            self.log.info("Deferring until run %s ends (polled every %.0f s by the triggerer)", run["id"],
                          self.poll_interval)
            # Airflow's own deferral timeout backs the trigger's deadline up (resume_execution).
            self.defer(trigger=ControlRoomRunTrigger(controlroom_conn_id=self.controlroom_conn_id,
                                                     workspace=self.workspace, run_id=run["id"],
                                                     poll_interval=self.poll_interval, end_by=end_by),
                       method_name="execute_complete",
                       timeout=None if end_by is None else timedelta(seconds=max(1.0, end_by - time.time())))
        return self._finish(self._poll(client, run), url)

    def _poll(self, client: ControlRoomClient, run: dict[str, Any], max_errors: int = 5) -> dict[str, Any]:
        errors = 0
        while run["status"] not in TERMINAL:
            self.log.info("Control Room run %s is %s; next look in %.0f s", run["id"], run["status"],
                          self.poll_interval)
            time.sleep(self.poll_interval)
            try:
                run, errors = client.get_run(workspace=self.workspace, run_id=run["id"]), 0
            except ControlRoomError as exc:
                errors += 1
                if not exc.transient or errors >= max_errors:
                    raise
                self.log.warning("%s (attempt %d of %d); polling again", exc, errors, max_errors)
        return run

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: read the ended run and succeed or fail with it; or, past
        the ``execution_timeout``, cancel the run and fail."""
        if event.get("status") == "error":
            raise AirflowException(f"Lost track of Control Room run {event.get('run_id')}: {event.get('message')}")
        if event.get("status") == "timeout":
            self._cancel(event["run_id"], "execution_timeout")
            raise TaskDeferralTimeout(f"Control Room run {event['run_id']} of {self.workspace}/{self.job} did not "
                                      f"end within the task's execution_timeout ({self.execution_timeout}); "
                                      "cancelled it")
        client = self._client()
        run = client.get_run(workspace=self.workspace, run_id=event["run_id"])
        return self._finish(run, client.run_url(self.workspace, run["id"]))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow failed the deferred task without the trigger firing (its deferral timeout, or a
        trigger that crashed): cancel the run (its id is this try's ``run_id`` XCom), then fail as
        Airflow would (``TaskDeferralTimeout`` or ``TaskDeferralError``)."""
        if next_method == TRIGGER_FAIL:
            ti = context["ti"]
            run_id = ti.xcom_pull(task_ids=ti.task_id, key="run_id", map_indexes=ti.map_index)
            if run_id is not None:
                self._cancel(int(run_id), f"Airflow failed the deferred task: {(next_kwargs or {}).get('error')}")
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The task was killed (marked failed or success, cleared) or passed its execution_timeout
        while it waited: cancel its run."""
        if self._run_id is not None:
            self._cancel(self._run_id, "the Airflow task was killed or timed out")

    def _cancel(self, run_id: int, why: str) -> None:
        """Cancel the run, logging the outcome; never raises (the task's own failure matters more)."""
        self._run_id = None
        try:
            run = self._client().cancel_run(run_id=run_id)
        except Exception as exc:
            self.log.warning("Could not cancel Control Room run %s (%s): %s", run_id, why, exc)
            return
        if run is None:
            self.log.info("Control Room run %s had already ended; nothing to cancel (%s)", run_id, why)
        else:
            self.log.info("Cancelled Control Room run %s (%s): it is %s", run_id, why, run["status"])

    def _finish(self, run: dict[str, Any], url: str) -> dict[str, Any]:
        self._run_id = None
        if run["status"] == "succeeded":
            self.log.info("Control Room run %s succeeded: %s", run["id"], url)
            return run
        failed = [f"{p['name']}: {p['error']}" for p in run.get("phases", []) if p.get("error")]
        error = run.get("error") or "; ".join(failed)
        if run["status"] == "cancelled":
            error = error or "someone cancelled it in Control Room (its console or API)"
        raise AirflowException(f"Control Room run {run['id']} of {self.workspace}/{self.job} {run['status']}: "
                               f"{error or 'no error recorded'} ({url})")
