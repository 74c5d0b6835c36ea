"""`check` phases: data-quality expectations on a lakehouse table or on any DuckDB query.

config::

    table: ns.name          a registered lakehouse table, read through its catalog as Arrow
    catalog: lakehouse      (the catalog connection's name; "lakehouse" by default)
  or
    sql: "SELECT …"         one SELECT on a DuckDB connection (run parameters bound as $name)
    connection: warehouse

    checks: [{name, type, severity: warn|fail, …}]   (the types and their fields: lakehouse.checks)

Every check runs; rows that fail one (at most 100 per check) are stored as one Parquet artifact
whose first column names the check. A failing ``warn`` check is logged and the phase succeeds; a
failing ``fail`` check fails the phase, naming every such check. The output lists every check
with its status and failing count. Reading a lakehouse table records a read lineage edge to the
version checked.
"""

from __future__ import annotations

import re
from typing import Any

import duckdb
import pyarrow.parquet as pq
from django.conf import settings

from lakehouse.checks import CheckError, checks_config_errors, evaluate_checks
from lakehouse.phases import common
from runs.executors.base import PhaseFailure

_FIELDS = {"table", "catalog", "sql", "connection", "checks"}
_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")
RELATION = "__controlroom_checked"
ARTIFACT = "failing_rows.parquet"


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with a check phase's config, one message per problem."""
    errors = [f"unknown check config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    if ("table" in config) == ("sql" in config):
        errors.append("check phases need either 'table: namespace.name' or 'sql' (a DuckDB query)")
    if "table" in config and common.split_table(config["table"]) is None:
        errors.append("'table' must be namespace.name (plain lower-case identifiers)")
    if "sql" in config and not (isinstance(config["sql"], str) and config["sql"].strip()):
        errors.append("'sql' must be a non-empty string")
    if "catalog" in config and "table" not in config:
        errors.append("'catalog' goes with 'table'")
    if "connection" in config and "sql" not in config:
        errors.append("'connection' goes with 'sql'")
    for key in ("catalog", "connection"):
        if key in config and not (isinstance(config[key], str) and _NAME.fullmatch(config[key])):
            errors.append(f"'{key}' must be a connection's name (letters, digits, - and _)")
    errors += checks_config_errors(config.get("checks"))
    return errors


def execute(ctx: Any) -> dict[str, Any]:
    """Evaluate the checks, store the failing rows, fail the phase if a ``fail`` check failed."""
    config = ctx.phase.config
    if "table" in config:
        results, rows, subject = _check_table(ctx, config)
    else:
        results, rows, subject = _check_query(ctx, config)
    output: dict[str, Any] = {"subject": subject, "checks": [r.as_dict() for r in results]}
    for r in results:
        level = {"pass": "info", "warn": "warning", "fail": "error"}[r.status]
        detail = f": {r.message}" if r.message else ""
        ctx.log(f"check {r.name} ({r.type}, {r.severity}) {r.status}{detail}", level=level, check=r.as_dict())
    if rows is not None:
        path = ctx.scratch / ARTIFACT
        pq.write_table(rows, path)
        ctx.add_artifact(name=ARTIFACT, path=path, media_type="application/vnd.apache.parquet")
        output["failing_rows_artifact"] = ARTIFACT
    failed = [r.name for r in results if r.status == "fail"]
    warned = [r.name for r in results if r.status == "warn"]
    if failed:
        raise PhaseFailure(f"{len(failed)} check(s) failed on {subject}: {', '.join(failed)}"
                           + (f" (and {len(warned)} warned: {', '.join(warned)})" if warned else ""))
    ctx.log(f"{len(results)} check(s) on {subject}: {len(results) - len(warned)} passed, {len(warned)} warned")
    return output


def _evaluate(ctx: Any, con: duckdb.DuckDBPyConnection, checks: list[dict[str, Any]]) -> tuple[list, Any]:
    try:
        return evaluate_checks(con, checks, relation=RELATION)
    except CheckError as exc:
        raise PhaseFailure(str(exc)) from None
    except duckdb.InterruptException:
        raise PhaseFailure("the checks were stopped") from None
    except duckdb.Error as exc:
        from sqlwarehouse.engines import duckdb_error_text

        raise PhaseFailure(f"a check could not run: {duckdb_error_text(exc)}") from None


def _check_table(ctx: Any, config: dict[str, Any]) -> tuple[list, Any, str]:
    from lakehouse.phases.inputs import read_input, record_reads

    namespace, name = common.split_table(config["table"])
    lake = common.lakehouse_for(ctx, config)
    data, commit = read_input(ctx, lake, namespace, name)
    spill = ctx.scratch / "duckdb-spill"
    spill.mkdir(exist_ok=True)
    con = duckdb.connect(config={"memory_limit": settings.DUCKDB_MEMORY_LIMIT, "temp_directory": str(spill),
                                 "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    ctx.on_stop(con.interrupt)
    try:
        con.register(RELATION, data)
        # The checks' SQL (a predicate is the author's text) sees this table and nothing else.
        con.execute("SET enable_external_access = false")
        con.execute("SET python_enable_replacements = false")
        con.execute("SET lock_configuration = true")
        results, rows = _evaluate(ctx, con, config["checks"])
    finally:
        con.close()
    record_reads(ctx, [(commit, data)])
    return results, rows, f"{namespace}.{name} (version {commit.version})"


def _check_query(ctx: Any, config: dict[str, Any]) -> tuple[list, Any, str]:
    from sqlwarehouse.engines import EngineError, duckdb_error_text

    engine = ctx.duckdb(config.get("connection", "warehouse"))
    try:
        with engine.connect() as con:
            try:
                statements = con.extract_statements(config["sql"])
            except duckdb.Error as exc:
                raise PhaseFailure(f"SQL error: {duckdb_error_text(exc)}") from None
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise PhaseFailure("'sql' of a check phase must be one SELECT statement")
            statement = statements[0]
            values = {k: v for k, v in ctx.parameters.items() if k in statement.named_parameters}
            missing = set(statement.named_parameters) - set(values)
            if missing:
                raise PhaseFailure(f"No value for parameter(s): {', '.join(sorted(missing))}.")
            query = statement.query.strip().rstrip(";")
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {RELATION} AS {query}", values or None)
            except duckdb.InterruptException:
                raise PhaseFailure("the checks were stopped") from None
            except duckdb.Error as exc:
                raise PhaseFailure(f"SQL error: {duckdb_error_text(exc)}") from None
            # The temporary table ends with this connection.
            return (*_evaluate(ctx, con, config["checks"]), "the query's rows")
    except EngineError as exc:
        raise PhaseFailure(str(exc)) from None
