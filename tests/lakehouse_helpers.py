"""Helpers for the lakehouse tests: run a job in-process, read tables back."""

from __future__ import annotations

import itertools
import textwrap
from typing import Any

import pyarrow as pa
import yaml

from controlroom.models import Environment
from lakehouse.catalogs import Lakehouse, catalog_for
from lakehouse.tables import table_arrow
from runs.models import Run
from runs.services.jobs import job_create
from runs.services.runs import run_create

_jobs = itertools.count(1)


def spec(*phases: dict[str, Any], name: str = "lake") -> str:
    """A job spec (YAML) of the given phases, each {"name", "kind", "config", ...}."""
    return yaml.safe_dump({"name": name, "phases": list(phases)}, sort_keys=False)


def phase(name: str, kind: str, **config: Any) -> dict[str, Any]:
    extra = {key: config.pop(key) for key in ("retries", "timeout", "depends_on") if key in config}
    return {"name": name, "kind": kind, **extra, "config": config}


def trigger(world, spec_text: str, capture, *, persona: str = "operator", environment: str = "dev",
            parameters: dict[str, Any] | None = None) -> Run:
    """Create and run a job to its end in this process (eager Celery)."""
    text = textwrap.dedent(spec_text).replace("name: lake\n", f"name: lake-{next(_jobs)}\n", 1)
    job = job_create(access=world.access(persona), spec_text=text)
    with capture(execute=True):
        run = run_create(access=world.access(persona), job=job, environment=environment,
                         parameters=parameters or {})
    run.refresh_from_db()
    return run


def lake_of(world, environment: str = "dev", *, workspace=None, name: str = "lakehouse") -> Lakehouse:
    ws = workspace or world.workspace
    return catalog_for(ws, Environment.objects.get(workspace=ws, name=environment), name)


def table_rows(lake: Lakehouse, fmt: str, table: str, *, version: int | None = None) -> pa.Table:
    namespace, name = table.split(".")
    data, _ = table_arrow(lake, fmt, namespace, name, version=version)
    flat = [c for c in data.column_names if not pa.types.is_nested(data.schema.field(c).type)]
    return data.sort_by([(c, "ascending") for c in flat])


def errors(run: Run) -> list[str]:
    return [p.error for p in run.phases.order_by("pk") if p.error]
