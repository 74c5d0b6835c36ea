"""The phase kinds Control Room knows, each with the module that validates and runs it.

A kind's module has ``config_errors(config) -> list[str]`` and ``execute(ctx) -> dict``
(see ``runs.executors.base``). Modules are imported on first use, so a web process that
never runs a phase of a kind never imports its engine."""

from __future__ import annotations

KINDS: dict[str, str] = {
    "sql": "runs.executors.sql",
    "python": "runs.executors.python",
    "check": "lakehouse.phases.check",
    "iceberg": "lakehouse.phases.iceberg",
    "delta": "lakehouse.phases.delta",
    "trino": "runs.executors.trino",
    "spark": "lakehouse.phases.spark",
    "dbt": "lakehouse.phases.dbt",
    "ingest": "lakehouse.phases.ingest",
}

# Kinds whose phases go to their own Celery queue, served only by workers that can run them
# (a spark worker has the JDK and pyspark; web and SQL workers need neither).
KIND_QUEUES: dict[str, str] = {"spark": "spark"}
