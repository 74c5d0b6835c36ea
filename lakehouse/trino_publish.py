"""Delta tables made readable in Trino: each Delta table a phase commits is registered in the Trino
Delta catalog of its lake.

Iceberg tables are listed by their catalog, which Trino reads directly. A Delta table is only a
folder under the lake's ``delta_root``, so Trino's Delta connector lists it from a metastore: a
file metastore kept on the same S3 (``lakehouse.trino_catalog.trino_delta_catalog_properties``).
A Trino connection says which of its catalogs holds which lake's Delta tables::

    {"host": ..., "delta_catalogs": {"<catalog connection name>": "<Trino Delta catalog>"}}

After a phase succeeds, every Delta table it wrote is registered there (``CREATE SCHEMA IF NOT
EXISTS`` and ``system.register_table``), as the run's own Trino identity and under the same rule as
a ``trino`` phase: a run that may only read through that connection registers nothing, and says
why in its log. Registration is idempotent (a table already there is checked to point at the same
folder) and never fails the phase: Trino being down costs a warning line, and the next commit to
the table registers it again. Readers see each new Delta version at once: Trino reads the table's
own log at query time.
"""

from __future__ import annotations

import logging
from typing import Any

from connections.models import Connection
from connections.services import connections_serving
from lakehouse.catalogs import IDENT
from lakehouse.models import Table, TableEdge

log = logging.getLogger(__name__)

KEY = "delta_catalogs"
TIMEOUT_S = 30  # one registration statement; Trino answers in well under a second


ICEBERG_KEY = "iceberg_catalogs"  # {catalog connection: Trino Iceberg catalog}, for links to the editor


def trino_catalogs_errors(config: Any) -> list[str]:
    """What is wrong with a Trino connection's ``delta_catalogs`` and ``iceberg_catalogs`` (absent is fine)."""
    errors = []
    for key in (KEY, ICEBERG_KEY):
        mapping = config.get(key) if isinstance(config, dict) else None
        if mapping is None:
            continue
        if not isinstance(mapping, dict) or len(mapping) > 50:
            errors.append(f"'{key}' must map catalog connection names to Trino catalog names (at most 50)")
            continue
        bad = [f"{k}: {v}" for k, v in mapping.items()
               if not (isinstance(k, str) and IDENT.fullmatch(k.replace("-", "_")) and len(k) <= 64)
               or not (isinstance(v, str) and IDENT.fullmatch(v))]
        if bad:
            errors.append(f"'{key}' entries must be 'catalog connection': 'trino_catalog' names "
                          f"({', '.join(bad)[:200]})")
    return errors


def _trino_connections(run: Any) -> list[Connection]:
    """The run's Trino connections that name a Delta catalog (``connections_serving``)."""
    return [conn for conn in connections_serving(workspace_id=run.workspace_id, environment_id=run.environment_id,
                                                 kind=Connection.Kind.TRINO) if (conn.config or {}).get(KEY)]


def written_delta_tables(phase: Any) -> list[Table]:
    """The Delta tables (on S3) this phase's attempts wrote, from the registry's write edges."""
    ids = (TableEdge.objects.filter(phase=phase, direction=TableEdge.Direction.WRITE,
                                    table_version__table__format=Table.Format.DELTA)
           .values_list("table_version__table_id", flat=True))
    return list(Table.objects.filter(pk__in=set(ids), location__startswith="s3://").order_by("namespace", "name"))


def after_phase(ctx: Any, output: dict[str, Any]) -> None:
    """The post-success hook (``runs.executors.AFTER_SUCCESS``): register what the phase wrote."""
    run = getattr(ctx, "run", None)
    if run is None or getattr(ctx, "stopped", False):
        return  # a standalone executor's phase, or one stopped meanwhile
    tables = written_delta_tables(ctx.phase)
    if not tables:
        return
    for conn in _trino_connections(run):
        mapping = conn.config[KEY]
        mine = [t for t in tables if t.catalog_name in mapping]
        if mine:
            _publish(ctx, run, conn, mapping, mine)


def _publish(ctx: Any, run: Any, conn: Connection, mapping: dict[str, str], tables: list[Table]) -> None:
    from runs.executors.base import PhaseFailure
    from runs.executors.trino import run_identity
    from sqlwarehouse.engines.base import EngineError
    from sqlwarehouse.engines.trino import TrinoQueryEngine

    names = ", ".join(f"{mapping[t.catalog_name]}.{t.namespace}.{t.name}" for t in tables)
    try:
        user, read_only_why = run_identity(run, conn)
    except PhaseFailure as exc:
        ctx.log(f"Trino ({conn.name}): {names} not registered: {exc}", level="warning")
        return
    if read_only_why:
        ctx.log(f"Trino ({conn.name}): {names} not registered, because {read_only_why}", level="warning")
        return
    try:
        engine = TrinoQueryEngine.for_connection(conn, user=user, read_only=False)
    except EngineError as exc:
        ctx.log(f"Trino ({conn.name}): {names} not registered: {exc}", level="warning")
        return
    for table in tables:
        catalog = mapping[table.catalog_name]
        qualified = f"{catalog}.{table.namespace}.{table.name}"
        try:
            state = _register(engine, catalog, table)
        except EngineError as exc:
            log.warning("registering %s in Trino connection %s: %s", qualified, conn.pk, exc, exc_info=exc)
            ctx.log(f"Trino ({conn.name}): {qualified} not registered: {exc}", level="warning")
            continue
        ctx.log(f"Trino ({conn.name}): {qualified} {state}", table=f"{table.namespace}.{table.name}",
                trino_table=qualified)


def _register(engine: Any, catalog: str, table: Table) -> str:
    """Register ``table`` in Trino's ``catalog``; return what happened (EngineError if it failed)."""
    from sqlwarehouse.engines.base import EngineError

    _drain(engine.run(f'CREATE SCHEMA IF NOT EXISTS "{catalog}"."{table.namespace}"', [], TIMEOUT_S))
    try:
        # CALL takes no parameters: literals, quoted (names are plain identifiers already).
        args = ", ".join(f"{key} => '{value.replace(chr(39), chr(39) * 2)}'" for key, value in (
            ("schema_name", table.namespace), ("table_name", table.name), ("table_location", table.location)))
        _drain(engine.run(f'CALL "{catalog}".system.register_table({args})', [], TIMEOUT_S))
    except EngineError as exc:
        if getattr(exc.__cause__, "error_name", "") != "ALREADY_EXISTS":
            raise
        there = _location(engine, catalog, table)
        if there.rstrip("/") != table.location.rstrip("/"):
            raise EngineError(f"Trino already has this name for another folder ({there}); it was left alone") \
                from None
        return "is registered (already)"
    return "is registered: Trino reads it from now on"


def _location(engine: Any, catalog: str, table: Table) -> str:
    """The folder Trino's table of that name reads (from its SHOW CREATE TABLE)."""
    import re

    stream = engine.run(f'SHOW CREATE TABLE "{catalog}"."{table.namespace}"."{table.name}"', [], TIMEOUT_S)
    text = "".join(str(v) for batch in (stream.batches if stream else ()) for v in batch.column(0).to_pylist())
    found = re.search(r"location = '([^']*)'", text)
    return found.group(1) if found else "an unknown location"


def _drain(stream: Any) -> None:
    for _ in (stream.batches if stream is not None else ()):
        pass
