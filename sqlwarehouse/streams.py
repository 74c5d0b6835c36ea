"""One interface over the SQL editor's engines: a statement's result as a stream of Arrow batches.

``open_engine`` gives a ``QueryEngine`` for a connection and an identity; ``run`` executes one
statement and returns a ``StatementStream`` (column names, engine type names, Arrow batches),
``cancel`` stops it from another thread, ``progress`` reports what the engine knows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from connections.models import Connection
from controlroom.models import Environment
from sqlwarehouse.engines import DuckDBEngine, EngineError, duckdb_engine_for, duckdb_error_text

BATCH_ROWS = 50_000


@dataclass
class StatementStream:
    columns: list[str]
    types: list[str]  # the engine's own type names, for display
    batches: Iterator[pa.RecordBatch]


class QueryEngine(Protocol):
    dialect: str
    query_id: str

    def run(self, sql: str, parameters: list[Any], timeout_s: int) -> StatementStream | None: ...

    def cancel(self) -> None: ...

    def progress(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class DuckDBQueryEngine:
    """The embedded DuckDB (sandboxed, read-only for read-only identities), streaming Arrow."""

    dialect = "duckdb"

    def __init__(self, engine: DuckDBEngine) -> None:
        self.engine = engine
        self.query_id = ""
        self._stack = contextlib.ExitStack()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._timer: threading.Timer | None = None
        self._rows = 0

    def run(self, sql: str, parameters: list[Any], timeout_s: int) -> StatementStream | None:
        if self._con is None:
            self._con = self._stack.enter_context(self.engine.connect())
        con = self._con
        self._timer = threading.Timer(timeout_s, self.engine.interrupt)
        self._timer.start()
        try:
            # A relation streams Arrow without a copy; statements that return nothing give None.
            relation = con.sql(sql, params=parameters or None)
            if relation is None:
                self._timer.cancel()
                return None
            columns, types = list(relation.columns), [str(t) for t in relation.types]
            reader = relation.to_arrow_reader(BATCH_ROWS)
        except duckdb.InterruptException as exc:
            raise EngineError(self._stopped_why(timeout_s)) from exc
        except duckdb.Error as exc:
            raise EngineError(duckdb_error_text(exc)) from exc

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    self._rows += batch.num_rows
                    yield batch
            except duckdb.InterruptException as exc:
                raise EngineError(self._stopped_why(timeout_s)) from exc
            except (duckdb.Error, pa.ArrowException) as exc:
                if self.engine._interrupted:
                    raise EngineError(self._stopped_why(timeout_s)) from exc
                raise EngineError(duckdb_error_text(exc)) from exc
            finally:
                if self._timer:
                    self._timer.cancel()

        return StatementStream(columns, types, batches())

    def _stopped_why(self, timeout_s: int) -> str:
        if self.engine._interrupted and not (self._timer and self._timer.finished.is_set()):
            return "The query was cancelled."
        return f"The query was stopped after {timeout_s} s (the workspace's statement timeout)."

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()
        self.engine.interrupt()

    def progress(self) -> dict[str, Any]:
        return {"state": "RUNNING", "rows": self._rows}

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        self._stack.close()


def open_engine(connection: Connection, *, user: str, read_only: bool,
                environment: Environment | None = None) -> QueryEngine:
    """The engine for ``connection`` in ``environment``, acting as ``user`` (read-only when asked)."""
    if connection.kind == Connection.Kind.DUCKDB:
        return DuckDBQueryEngine(duckdb_engine_for(connection, read_only=read_only, environment=environment))
    if connection.kind == Connection.Kind.TRINO:
        from sqlwarehouse.trino_engine import TrinoQueryEngine

        return TrinoQueryEngine.for_connection(connection, user=user, read_only=read_only)
    raise EngineError(f"Connection '{connection.name}' is of kind {connection.kind}, which cannot run SQL.")


def dialect_of(connection: Connection | None) -> str:
    return "trino" if connection is not None and connection.kind == Connection.Kind.TRINO else "duckdb"

