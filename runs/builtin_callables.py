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


@phase_callable("train_revenue_trend")
def train_revenue_trend(ctx: PhaseContext, *, table: str = "gold.daily_revenue", catalog: str = "lakehouse",
                        column: str = "revenue") -> dict[str, Any]:
    """A tiny model for the demo: a least-squares line through a gold Delta table's daily
    ``column`` (revenue ~ a + b·day), logged to the phase's MLflow run (``mlflow:`` in the
    config): its parameters, its fit (slope, intercept, RMSE, R²) and the model itself (an
    ``MLmodel`` file and the coefficients as JSON)."""
    import json
    import math

    from deltalake import DeltaTable

    from lakehouse.phases.common import lakehouse_for, split_table

    lake = lakehouse_for(ctx, {"catalog": catalog})
    parts = split_table(table)
    if parts is None:
        raise PhaseFailure(f"'{table}' is not a namespace.table name")
    namespace, name = parts
    rows = DeltaTable(lake.delta_uri(namespace, name), storage_options=lake.delta_storage_options()).to_pyarrow_table()
    if column not in rows.column_names or rows.num_rows < 2:
        raise PhaseFailure(f"{table} needs a {column!r} column and at least 2 rows to fit a line")
    ys = [float(v) for v in rows.column(column).to_pylist()]
    xs = [float(i) for i in range(len(ys))]
    n, mean_x, mean_y = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    intercept = mean_y - slope * mean_x
    residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
    rmse = math.sqrt(sum(r * r for r in residuals) / n)
    spread = sum((y - mean_y) ** 2 for y in ys)
    r2 = 1 - sum(r * r for r in residuals) / spread if spread else 1.0
    fit = {"slope": slope, "intercept": intercept, "rmse": rmse, "r2": r2}
    ctx.log(f"fitted {column} over {n} days of {table}: slope {slope:.4f}, R² {r2:.3f}")
    mlflow = getattr(ctx, "mlflow", None)
    if mlflow is not None:
        for key, value in (("table", table), ("column", column), ("rows", n), ("model", "least-squares line")):
            mlflow.log_param(key, value)
        for key, value in fit.items():
            mlflow.log_metric(key, value)
        mlflow.log_artifact("model/MLmodel", (
            "artifact_path: model\nflavors:\n  controlroom_linear:\n    data: model.json\n"
            f"    features: [day_index]\n    target: {column}\n").encode())
        mlflow.log_artifact("model/model.json", json.dumps({"intercept": intercept, "slope": slope}).encode())
    return {"rows": n, **fit}
