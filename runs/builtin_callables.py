"""Callables shipped with Control Room for `python` phases."""

from __future__ import annotations

import time
from typing import Any

from runs.callables import phase_callable
from runs.executors.context import PhaseContext, PhaseFailure


@phase_callable("check_table")
def check_table(
    ctx: PhaseContext, *, table: str, min_rows: int = 1, not_null: list[str] | None = None,
    connection: str = "warehouse",
) -> dict[str, Any]:
    """A data-quality gate: the table has at least ``min_rows`` and no nulls in ``not_null``."""
    engine = ctx.duckdb(connection)
    if not table.isidentifier():
        raise PhaseFailure(f"'{table}' is not a table name")
    rows = engine.execute(f"SELECT count(*) FROM {table}").rows[0][0]
    ctx.log(f"{table}: {rows} rows (need at least {min_rows})")
    if rows < min_rows:
        raise PhaseFailure(f"{table} has {rows} rows, fewer than {min_rows}")
    for column in not_null or []:
        if not column.isidentifier():
            raise PhaseFailure(f"'{column}' is not a column name")
        nulls = engine.execute(f"SELECT count(*) FROM {table} WHERE {column} IS NULL").rows[0][0]
        if nulls:
            raise PhaseFailure(f"{table}.{column} has {nulls} null value(s)")
        ctx.log(f"{table}.{column}: no nulls")
    return {"table": table, "rows": rows}


@phase_callable("sleep")
def sleep(ctx: PhaseContext, *, seconds: float = 1.0, steps: int = 1) -> dict[str, Any]:
    """Wait, logging each step: for demos and tests of live logs and timeouts."""
    for step in range(steps):
        time.sleep(seconds / steps)
        if ctx.stopped:
            raise PhaseFailure("stopped")
        ctx.log(f"step {step + 1}/{steps}")
    return {"slept": seconds}


@phase_callable("fail")
def fail(ctx: PhaseContext, *, message: str = "failed on purpose") -> None:
    """Always fails: exercises retries and failure handling."""
    raise PhaseFailure(message)
