"""The engine a dbt phase builds on: its profile (written into the scratch folder only) and the
reads the phase makes afterwards (what each built relation holds, the failing rows of a test).

DuckDB: the connection's database file in the run's environment (``duckdb_database``), written
only where the run may write (a connection that reaches every environment only by prod runs, as
for ``sql`` phases). Trino: the connection's host and port, its service user authenticating with
the password from its secret reference and impersonating the run's identity (``run_identity``, as
a ``trino`` phase does: the starter, ``~ro`` when they may only read, ``svc.<workspace>`` for runs
nobody started by hand); ``database`` is the connection's catalog. Afterwards the phase reads as
the read-only identity only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from django.conf import settings

from connections.models import Connection
from controlroom.models import Environment
from lakehouse.models import Table
from runs.executors.base import PhaseFailure

PROFILE, TARGET = "controlroom", "run"
THREADS = 1
READ_TIMEOUT_S = 600
WRITING = {"build", "run", "seed", "snapshot"}


def quote(name: str) -> str:
    """An identifier, double-quoted (DuckDB and Trino alike)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Stats:
    """What a relation holds now, for its table version."""

    schema: list[dict[str, Any]]
    row_count: int
    fingerprint: str


@dataclass
class DbtTarget:
    """A resolved connection: the profile dbt gets and how the phase reads back afterwards."""

    ctx: Any
    connection: Connection
    format: str  # Table.Format
    profile: dict[str, Any]
    writable: bool = True
    why_read_only: str = ""
    masked: list[str] = field(default_factory=list)

    @property
    def catalog_name(self) -> str:
        """The registry's catalog of the relations: the DuckDB connection, or the Trino catalog."""
        return self.connection.name if self.format == Table.Format.DUCKDB else str(self.profile["database"])

    def relation(self, database: str | None, schema: str, name: str) -> str:
        """The quoted name the phase reads a relation by (DuckDB: in the connection's database)."""
        if self.format == Table.Format.DUCKDB:
            return f"{quote(schema)}.{quote(name)}"
        return f"{quote(database or str(self.profile['database']))}.{quote(schema)}.{quote(name)}"

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        """The rows of one SELECT, as Arrow batches (the connection is released at the end)."""
        if self.format == Table.Format.DUCKDB:
            yield from _duckdb_batches(self.ctx, self.connection.name, sql)
        else:
            yield from _trino_batches(self.ctx, self.connection, sql)

    def stats(self, relation: str) -> Stats:
        """Schema, row count and canonical fingerprint of the relation's rows now."""
        from lakehouse.fingerprint import table_fingerprint

        counted = [0]
        batches = self.batches(f"SELECT * FROM {relation}")
        first = next(batches, None)
        if first is None:
            raise PhaseFailure(f"{relation} could not be read back")

        def counting() -> Iterator[pa.RecordBatch]:
            for batch in _chain(first, batches):
                counted[0] += batch.num_rows
                yield batch

        schema = first.schema
        fingerprint = table_fingerprint(pa.RecordBatchReader.from_batches(schema, counting()))
        columns = [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]
        return Stats(schema=columns, row_count=counted[0], fingerprint=fingerprint)

    def rows(self, relation: str, limit: int) -> pa.Table:
        """At most ``limit`` rows of the relation."""
        batches = list(self.batches(f"SELECT * FROM {relation} LIMIT {int(limit)}"))
        return pa.Table.from_batches(batches) if batches else pa.table({})


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _duckdb_batches(ctx: Any, name: str, sql: str) -> Iterator[pa.RecordBatch]:
    import duckdb

    from sqlwarehouse.engines import EngineError, duckdb_error_text

    engine = ctx.duckdb(name)
    try:
        with engine.connect() as con:
            reader = con.sql(sql).to_arrow_reader(65_536)
            # A RecordBatch with at least its schema, even for an empty relation.
            empty = True
            for batch in reader:
                empty = False
                yield batch
            if empty:
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
    except duckdb.Error as exc:
        raise PhaseFailure(f"reading back from DuckDB failed: {duckdb_error_text(exc)}") from None
    except EngineError as exc:
        raise PhaseFailure(f"reading back from DuckDB failed: {exc}") from None


def _trino_batches(ctx: Any, connection: Connection, sql: str) -> Iterator[pa.RecordBatch]:
    from runs.executors.trino import run_identity
    from sqlwarehouse.engines import EngineError
    from sqlwarehouse.engines.trino import TrinoQueryEngine

    user, _ = run_identity(ctx.run, connection)
    try:
        engine = TrinoQueryEngine.for_connection(connection, user=user, read_only=True)
        ctx.on_stop(engine.cancel)
        stream = engine.run(sql, [], READ_TIMEOUT_S)
        if stream is None:
            return
        schema = None
        empty = True
        for batch in stream.batches:
            schema, empty = batch.schema, False
            yield batch
        if empty:
            from sqlwarehouse.engines.trino import arrow_type

            schema = pa.schema([pa.field(c, arrow_type(t)) for c, t in zip(stream.columns, stream.types, strict=True)])
            yield pa.RecordBatch.from_pylist([], schema=schema)
    except EngineError as exc:
        raise PhaseFailure(f"reading back from Trino failed: {exc}") from None


def target_for(ctx: Any, config: dict[str, Any], command: str) -> DbtTarget:
    """The connection named by the config (default ``warehouse``) as a dbt target, or
    PhaseFailure when it is of another kind or the run may not write through it."""
    name = config.get("connection", "warehouse")
    conn = ctx.connection(name)
    if conn.kind == Connection.Kind.DUCKDB:
        return _duckdb(ctx, conn, config, command)
    if conn.kind == Connection.Kind.TRINO:
        return _trino(ctx, conn, config, command)
    raise PhaseFailure(f"Connection '{name}' is {conn.kind}; dbt phases build on duckdb or trino connections.")


def _duckdb(ctx: Any, conn: Connection, config: dict[str, Any], command: str) -> DbtTarget:
    from sqlwarehouse.engines import EngineError, duckdb_database, reaches_all_environments

    environment = ctx.run.environment
    if reaches_all_environments(conn) and environment.name != Environment.Name.PROD:
        raise PhaseFailure(f"connection '{conn.name}' holds one database for every environment, so only prod runs "
                           f"write through it, and dbt {command} writes (its schemas, test failures)")
    try:
        database = duckdb_database(conn, environment)
    except EngineError as exc:
        raise PhaseFailure(str(exc)) from None
    database.parent.mkdir(parents=True, exist_ok=True)
    spill = ctx.scratch / "duckdb-spill"
    spill.mkdir(exist_ok=True)
    profile = {"type": "duckdb", "path": str(database), "schema": config.get("target_schema") or "main",
               "threads": THREADS,
               "settings": {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false",
                            "memory_limit": settings.DUCKDB_MEMORY_LIMIT, "temp_directory": str(spill)}}
    return DbtTarget(ctx=ctx, connection=conn, format=Table.Format.DUCKDB, profile=profile)


def _trino(ctx: Any, conn: Connection, config: dict[str, Any], command: str) -> DbtTarget:
    from connections.services import SecretUnavailable, secret_resolve
    from runs.executors.trino import run_identity
    from sqlwarehouse.engines.trino import identity

    user, why = run_identity(ctx.run, conn)
    if why and command in WRITING:
        raise PhaseFailure(f"dbt {command} writes, but {why}")
    options = conn.config or {}
    catalog, schema = options.get("catalog"), config.get("target_schema") or options.get("schema")
    if not options.get("host"):
        raise PhaseFailure(f"Connection '{conn.name}' names no Trino host.")
    if not catalog:
        raise PhaseFailure(f"Connection '{conn.name}' names no catalog: dbt builds in the connection's catalog")
    if not schema:
        raise PhaseFailure(f"give 'target_schema': connection '{conn.name}' names no schema")
    try:
        port = int(options.get("port", 8080))
    except (TypeError, ValueError):
        raise PhaseFailure(f"Connection '{conn.name}': the port must be a number.") from None
    verify = options.get("verify", True)
    profile: dict[str, Any] = {
        "type": "trino", "host": str(options["host"]), "port": port, "database": str(catalog), "schema": str(schema),
        "threads": THREADS, "http_scheme": str(options.get("http_scheme") or "http"),
        "cert": verify if isinstance(verify, str) and verify.strip() else bool(verify),
        "session_properties": {"query_max_run_time": f"{ctx.phase.timeout_s or 3600}s"},
    }
    who = identity(user, read_only=bool(why))
    masked = []
    if conn.password_ref_id:
        try:
            password = secret_resolve(conn.password_ref, workspace_id=conn.workspace_id)
        except SecretUnavailable as exc:
            raise PhaseFailure(f"Connection '{conn.name}': {exc}") from None
        profile.update(method="ldap", user=str(options.get("user") or "controlroom"), password=password,
                       impersonation_user=who)
        profile.pop("http_scheme")  # ldap is https only
        masked.append(password)
    else:
        profile.update(method="none", user=who)
    return DbtTarget(ctx=ctx, connection=conn, format=Table.Format.TRINO, profile=profile, writable=not why,
                     why_read_only=why, masked=masked)


def profiles_write(folder: Path, target: DbtTarget) -> Path:
    """``profiles.yml`` with the one target, readable by this user only; the folder it is in."""
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / "profiles.yml"
    text = yaml.safe_dump({PROFILE: {"target": TARGET, "outputs": {TARGET: target.profile}}}, sort_keys=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return folder
