"""A PostgreSQL source for ``ingest`` phases (Odoo's database first): connection config, column
introspection with the Arrow type of each column, and chunked reads in watermark order.

Reads go through a server-side cursor in a REPEATABLE READ, read-only transaction, so a table is
read from one snapshot of the source and memory stays flat: one chunk is held at a time.

Types: integers → int64, ``numeric(p, s)`` → decimal(p, s), ``numeric`` without a precision (Odoo's
monetary fields) → decimal(38, 10); a value that does not fit is an error naming the column, never
a silently rounded number. Timestamps keep their zone (Odoo writes UTC without one); json, uuid,
arrays and anything else arrive as text."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from runs.executors.base import PhaseFailure

IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
QUALIFIED = re.compile(r"(?:([a-z_][a-z0-9_]{0,62})\.)?([a-z_][a-z0-9_]{0,62})")
_CONFIG_FIELDS = {"host", "port", "database", "user", "sslmode", "connect_timeout"}
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
UNBOUNDED_NUMERIC = pa.decimal128(38, 10)


def source_config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with a postgres connection's config (``connections.Connection.clean``)."""
    config = config or {}
    errors = [f"unknown postgres config field {key!r}" for key in sorted(set(config) - _CONFIG_FIELDS)]
    for key in ("host", "database", "user"):
        if not (isinstance(config.get(key), str) and config[key].strip()):
            errors.append(f"'{key}' is required (the source database's {key})")
    port = config.get("port", 5432)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        errors.append("'port' must be a whole number between 1 and 65535")
    if config.get("sslmode", "prefer") not in _SSLMODES:
        errors.append(f"'sslmode' must be one of {', '.join(_SSLMODES)}")
    return errors


@dataclass(frozen=True)
class SourceColumn:
    """One source column: its name, PostgreSQL type, Arrow type and the SELECT expression."""

    name: str
    pg_type: str
    arrow: pa.DataType
    cast_to_text: bool = False

    @property
    def select(self) -> str:
        quoted = f'"{self.name}"'
        return f"{quoted}::text AS {quoted}" if self.cast_to_text else quoted


def source_connect(connection: Any) -> Any:
    """An open psycopg connection to the source (read-only session), password from its secret
    reference; a PhaseFailure saying what was tried when it cannot be reached."""
    import psycopg

    from connections.services import SecretUnavailable, secret_resolve

    config = connection.config or {}
    password = None
    if connection.password_ref_id:
        try:
            password = secret_resolve(connection.password_ref, workspace_id=connection.workspace_id)
        except SecretUnavailable as exc:
            raise PhaseFailure(f"source '{connection.name}': {exc}") from None
    host, port = config.get("host"), config.get("port", 5432)
    try:
        conn = psycopg.connect(host=host, port=port, dbname=config.get("database"), user=config.get("user"),
                               password=password, sslmode=config.get("sslmode", "prefer"),
                               connect_timeout=int(config.get("connect_timeout", 10)),
                               application_name="controlroom-ingest", autocommit=False)
    except psycopg.Error as exc:
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise PhaseFailure(f"cannot reach the source '{connection.name}' at {host}:{port} "
                           f"(database {config.get('database')!r}): {cause}") from None
    conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    conn.commit()
    return conn


def _arrow_type(data_type: str, udt: str, precision: int | None, scale: int | None) -> tuple[pa.DataType, bool]:
    """(Arrow type, read as text) for a column of ``information_schema.columns``."""
    if udt in ("int2", "int4", "int8"):
        return pa.int64(), False
    if udt == "numeric":
        if precision is None or precision > 38:
            return UNBOUNDED_NUMERIC, False
        return pa.decimal128(precision, scale or 0), False
    if udt in ("float4", "float8"):
        return pa.float64(), False
    if udt == "bool":
        return pa.bool_(), False
    if udt == "date":
        return pa.date32(), False
    if udt == "timestamp":
        return pa.timestamp("us"), False
    if udt == "timestamptz":
        return pa.timestamp("us", tz="UTC"), False
    if udt == "bytea":
        return pa.binary(), False
    if udt in ("text", "varchar", "bpchar", "name", "citext"):
        return pa.string(), False
    return pa.string(), True  # json, jsonb, uuid, enums, arrays, intervals…: their text form


def source_columns(conn: Any, table: str) -> list[SourceColumn]:
    """The columns of ``[schema.]table`` in source order; PhaseFailure when there is no such table."""
    schema, name = split_source_table(table)
    rows = conn.execute(
        "SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale "
        "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, name)).fetchall()
    conn.commit()
    if not rows:
        raise PhaseFailure(f"the source has no table {schema}.{name} (or this connection's user cannot see it)")
    columns = []
    for column, data_type, udt, precision, scale in rows:
        arrow, as_text = _arrow_type(data_type, udt, precision, scale)
        columns.append(SourceColumn(name=column, pg_type=data_type, arrow=arrow, cast_to_text=as_text))
    return columns


def split_source_table(value: str) -> tuple[str, str]:
    """(schema, table) of ``[schema.]table``; public by default."""
    match = QUALIFIED.fullmatch(value)
    if match is None:
        raise PhaseFailure(f"{value!r} is not a plain [schema.]table name")
    return match.group(1) or "public", match.group(2)


def source_now(conn: Any, *, column: SourceColumn, settle_s: float) -> dt.datetime:
    """The source's clock minus ``settle_s``, in the watermark column's own terms: the read bound.

    A row changed before the bound but committed after the read is missed by a watermark alone
    (Odoo stamps ``write_date`` at its transaction's start); the bound leaves transactions up to
    ``settle_s`` long time to commit. Naive timestamp columns are taken as UTC, as Odoo writes them."""
    if column.arrow == pa.timestamp("us"):
        expression = "(clock_timestamp() AT TIME ZONE 'UTC') - make_interval(secs => %s)"
    else:
        expression = "clock_timestamp() - make_interval(secs => %s)"
    value = conn.execute(f"SELECT {expression}", (settle_s,)).fetchone()[0]
    conn.commit()
    return value


def read_changes(conn: Any, *, table: str, columns: list[SourceColumn], watermark: str, keys: list[str],
                 after: tuple[Any, ...] | None, until: dt.datetime, chunk_rows: int) -> Iterator[pa.Table]:
    """The rows with ``(watermark, keys) > after`` and ``watermark <= until`` in that order, as Arrow
    tables of at most ``chunk_rows`` rows, read from one snapshot of the source.

    A NULL watermark sorts as the epoch: such rows come with the first load, and again only when
    their watermark is set."""
    schema, name = split_source_table(table)
    order = [f"COALESCE(\"{watermark}\", 'epoch')"] + [f'"{k}"' for k in keys]
    where = [f"COALESCE(\"{watermark}\", 'epoch') <= %s"]
    params: list[Any] = [until]
    if after is not None:
        where.append(f"({', '.join(order)}) > ({', '.join(['%s'] * len(order))})")
        params.extend(after)
    query = (f"SELECT {', '.join(c.select for c in columns)} FROM \"{schema}\".\"{name}\" "
             f"WHERE {' AND '.join(where)} ORDER BY {', '.join(order)}")
    schema_arrow = pa.schema([pa.field(c.name, c.arrow) for c in columns])
    with conn.transaction(), conn.cursor(name=f"cr_ingest_{name}") as cursor:
        cursor.itersize = chunk_rows
        cursor.execute(query, params)
        while rows := cursor.fetchmany(chunk_rows):
            yield to_arrow(rows, schema_arrow, table=table)


def read_keys(conn: Any, *, table: str, keys: list[str], chunk_rows: int) -> Iterator[pa.Table]:
    """Every key of the source table, in chunks (the delete reconciliation's left side)."""
    schema, name = split_source_table(table)
    columns = ", ".join(f'"{k}"' for k in keys)
    with conn.transaction(), conn.cursor(name=f"cr_keys_{name}") as cursor:
        cursor.itersize = chunk_rows
        cursor.execute(f'SELECT {columns} FROM "{schema}"."{name}"')
        while rows := cursor.fetchmany(chunk_rows):
            yield pa.Table.from_pylist([dict(zip(keys, row, strict=True)) for row in rows])


def to_arrow(rows: list[tuple[Any, ...]], schema: pa.Schema, *, table: str) -> pa.Table:
    """Rows as an Arrow table of ``schema``; a value that does not fit its column's type (a
    10^40 amount in a decimal(38, 10)) is a PhaseFailure naming the table and column."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise PhaseFailure(f"{table}.{field.name}: a value does not fit {field.type} ({exc}); "
                               "declare the column's type in the source (numeric(p, s)) or leave it out") from None
    return pa.Table.from_arrays(arrays, schema=schema)
