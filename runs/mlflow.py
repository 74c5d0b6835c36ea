"""MLflow linkage: a ``python`` or ``spark`` phase whose config names an MLflow connection
(``mlflow: <connection>``) runs inside an MLflow run made for it.

Before the phase's code starts, the experiment ``controlroom/<workspace>/<job>`` is found or
made on the connection's tracking server and a run is created in it, tagged with the Control
Room run, phase, attempt, environment and git sha (``mlflow.source.git.commit`` too); an
``MlflowRun`` row links the two. The phase sees it as ``ctx.mlflow`` (an ``MlflowClient`` bound
to that run: params, metrics, tags, artifacts) and, for a Spark driver, as the standard
variables ``MLFLOW_TRACKING_URI``, ``MLFLOW_RUN_ID``, ``MLFLOW_EXPERIMENT_ID`` and
``MLFLOW_TRACKING_TOKEN``. When the phase ends the run is ended FINISHED or FAILED (unless the
code ended it). The run page lists the linked runs with their metrics and a link.

The connection: kind ``mlflow``, config ``{"tracking_uri": "https://mlflow.example"}``, and the
token (when the server wants one) through a secret reference. Only MLflow's REST API is used,
so the app needs no MLflow package.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import requests

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0


class MlflowError(RuntimeError):
    """The tracking server refused or could not be reached; the message says which and why."""


class MlflowClient:
    """The few REST calls Control Room makes, bound to one run when ``run_id`` is set."""

    def __init__(self, tracking_uri: str, token: str = "", run_id: str = "", experiment_id: str = "") -> None:
        self.tracking_uri, self.token = tracking_uri.rstrip("/"), token
        self.run_id, self.experiment_id = run_id, experiment_id

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = requests.request(method, f"{self.tracking_uri}/api/2.0/{path}", headers=headers,
                                        timeout=TIMEOUT_S, **kw)
        except requests.RequestException as exc:
            raise MlflowError(f"MLflow at {self.tracking_uri} cannot be reached ({type(exc).__name__})") from None
        if not response.ok:
            try:
                detail = response.json().get("error_code", "") or response.text[:200]
            except ValueError:
                detail = response.text[:200]
            raise MlflowError(f"MLflow answered {response.status_code} {detail} to {path}")
        return response.json() if response.content else {}

    def experiment(self, name: str) -> str:
        """The id of the experiment ``name``, made if missing."""
        try:
            return self.call("GET", "mlflow/experiments/get-by-name",
                             params={"experiment_name": name})["experiment"]["experiment_id"]
        except MlflowError as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise
        try:
            return self.call("POST", "mlflow/experiments/create", json={"name": name})["experiment_id"]
        except MlflowError as exc:  # made by another phase meanwhile
            if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
            return self.experiment(name)

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        run = self.call("POST", "mlflow/runs/create", json={
            "experiment_id": experiment_id, "run_name": name, "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": v} for k, v in tags.items()]})["run"]
        return run["info"]["run_id"]

    def get_run(self, run_id: str | None = None) -> dict[str, Any]:
        return self.call("GET", "mlflow/runs/get", params={"run_id": run_id or self.run_id})["run"]

    def end_run(self, status: str) -> None:
        self.call("POST", "mlflow/runs/update", json={"run_id": self.run_id, "status": status,
                                                      "end_time": int(time.time() * 1000)})

    def log_param(self, key: str, value: Any) -> None:
        self.call("POST", "mlflow/runs/log-parameter", json={"run_id": self.run_id, "key": key, "value": str(value)})

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.call("POST", "mlflow/runs/log-metric", json={"run_id": self.run_id, "key": key, "value": float(value),
                                                          "timestamp": int(time.time() * 1000), "step": step})

    def set_tag(self, key: str, value: str) -> None:
        self.call("POST", "mlflow/runs/set-tag", json={"run_id": self.run_id, "key": key, "value": value})

    def log_artifact(self, path: str, data: bytes) -> None:
        """Upload one artifact file through the server's artifact proxy (``--artifacts-destination``)."""
        where = f"{self.experiment_id}/{self.run_id}/artifacts/{quote(path)}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = requests.put(f"{self.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{where}", data=data,
                                    headers=headers, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise MlflowError(f"MLflow at {self.tracking_uri} cannot be reached ({type(exc).__name__})") from None
        if not response.ok:
            raise MlflowError(f"MLflow answered {response.status_code} to the upload of {path}")

    def ui_url(self, run_id: str | None = None, experiment_id: str | None = None) -> str:
        return f"{self.tracking_uri}/#/experiments/{experiment_id or self.experiment_id}/runs/{run_id or self.run_id}"


def client_for(connection: Any, *, workspace_id: int) -> MlflowClient:
    """A client for an ``mlflow`` connection, its token read now through its secret reference."""
    from connections.services import secret_resolve

    token = secret_resolve(connection.password_ref, workspace_id=workspace_id) if connection.password_ref else ""
    return MlflowClient(str(connection.config.get("tracking_uri", "")), token)


@contextmanager
def mlflow_for_phase(ctx: Any) -> Iterator[MlflowClient | None]:
    """The phase's MLflow run while its code runs (None when its config names no connection)."""
    from connections.models import Connection
    from runs.executors.context import PhaseFailure
    from runs.models import MlflowRun

    name = ctx.phase.config.get("mlflow") if isinstance(ctx.phase.config, dict) else None
    if not name:
        yield None
        return
    conn = ctx.connection(name)
    if conn.kind != Connection.Kind.MLFLOW:
        raise PhaseFailure(f"Connection '{name}' is {conn.kind}, not mlflow.")
    run, phase = ctx.run, ctx.phase
    git_sha = run.git_sha or run.job_version.git_sha
    tags = {"controlroom.run_id": str(run.pk), "controlroom.phase": phase.name,
            "controlroom.attempt": str(phase.attempt), "controlroom.workspace": run.workspace.slug,
            "controlroom.environment": run.environment.name, "controlroom.job": run.job.slug,
            "controlroom.git_sha": git_sha, "mlflow.source.git.commit": git_sha}
    try:
        client = client_for(conn, workspace_id=run.workspace_id)
        client.experiment_id = client.experiment(f"controlroom/{run.workspace.slug}/{run.job.slug}")
        client.run_id = client.create_run(client.experiment_id, f"{run.job.slug} #{run.pk} {phase.name}"
                                          f" (attempt {phase.attempt})", {k: v for k, v in tags.items() if v})
    except Exception as exc:  # a phase that asked for MLflow does not run without it
        raise PhaseFailure(f"MLflow run for this phase could not be made: {exc}") from None
    MlflowRun.objects.create(run=run, phase=phase, attempt=phase.attempt, connection=conn,
                             experiment_id=client.experiment_id, mlflow_run_id=client.run_id)
    ctx.log(f"MLflow run {client.run_id} in experiment {client.experiment_id}", mlflow_run_id=client.run_id)
    status = "FAILED"
    try:
        yield client
        status = "FINISHED"
    finally:
        try:
            if client.get_run()["info"].get("status") == "RUNNING":
                client.end_run(status)
        except MlflowError as exc:
            log.warning("the MLflow run %s could not be ended: %s", client.run_id, exc)


def mlflow_env(client: MlflowClient | None) -> dict[str, str]:
    """The variables MLflow's own client reads, for a phase that runs a process (a Spark driver)."""
    if client is None:
        return {}
    env = {"MLFLOW_TRACKING_URI": client.tracking_uri, "MLFLOW_RUN_ID": client.run_id,
           "MLFLOW_EXPERIMENT_ID": client.experiment_id}
    if client.token:
        env["MLFLOW_TRACKING_TOKEN"] = client.token
    return env
