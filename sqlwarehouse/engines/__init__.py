"""The one query-engine package: DuckDB (embedded) and Trino behind ``QueryEngine``.

The SQL editor, the schema browser and every phase kind get their engines here.
"""

from __future__ import annotations

from connections.models import Connection
from controlroom.models import Environment
from sqlwarehouse.engines.base import BATCH_ROWS, EngineError, QueryEngine, QueryResult, StatementStream, collect
from sqlwarehouse.engines.duckdb import (
    DuckDBEngine,
    DuckDBQueryEngine,
    duckdb_database,
    duckdb_engine_for,
    duckdb_error_text,
    per_environment,
    reaches_all_environments,
)

__all__ = [
    "BATCH_ROWS", "DuckDBEngine", "DuckDBQueryEngine", "EngineError", "QueryEngine", "QueryResult",
    "StatementStream", "collect", "dialect_of", "duckdb_database", "duckdb_engine_for", "duckdb_error_text",
    "open_engine", "per_environment", "reaches_all_environments",
]


def open_engine(connection: Connection, *, user: str, read_only: bool,
                environment: Environment | None = None) -> QueryEngine:
    """The engine for ``connection`` in ``environment``, acting as ``user`` (read-only when asked)."""
    if connection.kind == Connection.Kind.DUCKDB:
        return DuckDBQueryEngine(duckdb_engine_for(connection, read_only=read_only, environment=environment))
    if connection.kind == Connection.Kind.TRINO:
        from sqlwarehouse.engines.trino import TrinoQueryEngine

        return TrinoQueryEngine.for_connection(connection, user=user, read_only=read_only)
    raise EngineError(f"Connection '{connection.name}' is of kind {connection.kind}, which cannot run SQL.")


def dialect_of(connection: Connection | None) -> str:
    """The SQL dialect of a connection's engine (DuckDB's when there is none)."""
    return "trino" if connection is not None and connection.kind == Connection.Kind.TRINO else "duckdb"
