"""A connection's schema (catalogs, schemas, tables, columns) read from its engine and kept as a
``SchemaSnapshot``, for the schema browser and the editor's completion.

The engine is read as the user's read-only identity, so a snapshot never shows more than a
read-only query of that user could; it is shared by everyone who uses the connection and
replaced by a refresh. Reads of a stored snapshot never touch the engine, and each process keeps
the last parsed namespaces (checked against ``fetched_at``), so a page does not parse megabytes of
JSON per request. Namespaces handed out are shared: callers must not change them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from connections.models import Connection
from controlroom.models import Environment
from controlroom.network import network_cause
from sqlwarehouse.engines import EngineError, QueryEngine, open_engine, per_environment
from sqlwarehouse.engines.base import EngineUnreachable
from sqlwarehouse.models import SchemaSnapshot

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 120  # per statement; metadata of a large catalog can take a while
SKIPPED_CATALOGS = frozenset({"system"})  # Trino's own runtime tables: noise in a browser
TRINO_COLUMNS_SQL = (
    "SELECT table_schema, table_name, column_name, data_type FROM {catalog}.information_schema.columns "
    "WHERE table_schema <> 'information_schema' ORDER BY 1, 2, ordinal_position"
)
DUCKDB_COLUMNS_SQL = (
    "SELECT table_catalog, table_schema, table_name, column_name, data_type FROM information_schema.columns "
    "WHERE table_catalog = current_database() AND table_schema <> 'information_schema' "
    "ORDER BY 1, 2, 3, ordinal_position"
)

# Parsed namespaces a process keeps, counted in tables: 10,000 tables of 8 columns take about 20 MB.
CACHE_MAX_TABLES = 50_000

Namespace = dict[str, dict[str, dict[str, list[list[str]]]]]


@dataclass
class _Parsed:
    fetched_at: Any
    namespace: Namespace
    tables: int
    derived: dict[str, Any] = field(default_factory=dict)  # e.g. the completion JSON, built once


class _ParsedCache:
    """Parsed namespaces by snapshot id, least recently used first out. Loading a 10,000-table
    snapshot costs 100-300 ms of JSON parsing (most of it the garbage collector walking the new
    lists); checking ``fetched_at`` costs one small query. A refresh writes a new ``fetched_at``,
    so every process sees the change on its next read."""

    def __init__(self, max_tables: int) -> None:
        self.max_tables = max_tables
        self._entries: OrderedDict[int, _Parsed] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, snapshot: SchemaSnapshot) -> _Parsed | None:
        with self._lock:
            entry = self._entries.get(snapshot.pk)
            if entry is None or entry.fetched_at != snapshot.fetched_at:
                return None
            self._entries.move_to_end(snapshot.pk)
            return entry

    def put(self, snapshot: SchemaSnapshot) -> _Parsed:
        entry = _Parsed(snapshot.fetched_at, snapshot.namespace or {}, snapshot.tables)
        with self._lock:
            self._entries[snapshot.pk] = entry
            self._entries.move_to_end(snapshot.pk)
            while len(self._entries) > 1 and sum(e.tables for e in self._entries.values()) > self.max_tables:
                self._entries.popitem(last=False)
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


parsed_cache = _ParsedCache(CACHE_MAX_TABLES)


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def snapshot_environment(connection: Connection, environment: Environment | None) -> Environment | None:
    """The environment a snapshot of ``connection`` belongs to: the chosen one (default dev) for a
    DuckDB connection with one database per environment; None (one snapshot) for the others."""
    if not per_environment(connection):
        return None
    if environment is not None and environment.workspace_id == connection.workspace_id:
        return environment
    return Environment.objects.get(workspace_id=connection.workspace_id, name=Environment.Name.DEV)


def schema_fetch(*, connection: Connection, user: AbstractBaseUser,
                 environment: Environment | None = None) -> SchemaSnapshot:
    """Read the connection's schema from its engine as ``user``'s read-only identity and store it,
    replacing the previous snapshot (of ``environment``, for a connection with one database per
    environment).

    A Trino catalog that cannot be read is left out and named in ``error``; the others are kept.
    Raises ``EngineError`` (and keeps the stored snapshot) when the engine cannot be read at all.
    """
    began = time.monotonic()
    environment = snapshot_environment(connection, environment)
    engine = open_engine(connection, user=user.username, read_only=True, environment=environment)
    try:
        if connection.kind == Connection.Kind.TRINO:
            namespace, errors = _read_trino(engine, connection)
        else:
            namespace, errors = _read_duckdb(engine), []
    except EngineError:
        raise
    except Exception as exc:  # the client's own failures (connection refused, TLS, HTTP)
        log.warning("schema fetch failed", exc_info=True, extra={"connection_id": connection.pk})
        unreachable = getattr(engine, "unreachable", None)
        raise EngineUnreachable(unreachable(exc) if unreachable else f"The engine of connection '{connection.name}' "
                                f"could not be reached: {network_cause(exc)}.") from exc
    finally:
        engine.close()
    tables = sum(len(schema) for catalog in namespace.values() for schema in catalog.values())
    snapshot, _ = SchemaSnapshot.objects.update_or_create(connection=connection, environment=environment, defaults={
        "namespace": namespace, "tables": tables, "fetched_at": timezone.now(),
        "fetch_ms": int((time.monotonic() - began) * 1000), "error": "\n".join(errors),
    })
    snapshot.connection = connection  # spares a query for whoever reads its config next
    parsed_cache.put(snapshot)
    return snapshot


def _read_trino(engine: QueryEngine, connection: Connection) -> tuple[Namespace, list[str]]:
    stream = engine.run("SHOW CATALOGS", [], FETCH_TIMEOUT_S)
    catalogs = sorted(name for batch in (stream.batches if stream else []) for name in batch.column(0).to_pylist()
                      if name not in SKIPPED_CATALOGS)
    namespace: Namespace = {}
    errors: list[str] = []
    for catalog in catalogs:
        namespace[catalog] = {}
        try:
            stream = engine.run(TRINO_COLUMNS_SQL.format(catalog=quote_identifier(catalog)), [], FETCH_TIMEOUT_S)
            for batch in stream.batches if stream else []:
                _add_rows(namespace, [catalog] * batch.num_rows, *(batch.column(i).to_pylist() for i in range(4)))
        except EngineError as exc:
            # One broken catalog (a database down, access denied) must not hide the others.
            log.warning("schema fetch: catalog %s failed: %s", catalog, exc,
                        extra={"connection_id": connection.pk, "catalog": catalog})
            errors.append(f"{catalog}: {' '.join(str(exc).split())}")
            del namespace[catalog]  # a part of a catalog would look complete
    return namespace, errors


def _read_duckdb(engine: QueryEngine) -> Namespace:
    namespace: Namespace = {}
    stream = engine.run(DUCKDB_COLUMNS_SQL, [], FETCH_TIMEOUT_S)
    for batch in stream.batches if stream else []:
        _add_rows(namespace, *(batch.column(i).to_pylist() for i in range(5)))
    return namespace


def _add_rows(namespace: Namespace, catalogs: list, schemas: list, tables: list, columns: list, types: list) -> None:
    """Add one batch of (catalog, schema, table, column, type) rows; batches are dropped after this."""
    for catalog, schema, table, column, type_ in zip(catalogs, schemas, tables, columns, types, strict=True):
        namespace.setdefault(catalog, {}).setdefault(schema, {}).setdefault(table, []).append([column, type_])


def schema_get(*, connection: Connection, user: AbstractBaseUser, max_age_s: int | None = None,
               environment: Environment | None = None) -> SchemaSnapshot:
    """The stored snapshot of ``connection`` (in ``environment``, where that matters); read from the
    engine (as ``user``) only when there is none, or when it is older than ``max_age_s``. A stale
    snapshot is returned as it is when the refresh fails. The namespace comes from this process's
    cache when it is current."""
    if per_environment(connection) and environment is None:
        scope: dict[str, Any] = {"environment__name": Environment.Name.DEV}  # no query for the default
    else:
        environment = snapshot_environment(connection, environment)
        scope = {"environment": environment}
    snapshot = SchemaSnapshot.objects.filter(connection=connection, **scope).defer("namespace").first()
    if snapshot is None:
        return schema_fetch(connection=connection, user=user, environment=environment)
    snapshot.connection = connection
    if max_age_s is not None and snapshot.fetched_at < timezone.now() - timedelta(seconds=max_age_s):
        try:
            return schema_fetch(connection=connection, user=user, environment=environment)
        except EngineError:
            log.warning("schema refresh failed; serving the stored snapshot", exc_info=True,
                        extra={"connection_id": connection.pk})
    entry = parsed_cache.get(snapshot)
    if entry is None:
        # Read the namespace of this very version: a refresh between the two reads must not
        # pair the old fetched_at with the new namespace in the cache.
        row = SchemaSnapshot.objects.filter(pk=snapshot.pk).values_list("namespace", "fetched_at", "tables").first()
        if row is None:  # deleted meanwhile (its connection was)
            return schema_fetch(connection=connection, user=user, environment=environment)
        snapshot.namespace, snapshot.fetched_at, snapshot.tables = row
        entry = parsed_cache.put(snapshot)
    snapshot.namespace = entry.namespace
    return snapshot


def default_location(snapshot: SchemaSnapshot) -> tuple[str, str]:
    """(catalog, schema) that unqualified names resolve to: the connection's configured ones, else
    the engine's own default (DuckDB: its database, ``main``), else the first of each."""
    namespace, config = snapshot.namespace or {}, snapshot.connection.config or {}
    catalog = str(config.get("catalog") or "")
    if not catalog:
        catalog = min(namespace, default="")
    schemas = namespace.get(catalog) or {}
    schema = str(config.get("schema") or "")
    if not schema:
        engine_default = "main" if snapshot.connection.kind == Connection.Kind.DUCKDB else ""
        schema = engine_default if engine_default in schemas else min(schemas, default="")
    return catalog, schema


def completion_json(snapshot: SchemaSnapshot) -> dict[str, Any]:
    """What the editor's completion loads: ``{"namespace": {catalog: {schema: {table: [column,
    ...]}}}, "default_catalog", "default_schema"}`` (column names only). The namespace part is built
    once per snapshot version and process, and shared: do not change it."""
    entry = parsed_cache.get(snapshot) if snapshot.pk else None
    if entry is not None and entry.namespace is snapshot.namespace:
        if "completion" not in entry.derived:
            entry.derived["completion"] = _column_names(entry.namespace)
        namespace = entry.derived["completion"]
    else:
        namespace = _column_names(snapshot.namespace or {})
    catalog, schema = default_location(snapshot)
    return {"namespace": namespace, "default_catalog": catalog, "default_schema": schema}


def _column_names(namespace: Namespace) -> dict[str, Any]:
    return {
        c: {s: {t: [column[0] for column in columns] for t, columns in tables.items()} for s, tables in schemas.items()}
        for c, schemas in namespace.items()
    }


@dataclass(frozen=True)
class SchemaNode:
    name: str
    tables: int


@dataclass(frozen=True)
class CatalogNode:
    name: str
    schemas: list[SchemaNode]
    more_schemas: int  # left out beyond the limit
    tables: int


def schema_tree(snapshot: SchemaSnapshot | None, *, schema_limit: int = 500) -> list[CatalogNode]:
    """Catalogs and their schemas with table counts, sorted (no tables: those load per schema)."""
    tree = []
    for catalog, schemas in sorted(((snapshot.namespace if snapshot else None) or {}).items()):
        names = sorted(schemas)
        tree.append(CatalogNode(
            name=catalog, schemas=[SchemaNode(name, len(schemas[name])) for name in names[:schema_limit]],
            more_schemas=max(0, len(names) - schema_limit), tables=sum(len(t) for t in schemas.values()),
        ))
    return tree


@dataclass(frozen=True)
class TableNode:
    name: str
    columns: list[list[str]]  # [[name, type], ...]


def schema_tables(snapshot: SchemaSnapshot, *, catalog: str, schema: str, q: str = "",
                  limit: int = 500) -> tuple[list[TableNode], int] | None:
    """Tables of one schema whose name contains ``q`` (case-insensitive), sorted, at most ``limit``;
    with the number that matched. None when the snapshot has no such schema."""
    tables = ((snapshot.namespace or {}).get(catalog) or {}).get(schema)
    if tables is None:
        return None
    needle = q.strip().lower()
    names = sorted(name for name in tables if needle in name.lower())
    return [TableNode(name, tables[name]) for name in names[:limit]], len(names)


def failed_catalogs(snapshot: SchemaSnapshot | None) -> list[tuple[str, str]]:
    """(catalog, the engine's message) for each catalog the last fetch could not read."""
    if snapshot is None or not snapshot.error:
        return []
    return [tuple(line.split(": ", 1)) if ": " in line else (line, "") for line in snapshot.error.splitlines()]
