"""What the `iceberg` and `delta` phase kinds share: config checks, the source (DuckDB SQL or a
datasets file, read as Arrow), type normalisation, schema comparison, the commit identity that
makes retries idempotent, and the test-only fault point after a commit.

Config fields common to both kinds::

    table: ns.name            catalog: lakehouse (a catalog connection's name)
    sql: "SELECT …"  |  file: orders.csv (a path in the workspace's datasets://)
    connection: warehouse     (the DuckDB connection that runs the SQL or reads the file)
    inputs: [ns.name, …]      (lakehouse tables the SQL reads, each visible as a view named by
                               its table name; each read is recorded as lineage)
    keys: [col, …]            schema_evolution: false
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from django.conf import settings

from lakehouse.catalogs import IDENT, CatalogError, Lakehouse, catalog_for
from runs.executors.base import PhaseFailure

log = logging.getLogger("controlroom.lakehouse")

CONN_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")
COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
FILE = re.compile(r"(datasets://)?/?([\w.-]+/)*[\w.-]+\.(csv|parquet)")
RUN_ID, PHASE, ATTEMPT = "controlroom.run-id", "controlroom.phase", "controlroom.attempt"


# --- config ---------------------------------------------------------------------------------


def split_table(value: Any) -> tuple[str, str] | None:
    if isinstance(value, str) and value.count(".") == 1:
        namespace, name = value.split(".")
        if IDENT.fullmatch(namespace) and IDENT.fullmatch(name):
            return namespace, name
    return None


def common_errors(config: dict[str, Any], *, kind: str, source_required: bool) -> list[str]:
    """Errors in the fields every lakehouse kind shares (see the module docstring)."""
    errors = []
    if split_table(config.get("table")) is None:
        errors.append(f"{kind} phases need 'table: namespace.name' (plain lower-case identifiers)")
    for key in ("catalog", "connection"):
        if key in config and not (isinstance(config[key], str) and CONN_NAME.fullmatch(config[key])):
            errors.append(f"'{key}' must be a connection's name (letters, digits, - and _)")
    sources = [key for key in ("sql", "file") if key in config]
    if source_required and len(sources) != 1:
        errors.append("give exactly one source: 'sql' (a DuckDB query) or 'file' (a .csv or .parquet dataset)")
    if not source_required and sources:
        errors.append(f"'{sources[0]}' has no use here")
    if "sql" in config and not (isinstance(config["sql"], str) and config["sql"].strip()):
        errors.append("'sql' must be a non-empty string")
    if "file" in config and not (isinstance(config["file"], str) and FILE.fullmatch(config["file"])
                                 and ".." not in config["file"].split("/")):
        errors.append("'file' must be a .csv or .parquet path inside the workspace's datasets")
    inputs = config.get("inputs", [])
    if not (isinstance(inputs, list) and all(split_table(i) for i in inputs)):
        errors.append("'inputs' must be a list of namespace.name tables")
    elif len({i.split(".")[1] for i in inputs}) != len(inputs):
        errors.append("two 'inputs' share a table name; each is visible to the SQL by its name")
    if "inputs" in config and "sql" not in config:
        errors.append("'inputs' are read by the 'sql' source only")
    if "keys" in config and not column_list(config["keys"]):
        errors.append("'keys' must be a non-empty list of column names")
    if not isinstance(config.get("schema_evolution", False), bool):
        errors.append("'schema_evolution' must be true or false")
    return errors


def column_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(c, str) and COLUMN.fullmatch(c) for c in value)


# --- context --------------------------------------------------------------------------------


def lakehouse_for(ctx: Any, config: dict[str, Any]) -> Lakehouse:
    """The phase's catalog. Lakehouse kinds record versions in the database, so they run only
    where the context has it (a Celery worker), never on the standalone executor."""
    if not hasattr(ctx, "run"):
        raise PhaseFailure(f"{ctx.phase.kind} phases write the table registry and run on Control Room's "
                           "workers only, not on the standalone executor.")
    try:
        return catalog_for(ctx.run.workspace, ctx.run.environment, config.get("catalog", "lakehouse"))
    except CatalogError as exc:
        raise PhaseFailure(str(exc)) from None


_FORMAT_NAMES = {"iceberg": "an Iceberg", "delta": "a Delta"}


def write_target(ctx: Any, config: dict[str, Any], fmt: str) -> tuple[Lakehouse, str, str, str]:
    """(catalog, namespace, name, "namespace.name") of the table a ``fmt`` phase writes; a clear
    PhaseFailure when the registry knows that name in the catalog as a table of the other format."""
    from lakehouse.services import registered_format

    lake = lakehouse_for(ctx, config)
    namespace, name = split_table(config["table"])
    qualified = f"{namespace}.{name}"
    known = registered_format(phase=ctx.phase, catalog_name=lake.name, namespace=namespace, name=name)
    if known is not None and known != fmt:
        raise PhaseFailure(f"{qualified} is {_FORMAT_NAMES[known]} table in catalog '{lake.name}', "
                           f"not {_FORMAT_NAMES[fmt]} one")
    return lake, namespace, name, qualified


def commit_identity(ctx: Any) -> dict[str, str]:
    """The run, phase and attempt a commit carries (Iceberg snapshot summary, Delta commit info)."""
    return {RUN_ID: str(ctx.run.pk), PHASE: ctx.phase.name, ATTEMPT: str(ctx.phase.attempt)}


def delta_app_id(ctx: Any) -> str:
    """The Delta application-transaction id of this (run, phase): one per phase, every attempt."""
    return f"controlroom-run-{ctx.run.pk}-phase-{ctx.phase.pk}"


def hold_lease_row(phase: Any) -> None:
    """Inside ``lease_fence``, right before a table commit: keep the phase's lease row locked until
    the transaction ends. PostgreSQL's fence already holds a row lock; SQLite has none, so a write
    takes the database's write lock, and the reaper and a new claim wait for the commit alike."""
    from django.db import connection

    from runs.models import Phase

    if connection.vendor == "sqlite":
        Phase.objects.filter(pk=phase.pk).update(lease_token=phase.lease_token)


def refuse_if_stopped(ctx: Any) -> None:
    """Called right before a commit: a cancelled, timed-out or lease-less phase commits nothing."""
    if ctx.stopped:
        raise PhaseFailure("stopped before the table commit: nothing was written")


def after_commit(ctx: Any, table: str) -> None:
    """Tests only (LAKEHOUSE_FAULT_DIR): on a first attempt, leave a marker right after the table
    commit and sleep, so the test can kill -9 the worker between the commit and ``complete``."""
    folder = getattr(settings, "LAKEHOUSE_FAULT_DIR", "")
    if not folder or ctx.phase.attempt != 1:
        return
    marker = Path(folder) / f"{ctx.run.pk}-{ctx.phase.name}-{ctx.phase.attempt}.committed"
    marker.write_text(f"{table} {os.getpid()}\n")
    time.sleep(300)


# --- the source -----------------------------------------------------------------------------


def read_source(ctx: Any, config: dict[str, Any], views: dict[str, pa.Table] | None = None) -> pa.Table:
    """The source rows as one Arrow table: the SQL's result (run parameters bound as $name, the
    input tables registered as views) or a datasets file. The phase's stop hook interrupts a DuckDB
    read; a Parquet file is read by pyarrow, whole (``_read_parquet``)."""
    from sqlwarehouse.engines import EngineError, duckdb_error_text

    engine = ctx.duckdb(config.get("connection", "warehouse"))
    if "file" in config:
        path = config["file"].removeprefix("datasets://").lstrip("/")
        if path.endswith(".parquet") and getattr(engine, "datasets", None) is not None:
            return _read_parquet(ctx, engine.datasets, path)
        reader = "read_parquet" if path.endswith(".parquet") else "read_csv"
        sql, parameters = f"SELECT * FROM {reader}($source_file)", {"source_file": f"datasets:///{path}"}
    else:
        sql, parameters = config["sql"].strip().rstrip(";"), dict(ctx.parameters)
    import duckdb

    try:
        with engine.connect() as con:
            for view, data in (views or {}).items():
                con.register(view, data)
            statements = con.extract_statements(sql)
            if len(statements) != 1:
                raise PhaseFailure("the 'sql' source must be exactly one query")
            statement = statements[0]
            missing = set(statement.named_parameters) - set(parameters)
            if missing:
                raise PhaseFailure(f"No value for parameter(s): {', '.join(sorted(missing))}.")
            values = {k: v for k, v in parameters.items() if k in statement.named_parameters}
            relation = con.sql(statement.query, params=values or None)
            if relation is None:
                raise PhaseFailure("the source SQL returns no rows to write (it must be a query)")
            return relation.to_arrow_table()
    except duckdb.InterruptException:
        raise PhaseFailure("the source query was stopped") from None
    except duckdb.Error as exc:
        if ctx.stopped:
            raise PhaseFailure("the source query was stopped") from None
        raise PhaseFailure(f"source error: {duckdb_error_text(exc)}") from None
    except EngineError as exc:
        raise PhaseFailure(str(exc)) from None


def _read_parquet(ctx: Any, area: Path, path: str) -> pa.Table:
    """A datasets Parquet file read by pyarrow (no DuckDB connection, no copy through SQL),
    through the workspace's read-only datasets file system, which refuses paths leaving the area.
    Missing and outside files fail with the message the DuckDB reader gives."""
    import pyarrow.parquet as pq

    from sqlwarehouse.datasets import ReadOnlyDatasets

    if ctx.stopped:
        raise PhaseFailure("the source query was stopped")
    try:
        handle = ReadOnlyDatasets(area).open(path, "rb")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise PhaseFailure(f'source error: IO Error: No files found that match the pattern "datasets:///{path}"') \
            from None
    # A pyarrow read cannot be interrupted mid-file: a stop (cancel, lost lease) or the timeout
    # arriving now takes effect once the file is read, just below. Acceptable for one local file;
    # the executor's timeout still fails the phase (PhaseFailure) and nothing is committed.
    try:
        with handle:
            data = pq.ParquetFile(handle).read(use_pandas_metadata=False)
    except (pa.ArrowException, OSError) as exc:
        raise PhaseFailure(f"source error: {exc}") from None
    if ctx.stopped:
        raise PhaseFailure("the source query was stopped")
    return data


# --- types and schemas ----------------------------------------------------------------------


def _unsupported(name: str, t: pa.DataType, why: str) -> PhaseFailure:
    return PhaseFailure(f"column '{name}' has type {t}, which lakehouse tables cannot hold: {why}")


def _normal_array(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    t = column.type
    if isinstance(t, pa.ExtensionType) or isinstance(t, pa.BaseExtensionType):
        hint = ("integers wider than 128 bits (DuckDB BIGNUM); cast it to DOUBLE or DECIMAL(38, 0) in the query"
                if "bignum" in str(t) else "cast it to a standard type in the query")
        raise _unsupported(name, t, hint)
    if pa.types.is_dictionary(t):
        return _normal_array(name, column.cast(t.value_type))
    if pa.types.is_null(t):
        raise PhaseFailure(f"column '{name}' holds only NULLs and has no type; cast it in the query")
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t) or pa.types.is_uint16(t):
        return column.cast(pa.int32())
    if pa.types.is_uint32(t):
        return column.cast(pa.int64())
    if pa.types.is_uint64(t):
        biggest = pc.max(column).as_py() if len(column) else None
        if biggest is not None and biggest > 2**63 - 1:
            raise PhaseFailure(f"column '{name}' holds integers above 2^63-1 ({biggest}), which lakehouse tables "
                               "cannot hold; cast it to DECIMAL(38, 0) or DOUBLE in the query")
        return column.cast(pa.int64())
    if pa.types.is_float16(t):
        return column.cast(pa.float32())
    if pa.types.is_timestamp(t):
        target = pa.timestamp("us", tz="UTC" if t.tz else None)
        return column if t == target else column.cast(target, safe=False)
    if pa.types.is_decimal(t) and t.precision > 38:
        raise _unsupported(name, t, "decimals hold at most 38 digits; cast it to DOUBLE or DECIMAL(38, s)")
    if pa.types.is_interval(t) or pa.types.is_duration(t):
        raise _unsupported(name, t, "store the interval as a number of seconds or as text")
    if pa.types.is_string_view(t):
        return column.cast(pa.string())
    if pa.types.is_binary_view(t):
        return column.cast(pa.binary())
    return column


def normalise(data: pa.Table) -> pa.Table:
    """The source with types every format holds (small and unsigned integers widened, timestamps
    in microseconds and UTC, dictionaries decoded); a clear error for what no format holds."""
    names = data.column_names
    if len(set(names)) != len(names):
        raise PhaseFailure("the source has two columns with the same name; alias them in the query")
    for name in names:
        if not COLUMN.fullmatch(name):
            raise PhaseFailure(f"column name {name!r} is not a plain identifier; alias it in the query")
    columns = [_normal_array(name, data.column(name)) for name in names]
    return pa.Table.from_arrays(columns, names=names)


_WIDENINGS = {("int32", "int64"), ("float", "double")}


def type_name(t: pa.DataType) -> str:
    """A type's name for comparisons: string and large_string are the same column type."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return f"list<{type_name(t.value_type)}>"
    return str(t)


def compatible(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether a source column can be written into a table column as is (or widened)."""
    a, b = type_name(source), type_name(target)
    if a == b or (a, b) in _WIDENINGS:
        return True
    if pa.types.is_decimal(source) and pa.types.is_decimal(target):  # every value fits, unchanged
        return source.scale <= target.scale and source.precision - source.scale <= target.precision - target.scale
    return False


def schema_differences(source: pa.Schema, table: pa.Schema) -> tuple[list[str], list[str], list[str]]:
    """(added, missing, retyped) column descriptions of ``source`` against the table's schema."""
    theirs = {f.name: f.type for f in table}
    mine = {f.name: f.type for f in source}
    added = [f"{n} ({type_name(t)})" for n, t in mine.items() if n not in theirs]
    missing = [n for n in theirs if n not in mine]
    retyped = [f"{n} ({type_name(theirs[n])} → {type_name(t)})" for n, t in mine.items()
               if n in theirs and not compatible(t, theirs[n])]
    return added, missing, retyped


def schema_mismatch(table: str, added: list[str], missing: list[str], retyped: list[str]) -> PhaseFailure:
    parts = [f"{label}: {', '.join(cols)}" for label, cols in
             (("added", added), ("missing", missing), ("retyped", retyped)) if cols]
    return PhaseFailure(f"the source's columns differ from table {table}'s ({'; '.join(parts)}); "
                        "set schema_evolution: true to change the table")


def conform(source: pa.Table, table: pa.Schema) -> pa.Table:
    """The source cast to the table's column types where they are compatible (widening)."""
    fields = {f.name: f for f in table}
    columns = []
    for name in source.column_names:
        column = source.column(name)
        target = fields.get(name)
        if target is not None and column.type != target.type and compatible(column.type, target.type):
            column = column.cast(target.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, names=source.column_names)


def fingerprint(data: Any) -> str:
    """The canonical content fingerprint (lakehouse.fingerprint)."""
    from lakehouse.fingerprint import table_fingerprint

    return table_fingerprint(data)
