"""`ingest` phases: copy tables of a PostgreSQL source (Odoo's database first) into bronze Iceberg
tables, incrementally by a watermark column.

config::

    source: odoo                 a postgres connection (the run's environment's, else the workspace's)
    catalog: lakehouse           the catalog connection (default "lakehouse")
    namespace: bronze            where the bronze tables go
    tables:                      each a source table, or a mapping:
      - res_partner
      - {table: sale_order, target: sale_order, watermark: write_date, keys: [id], columns: [...]}
    schema_drift: add | fail     new source columns: added to bronze in the same commit, or refused
    deletes: reconcile | ignore  hard deletes: found by comparing keys, written as tombstones
    reconcile_every_s: 3600      how often (0: every run)
    chunk_rows: 50000            rows read and written at a time (memory stays flat)
    commit_rows: 200000          rows per commit during a large load (each commit is resumable; a
                                 transaction's memory grows with it)
    settle_s: 5                  read only changes at least this old on the source's clock

Exactly once: each commit's snapshot carries the watermark position of its last row and, on the
last commit of a run, the read bound (``lakehouse.ingest.bronze``). A run starts from the position
of the newest commit, so a retry after a kill, or the next run, resumes where the data stops.
Commits are made under the phase's lease, which is checked (and held) in the same breath, and
Iceberg's own check that the branch did not move refuses a concurrent writer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
from django.utils import timezone

from lakehouse.ingest import bronze
from lakehouse.ingest.source import (
    IDENT,
    QUALIFIED,
    SourceColumn,
    read_changes,
    read_keys,
    source_columns,
    source_connect,
    source_now,
)
from lakehouse.phases import common
from lakehouse.services import (
    Commit,
    registered_format,
    table_version_find,
    table_version_record,
    table_version_source_advance,
)
from lakehouse.tables import iceberg_stats, iceberg_table
from runs.executors.base import PhaseFailure
from runs.services.fence import lease_fence

_FIELDS = {"source", "catalog", "namespace", "tables", "schema_drift", "deletes", "reconcile_every_s",
           "chunk_rows", "commit_rows", "settle_s"}
_TABLE_FIELDS = {"table", "target", "watermark", "keys", "columns"}
_LIMITS = {"chunk_rows": (1, 1_000_000), "commit_rows": (1, 100_000_000), "reconcile_every_s": (0, 31_536_000),
           "settle_s": (0, 3600)}
DEFAULTS = {"schema_drift": "add", "deletes": "reconcile", "reconcile_every_s": 3600, "chunk_rows": 50_000,
            "commit_rows": 200_000, "settle_s": 5}


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with an ingest phase's config, one message per problem."""
    errors = [f"unknown ingest config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    for key in ("source", "catalog"):
        if key in config and not (isinstance(config[key], str) and common.CONN_NAME.fullmatch(config[key])):
            errors.append(f"'{key}' must be a connection's name (letters, digits, - and _)")
    if "source" not in config:
        errors.append("ingest phases need 'source': the postgres connection to read from")
    if not (isinstance(config.get("namespace"), str) and IDENT.fullmatch(config["namespace"])):
        errors.append("ingest phases need 'namespace': the bronze namespace (a plain lower-case identifier)")
    tables = config.get("tables")
    if not (isinstance(tables, list) and tables):
        errors.append("'tables' must list the source tables to ingest")
    else:
        specs = []
        for index, item in enumerate(tables):
            problem = _table_problem(item)
            if problem:
                errors.append(f"tables[{index}]: {problem}")
            else:
                specs.append(table_spec(item))
        targets = [spec["target"] for spec in specs]
        if len(set(targets)) != len(targets):
            errors.append("two tables are ingested into the same target; give one a 'target'")
    if config.get("schema_drift", "add") not in ("add", "fail"):
        errors.append("'schema_drift' must be add or fail")
    if config.get("deletes", "reconcile") not in ("reconcile", "ignore"):
        errors.append("'deletes' must be reconcile or ignore")
    for key, (low, high) in _LIMITS.items():
        value = config.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            errors.append(f"'{key}' must be a number between {low} and {high:,}")
    return errors


def _table_problem(item: Any) -> str | None:
    if isinstance(item, str):
        return None if QUALIFIED.fullmatch(item) else f"{item!r} is not a plain [schema.]table name"
    if not isinstance(item, dict):
        return "give a table name or a mapping with 'table'"
    if unknown := sorted(set(item) - _TABLE_FIELDS):
        return f"unknown field(s) {', '.join(unknown)}"
    if not (isinstance(item.get("table"), str) and QUALIFIED.fullmatch(item["table"])):
        return "'table' must be a plain [schema.]table name"
    for key in ("target", "watermark"):
        if key in item and not (isinstance(item[key], str) and IDENT.fullmatch(item[key])):
            return f"'{key}' must be a plain lower-case identifier"
    for key in ("keys", "columns"):
        if key in item and not (isinstance(item[key], list) and item[key]
                                and all(isinstance(c, str) and IDENT.fullmatch(c) for c in item[key])):
            return f"'{key}' must be a non-empty list of column names"
    spec = table_spec(item)
    if "columns" in item and not {spec["watermark"], *spec["keys"]} <= set(item["columns"]):
        return "'columns' must include the watermark and key columns"
    if set(spec["keys"]) & set(bronze.META) or spec["watermark"] in bronze.META:
        return "key and watermark columns cannot be bronze's own columns"
    return None


def table_spec(item: str | dict[str, Any]) -> dict[str, Any]:
    """One table's settings with defaults (Odoo's: ``write_date``, tie-broken by ``id``)."""
    item = {"table": item} if isinstance(item, str) else item
    return {"table": item["table"], "target": item.get("target") or item["table"].split(".")[-1],
            "watermark": item.get("watermark", "write_date"), "keys": list(item.get("keys", ["id"])),
            "columns": item.get("columns")}


def lineage_inputs(run: Any, phase: Any) -> list[tuple[str, str]]:
    """(namespace, name) of each source table, as OpenLineage names PostgreSQL datasets:
    ``postgres://host:port`` and ``database.schema.table`` (lineage.events)."""
    from connections.services import connection_resolve
    from lakehouse.ingest.source import split_source_table

    config = phase.config or {}
    conn = connection_resolve(workspace=run.workspace, environment=run.environment, name=config["source"])
    where = conn.config or {}
    namespace = f"postgres://{where.get('host')}:{where.get('port', 5432)}"
    return [(namespace, f"{where.get('database')}.{'.'.join(split_source_table(table_spec(item)['table']))}")
            for item in config.get("tables", [])]


# --- execute ----------------------------------------------------------------------------------


def execute(ctx: Any) -> dict[str, Any]:
    """Ingest every configured table; the output lists each with what was written."""
    config = {**DEFAULTS, **ctx.phase.config}
    source = ctx.connection(config["source"])
    if source.kind != "postgres":
        raise PhaseFailure(f"connection '{config['source']}' is {source.kind}, not a postgres source")
    lake = common.lakehouse_for(ctx, config)
    conn = source_connect(source)
    ctx.on_stop(conn.cancel_safe)  # stops the query where it runs, on the source
    try:
        return {"tables": [_ingest_table(ctx, lake, conn, config, table_spec(item)) for item in config["tables"]]}
    finally:
        conn.close()


def _ingest_table(ctx: Any, lake: Any, conn: Any, config: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    namespace, target = config["namespace"], spec["target"]
    qualified = f"{namespace}.{target}"
    known = registered_format(phase=ctx.phase, catalog_name=lake.name, namespace=namespace, name=target)
    if known not in (None, "iceberg"):
        raise PhaseFailure(f"{qualified} is a {known} table; ingest writes Iceberg tables")
    columns = _columns(conn, spec)
    schema = pa.schema([pa.field(c.name, c.arrow) for c in columns])
    tbl = iceberg_table(lake, namespace, target)
    added: list[str] = []
    if tbl is not None:
        added, missing = bronze.drift(schema, tbl, table=spec["table"], policy=config["schema_drift"])
        if missing:
            ctx.log(f"{spec['table']}: column(s) {', '.join(missing)} are gone from the source; "
                    "bronze keeps them, with nulls from now on", level="warning")
    else:
        tbl = _create(lake, namespace, target, schema)
    state = bronze.ingest_state(tbl)
    watermark = next(c for c in columns if c.name == spec["watermark"])
    until = source_now(conn, column=watermark, settle_s=float(config["settle_s"]))
    ctx.log(f"{spec['table']} → {qualified}: changes after {_position_text(state.after)} up to {until}")
    written, versions, tbl = _copy_changes(ctx, lake, conn, tbl, spec, columns, state, until, config,
                                           evolve=bool(added))
    deleted, tbl, version = _reconcile(ctx, lake, conn, tbl, spec, state, until, config)
    versions += [version] if version else []
    as_of = _as_utc(until)
    if not versions:
        current = tbl.current_snapshot()
        recorded = current and table_version_find(phase=ctx.phase, catalog_name=lake.name, namespace=namespace,
                                                  name=target, version=current.snapshot_id)
        if recorded:
            table_version_source_advance(phase_id=ctx.phase.pk, lease_token=ctx.lease_token,
                                         table_version=recorded, source_as_of=as_of)
        ctx.log(f"{qualified}: nothing changed up to {until}")
    return {"table": qualified, "format": "iceberg", "catalog": lake.name, "source": spec["table"],
            "version": versions[-1].version if versions else None, "rows_written": written,
            "rows_deleted": deleted, "columns_added": added, "source_as_of": as_of.isoformat()}


def _columns(conn: Any, spec: dict[str, Any]) -> list[SourceColumn]:
    columns = source_columns(conn, spec["table"])
    names = {c.name for c in columns}
    wanted = spec["columns"] or [c.name for c in columns]
    if absent := [c for c in {spec["watermark"], *spec["keys"], *wanted} if c not in names]:
        raise PhaseFailure(f"{spec['table']} has no column(s) {', '.join(sorted(absent))}")
    for column in columns:
        if column.name == spec["watermark"] and not pa.types.is_timestamp(column.arrow):
            raise PhaseFailure(f"{spec['table']}.{column.name} is {column.pg_type}; the watermark must be a timestamp")
        if column.name in bronze.META:
            raise PhaseFailure(f"{spec['table']} has a column named {column.name}, which bronze keeps for itself")
    return [c for c in columns if c.name in set(wanted)]


def _create(lake: Any, namespace: str, name: str, schema: pa.Schema) -> Any:
    from pyiceberg.exceptions import TableAlreadyExistsError

    catalog = lake.iceberg()
    catalog.create_namespace_if_not_exists(namespace)
    try:
        return catalog.create_table((namespace, name), schema=pa.schema([*schema, *bronze.META_FIELDS]))
    except TableAlreadyExistsError:  # another run created it meanwhile
        return catalog.load_table((namespace, name))


def _copy_changes(ctx: Any, lake: Any, conn: Any, tbl: Any, spec: dict[str, Any], columns: list[SourceColumn],
                  state: bronze.IngestState, until: dt.datetime, config: dict[str, Any],
                  *, evolve: bool) -> tuple[int, list[Any], Any]:
    """Stream the changes in chunks; commit every ``commit_rows`` rows and at the end, each commit
    carrying the position of its last row (the last one also the read bound)."""
    written, pending, versions = 0, 0, []
    txn = None
    position = state.after
    chunks = read_changes(conn, table=spec["table"], columns=columns, watermark=spec["watermark"],
                          keys=spec["keys"], after=state.after, until=until, chunk_rows=int(config["chunk_rows"]))
    for chunk in chunks:
        if ctx.stopped:
            raise PhaseFailure("stopped: the rows read so far since the last commit were not written")
        if txn is None:
            txn = tbl.transaction()
            if evolve:
                with txn.update_schema() as update:
                    update.union_by_name(pa.schema([*chunk.schema, *bronze.META_FIELDS]))
                evolve = False
        last = chunk.slice(chunk.num_rows - 1).to_pylist()[0]
        position = (last[spec["watermark"]], *(last[k] for k in spec["keys"]))
        rows = bronze.with_meta(chunk, run_id=ctx.run.pk, deleted=False, at=timezone.now())
        props = {**common.commit_identity(ctx), bronze.WATERMARK: bronze.encode_position(position)}
        txn.append(bronze.fit(rows, _table_schema(txn)), snapshot_properties=props)
        written += chunk.num_rows
        pending += chunk.num_rows
        ctx.progress(f"{spec['table']}: {written:,} rows read", rows=written, table=spec["table"])
        if pending >= int(config["commit_rows"]):
            tbl, version = _commit(ctx, lake, txn, tbl, spec, as_of=None)
            versions.append(version)
            txn, pending = None, 0
    if txn is not None:
        tbl, version = _commit(ctx, lake, txn, tbl, spec, as_of=until)
        versions.append(version)
    return written, versions, tbl


def _table_schema(txn: Any) -> pa.Schema:
    return txn.table_metadata.schema().as_arrow()


def _commit(ctx: Any, lake: Any, txn: Any, tbl: Any, spec: dict[str, Any], *,
            as_of: dt.datetime | None) -> tuple[Any, Any]:
    """Commit ``txn`` under the lease (Iceberg refuses it when another writer moved the table since
    this run loaded it) and record the version in the same database transaction."""
    from pyiceberg.exceptions import CommitFailedException

    if as_of is not None:
        # PyIceberg takes snapshot properties per append, and the read bound is final only when the
        # stream ends: it rides as a table property of the same commit (the watermark itself is
        # in each snapshot's summary).
        txn.set_properties({bronze.AS_OF: as_of.isoformat()})
    with lease_fence(phase_id=ctx.phase.pk, lease_token=ctx.lease_token) as phase:
        common.hold_lease_row(phase)
        common.refuse_if_stopped(ctx)
        try:
            committed = txn.commit_transaction()
        except CommitFailedException as exc:
            raise PhaseFailure(f"{tbl.name()}: another writer committed to the table during this ingest ({exc}); "
                               "nothing of this commit was written, and the next run starts from the table's "
                               "watermark") from None
        # Recorded in the same database transaction as the lease check: only a crash between the
        # catalog's commit and this one can leave a version unrecorded (the next commit is recorded).
        snapshot = committed.current_snapshot()
        stats = iceberg_stats(committed, snapshot.snapshot_id)
        namespace, name = committed.name()[-2:]
        version = table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=Commit(
            format="iceberg", catalog_name=lake.name, namespace=namespace, name=name, location=stats.location,
            version=snapshot.snapshot_id, operation="append", schema=stats.schema, row_count=stats.row_count,
            bytes=stats.bytes, attempt=ctx.phase.attempt,
            committed_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=dt.UTC),
            source_as_of=_as_utc(as_of) if as_of else None))
    ctx.log(f"committed snapshot {snapshot.snapshot_id} to {namespace}.{name} ({stats.row_count:,} rows in all)")
    return committed, version


def _reconcile(ctx: Any, lake: Any, conn: Any, tbl: Any, spec: dict[str, Any], state: bronze.IngestState,
               until: dt.datetime, config: dict[str, Any]) -> tuple[int, Any, Any]:
    """When due, write a tombstone for every key live in bronze but gone from the source."""
    import duckdb

    if config["deletes"] != "reconcile":
        return 0, tbl, None
    now = timezone.now()
    if state.reconciled_at is not None and (now - state.reconciled_at).total_seconds() < config["reconcile_every_s"]:
        return 0, tbl, None
    keys = spec["keys"]
    source_keys = pa.concat_tables(list(read_keys(conn, table=spec["table"], keys=keys,
                                                  chunk_rows=int(config["chunk_rows"]))) or
                                   [pa.table({k: pa.array([], pa.int64()) for k in keys})])
    live = bronze.live_keys(tbl, keys=keys, watermark=spec["watermark"])
    key_list = ", ".join(f'"{k}"' for k in keys)
    with duckdb.connect() as db:
        db.register("live", live)
        db.register("src", source_keys)
        gone = db.sql(f"SELECT {key_list} FROM live EXCEPT SELECT {key_list} FROM src ORDER BY {key_list}") \
            .to_arrow_table()
    txn = tbl.transaction()
    txn.set_properties({bronze.RECONCILED: now.isoformat()})
    version = None
    if gone.num_rows:
        table_schema = tbl.schema().as_arrow()
        source_part = pa.schema([f for f in table_schema if f.name not in bronze.META])
        rows = pa.table({f.name: gone.column(f.name).cast(f.type) if f.name in keys else pa.nulls(gone.num_rows, f.type)
                         for f in source_part})
        tombstones = bronze.with_meta(rows, run_id=ctx.run.pk, deleted=True, at=timezone.now())
        props = {**common.commit_identity(ctx), **({bronze.WATERMARK: tbl.current_snapshot().summary[bronze.WATERMARK]}
                                                   if _has_watermark(tbl) else {})}
        txn.append(bronze.fit(tombstones, table_schema), snapshot_properties=props)
        ctx.log(f"{spec['table']}: {gone.num_rows:,} row(s) deleted at the source since the last reconciliation")
    tbl, version = _commit_reconcile(ctx, lake, txn, tbl, spec, until, gone.num_rows)
    return gone.num_rows, tbl, version


def _has_watermark(tbl: Any) -> bool:
    snapshot = tbl.current_snapshot()
    return bool(snapshot and snapshot.summary and snapshot.summary.get(bronze.WATERMARK))


def _commit_reconcile(ctx: Any, lake: Any, txn: Any, tbl: Any, spec: dict[str, Any], until: dt.datetime,
                      deleted: int) -> tuple[Any, Any]:
    if deleted:
        return _commit(ctx, lake, txn, tbl, spec, as_of=until)
    with lease_fence(phase_id=ctx.phase.pk, lease_token=ctx.lease_token) as phase:
        common.hold_lease_row(phase)
        common.refuse_if_stopped(ctx)
        return txn.commit_transaction(), None


def _position_text(after: tuple[Any, ...] | None) -> str:
    return "the beginning" if after is None else ", ".join(str(v) for v in after)


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


__all__ = ["config_errors", "execute"]
