"""The one query-engine interface, used by the SQL editor and by phases alike.

``open_engine`` (in ``sqlwarehouse.engines``) gives a :class:`QueryEngine` for a connection and an
identity; ``run`` executes one statement and returns a :class:`StatementStream` (column names,
engine type names, Arrow batches) or None for a statement without rows; ``cancel`` stops it from
another thread (a phase registers it as a stop hook), ``progress`` reports what the engine knows,
``close`` releases it. :func:`collect` turns a stream into a bounded :class:`QueryResult`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

BATCH_ROWS = 50_000


class EngineError(Exception):
    """A query failed in the engine; the message is the engine's, fit for the user."""


class EngineUnreachable(EngineError):
    """The engine could not be reached: the message says what was tried (scheme, host, port) and
    why it failed, and nothing else, so every page may show it (the schema browser hides the
    detail of other engine errors, which may name server paths)."""


@dataclass
class StatementStream:
    columns: list[str]
    types: list[str]  # the engine's own type names, for display
    batches: Iterator[pa.RecordBatch]


@dataclass
class QueryResult:
    columns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    truncated: bool = False


class QueryEngine(Protocol):
    dialect: str
    query_id: str

    def run(self, sql: str, parameters: list[Any], timeout_s: int) -> StatementStream | None: ...

    def cancel(self) -> None: ...

    def progress(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def collect(stream: StatementStream | None, *, max_rows: int) -> QueryResult:
    """The first ``max_rows`` rows of a stream as Python tuples (``truncated`` when there were more);
    the rest of the stream is not read."""
    if stream is None:
        return QueryResult()
    rows: list[tuple[Any, ...]] = []
    truncated = False
    for batch in stream.batches:
        take = batch.slice(0, max_rows - len(rows))
        rows.extend(zip(*(column.to_pylist() for column in take.columns), strict=True))
        if len(rows) >= max_rows:
            truncated = take.num_rows < batch.num_rows or _more(stream.batches)
            break
    return QueryResult(columns=stream.columns, types=stream.types, rows=rows, truncated=truncated)


def _more(batches: Iterator[pa.RecordBatch]) -> bool:
    return any(batch.num_rows for batch in batches)
