"""The in-process phase context (Celery workers): parameters, logging, connections, artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connections.models import Connection
from connections.services import ConnectionMissing, connection_resolve
from controlroom.models import Environment
from runs.executors.base import PhaseFailure, StopHooks
from runs.models import Phase
from runs.spec import typed_parameters
from sqlwarehouse.datasets import URL as DATASETS_URL
from sqlwarehouse.engines import DuckDBEngine, EngineError, duckdb_engine_for, reaches_all_environments

__all__ = ["PhaseContext", "PhaseFailure"]


class PhaseContext(StopHooks):
    """A phase run by this process, with database access (``runs.executors.base`` protocol)."""

    def __init__(self, *, phase: Phase, lease_token: str) -> None:
        super().__init__(prefix=f"run{phase.run_id}-{phase.name}-")
        self.phase = phase
        self.run = phase.run
        self.run_id = self.run.pk
        self.environment_name = self.run.environment.name
        self.lease_token = lease_token
        # Built-in values every phase may bind ($datasets_dir, $run_id); specs cannot shadow them.
        # $datasets_dir is the workspace's read-only datasets file system, not a local folder.
        self.parameters: dict[str, Any] = {**typed_parameters(self.run.job_version.spec, self.run.parameters),
                                           "datasets_dir": DATASETS_URL, "run_id": self.run.pk}

    def log(self, message: str, *, level: str = "info", **payload: Any) -> None:
        from runs.services.events import phase_log

        phase_log(phase=self.phase, lease_token=self.lease_token, message=message, level=level, payload=payload)

    def progress(self, message: str, **payload: Any) -> None:
        """A PHASE_PROGRESS event (how far the phase's engine got), fenced like a log line."""
        from runs.services.events import phase_log

        phase_log(phase=self.phase, lease_token=self.lease_token, message=message, payload=payload,
                  type="PHASE_PROGRESS")

    def connection(self, name: str) -> Connection:
        try:
            return connection_resolve(workspace=self.run.workspace, environment=self.run.environment, name=name)
        except ConnectionMissing as exc:
            raise PhaseFailure(str(exc)) from None

    def duckdb(self, name: str) -> DuckDBEngine:
        """The job's engine for a DuckDB connection, able to read datasets: read-write, except for
        a connection whose one dataset every environment reads, which only a prod run may change
        (prod runs are started by admins, or by operators where the workspace allows it)."""
        conn = self.connection(name)
        if conn.kind != Connection.Kind.DUCKDB:
            raise PhaseFailure(f"Connection '{name}' is {conn.kind}, not duckdb.")
        read_only = reaches_all_environments(conn) and self.run.environment.name != Environment.Name.PROD
        try:
            engine = duckdb_engine_for(conn, read_only=read_only, environment=self.run.environment,
                                       extra_dirs=[self.scratch])
        except EngineError as exc:
            raise PhaseFailure(str(exc)) from None
        self.on_stop(engine.interrupt)
        return engine

    def add_artifact(self, *, name: str, path: Path, media_type: str) -> dict[str, Any]:
        """Store the file and register it, fenced by this phase's lease like every other write."""
        from artifacts.storage import get_store
        from controlroom.access import system_access
        from runs.services.outputs import phase_artifact_add

        staged = get_store().stage_file(path)
        artifact = phase_artifact_add(
            access=system_access(self.run.workspace), phase_id=self.phase.pk, lease_token=self.lease_token,
            name=name, media_type=media_type, sha256=staged.sha256, size=staged.size, staged=staged,
        )
        record = {"name": name, "sha256": artifact.sha256, "size": artifact.size, "media_type": media_type}
        self.outputs.append(record)
        self.log(f"artifact {name} registered ({artifact.size} bytes, sha256 {artifact.sha256[:12]})")
        return record

