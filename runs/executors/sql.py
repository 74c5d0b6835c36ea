"""`sql` phases on DuckDB: run statements, optionally into a table or a result artifact.

config: sql (required), connection (default "warehouse"), table (CREATE OR REPLACE TABLE
<table> AS <sql>), artifact (a file name ending .csv or .parquet: the result is registered
as an artifact). Run parameters are bound as $name values, never pasted into the text.
"""

from __future__ import annotations

import re
from typing import Any

from runs.executors.context import PhaseContext, PhaseFailure
from sqlwarehouse.engines import EngineError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # fullmatch: no trailing newline slips through
_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")  # a connection's name (a slug, as SlugField allows)
_FORMATS = {".csv": ("CSV, HEADER", "text/csv"), ".parquet": ("PARQUET", "application/vnd.apache.parquet")}
_FIELDS = {"sql", "connection", "table", "artifact"}


def config_errors(config: dict[str, Any]) -> list[str]:
    errors = [f"unknown sql config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    sql = config.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        errors.append("sql phases need a non-empty 'sql' string")
    if "table" in config and not (isinstance(config["table"], str) and _IDENT.fullmatch(config["table"])):
        errors.append(f"'table' must be a plain identifier, not {config['table']!r}")
    if "connection" in config and not (isinstance(config["connection"], str)
                                       and _NAME.fullmatch(config["connection"])):
        errors.append(f"'connection' must be a connection's name (letters, digits, - and _), "
                      f"not {config['connection']!r}")
    artifact = config.get("artifact")
    if artifact is not None and not (
        isinstance(artifact, str) and re.fullmatch(r"[\w.-]+", artifact) and artifact.endswith(tuple(_FORMATS))
    ):
        errors.append("'artifact' must be a file name ending in .csv or .parquet")
    if "table" in config and artifact is not None:
        errors.append("choose either 'table' or 'artifact', not both")
    return errors


def execute(ctx: PhaseContext) -> dict[str, Any]:
    config = ctx.phase.config
    engine = ctx.duckdb(config.get("connection", "warehouse"))
    sql = config["sql"].strip().rstrip(";")
    output: dict[str, Any] = {}
    try:
        if "table" in config:
            ctx.log(f"creating table {config['table']}")
            engine.execute(f"CREATE OR REPLACE TABLE {config['table']} AS {sql}", parameters=ctx.parameters,
                           timeout_s=ctx.phase.timeout_s)
            count = engine.execute(f"SELECT count(*) FROM {config['table']}").rows[0][0]
            ctx.log(f"table {config['table']} has {count} rows", rows=count)
            output = {"table": config["table"], "rows": count}
        elif "artifact" in config:
            name = config["artifact"]
            fmt, media_type = _FORMATS[name[name.rindex("."):]]
            target = ctx.scratch / name
            engine.execute(f"COPY ({sql}) TO $target (FORMAT {fmt})",
                           parameters={**ctx.parameters, "target": str(target)}, timeout_s=ctx.phase.timeout_s)
            ctx.add_artifact(name=name, path=target, media_type=media_type)
        else:
            result = engine.execute(sql, parameters=ctx.parameters, max_rows=20, timeout_s=ctx.phase.timeout_s)
            ctx.log(f"statement done; {len(result.rows)} row(s) shown" if result.columns else "statement done")
            for row in result.rows:
                ctx.log(" | ".join(map(str, row)))
    except EngineError as exc:
        raise PhaseFailure(f"SQL error: {exc}") from None
    return output
