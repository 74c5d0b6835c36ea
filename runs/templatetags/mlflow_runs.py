"""``{% run_mlflow run as linked %}``: the MLflow runs linked to a run's phases, with their state
and latest metrics read from the tracking server now (templates/runs/_mlflow.html)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django import template

from runs.models import Run

register = template.Library()
log = logging.getLogger(__name__)
METRICS_SHOWN = 6


@dataclass
class LinkedRun:
    phase: str
    attempt: int
    run_id: str
    url: str = ""
    status: str = ""
    metrics: list[tuple[str, float]] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    problem: str = ""


@register.simple_tag
def run_mlflow(run: Run) -> list[LinkedRun]:
    """Each MLflow run of ``run``'s phases; a server that cannot answer leaves its rows with a
    note instead of figures (the page never fails for it)."""
    from runs.mlflow import MlflowError, client_for

    rows, clients = [], {}
    for link in run.mlflow_runs.select_related("phase", "connection").order_by("pk"):
        row = LinkedRun(phase=link.phase.name, attempt=link.attempt, run_id=link.mlflow_run_id)
        rows.append(row)
        if link.connection is None:
            row.problem = "its MLflow connection was deleted"
            continue
        try:
            client = clients.get(link.connection_id) or client_for(link.connection, workspace_id=run.workspace_id)
            clients[link.connection_id] = client
            row.url = client.ui_url(link.mlflow_run_id, link.experiment_id)
            found = client.get_run(link.mlflow_run_id)
        except (MlflowError, LookupError) as exc:
            log.warning("MLflow run %s could not be read: %s", link.mlflow_run_id, exc)
            row.problem = "MLflow did not answer; figures unavailable"
            continue
        row.status = found.get("info", {}).get("status", "")
        data = found.get("data", {})
        row.metrics = sorted((m["key"], m["value"]) for m in data.get("metrics", []))[:METRICS_SHOWN]
        row.params = sorted((p["key"], p["value"]) for p in data.get("params", []))[:METRICS_SHOWN]
    return rows
