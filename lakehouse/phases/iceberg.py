"""`iceberg` phases: write a query's result or a dataset file into an Iceberg table (PyIceberg).

config (besides the fields in ``lakehouse.phases.common``): ``mode``: append (default) |
overwrite | upsert; ``overwrite_filter`` (overwrite only, a PyIceberg filter such as
``day = '2024-01-01'``); ``keys`` (upsert); ``partition_by`` (used when the table is created:
``col``, ``identity(col)``, ``year|month|day|hour(col)``, ``bucket[N](col)``, ``truncate[N](col)``).

Exactly once per (run, phase): every snapshot this phase commits carries the run, phase and
attempt in its summary. Before committing, the table's history is searched for a snapshot of this
(run, phase): when an earlier attempt already committed (it was killed before reporting), that
snapshot is adopted and nothing is written again; one from a newer attempt means this attempt is
stale, and it stops. The commit itself happens under the phase's lease, checked (and on
PostgreSQL locked) in the same breath, after a last look at the history.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from lakehouse.catalogs import Lakehouse
from lakehouse.phases import common
from lakehouse.phases.common import ATTEMPT, PHASE, RUN_ID, PhaseFailure
from lakehouse.phases.inputs import read_inputs, record_reads
from lakehouse.services import Commit, table_version_find, table_version_record
from lakehouse.tables import iceberg_stats, iceberg_table
from runs.services.fence import StaleLease, lease_fence

_FIELDS = {"table", "catalog", "sql", "file", "connection", "inputs", "mode", "overwrite_filter", "keys",
           "partition_by", "schema_evolution"}
_MODES = ("append", "overwrite", "upsert")
_TRANSFORM = re.compile(r"(?:(identity|year|month|day|hour)\(|(bucket|truncate)\[(\d{1,5})\]\()?"
                        r"([A-Za-z_][A-Za-z0-9_]*)(\))?")


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with an iceberg phase's config."""
    errors = [f"unknown iceberg config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    errors += common.common_errors(config, kind="iceberg", source_required=True)
    mode = config.get("mode", "append")
    if mode not in _MODES:
        errors.append(f"'mode' must be one of {', '.join(_MODES)}")
    if mode == "upsert" and "keys" not in config:
        errors.append("upsert needs 'keys': the columns that identify a row")
    if "keys" in config and mode != "upsert":
        errors.append("'keys' are for mode: upsert")
    if "overwrite_filter" in config:
        if mode != "overwrite":
            errors.append("'overwrite_filter' is for mode: overwrite")
        elif not isinstance(config["overwrite_filter"], str) or not _filter_ok(config["overwrite_filter"]):
            errors.append("'overwrite_filter' is not a valid filter (e.g. \"country = 'FR' and day >= '2024-01-01'\")")
    partition_by = config.get("partition_by", [])
    if not (isinstance(partition_by, list) and all(isinstance(p, str) and _parse_transform(p) for p in partition_by)):
        errors.append("'partition_by' must list columns or transforms: col, identity(col), year(col), month(col), "
                      "day(col), hour(col), bucket[N](col), truncate[N](col)")
    return errors


def _filter_ok(text: str) -> bool:
    from pyiceberg.expressions.parser import parse

    try:
        parse(text)
    except Exception:  # pyparsing's errors: the config message says what is expected
        return False
    return True


def _parse_transform(text: str) -> tuple[str, int | None, str] | None:
    match = _TRANSFORM.fullmatch(text.strip())
    if not match:
        return None
    simple, sized, width, column, closing = match.groups()
    if bool(simple or sized) != bool(closing) or (width is not None and int(width) < 1):
        return None
    return (simple or sized or "identity"), (int(width) if width else None), column


def _transform(kind: str, width: int | None) -> Any:
    from pyiceberg import transforms

    return {"identity": transforms.IdentityTransform, "year": transforms.YearTransform,
            "month": transforms.MonthTransform, "day": transforms.DayTransform,
            "hour": transforms.HourTransform}[kind]() if width is None else \
        {"bucket": transforms.BucketTransform, "truncate": transforms.TruncateTransform}[kind](width)


# --- exactly once -----------------------------------------------------------------------------


def ours(tbl: Any, ctx: Any) -> Any | None:
    """The latest snapshot this (run, phase) committed, if any; StaleLease if a newer attempt
    than ours committed one (this attempt is stale and must write nothing)."""
    found = None
    for snapshot in tbl.snapshots():
        summary = snapshot.summary
        if summary is None or summary.get(RUN_ID) != str(ctx.run.pk) or summary.get(PHASE) != ctx.phase.name:
            continue
        if int(summary.get(ATTEMPT) or 0) > ctx.phase.attempt:
            raise StaleLease(f"phase {ctx.phase.pk}: attempt {summary.get(ATTEMPT)} already committed to "
                             f"{tbl.name()}; attempt {ctx.phase.attempt} is stale")
        if found is None or snapshot.sequence_number > found.sequence_number:
            found = snapshot
    return found


_lock = common.hold_lease_row


# --- execute ----------------------------------------------------------------------------------


def execute(ctx: Any) -> dict[str, Any]:
    """Write the source into the table once per (run, phase); record the version and lineage."""
    config = ctx.phase.config
    lake, namespace, name, qualified = common.write_target(ctx, config, "iceberg")
    tbl = iceberg_table(lake, namespace, name)
    earlier = ours(tbl, ctx) if tbl is not None else None
    if earlier is not None:
        return _adopt(ctx, lake, tbl, earlier, namespace, name)
    views, reads = read_inputs(ctx, lake, config)
    source = common.normalise(common.read_source(ctx, config, views))
    ctx.log(f"source: {source.num_rows} rows, {source.num_columns} columns")
    mode = config.get("mode", "append")
    committed = _create_and_write(ctx, lake, namespace, name, source, config) if tbl is None else None
    if committed is None:
        tbl = tbl or _table_for(lake, namespace, name, source.schema, config.get("partition_by", []))
        txn = tbl.transaction()
        source = _fit_schema(txn, tbl, source, qualified, evolve=config.get("schema_evolution", False))
        if not _write(ctx, txn, source, config, qualified):
            ctx.log(f"{qualified}: nothing changed")  # an upsert that changes nothing makes no snapshot
            return {"tables": [{"table": qualified, "format": "iceberg", "catalog": lake.name, "version": None,
                                "operation": mode, "rows_written": 0}]}
        with lease_fence(phase_id=ctx.phase.pk, lease_token=ctx.lease_token) as phase:
            _lock(phase)
            common.refuse_if_stopped(ctx)
            latest = ours(lake.iceberg().load_table((namespace, name)), ctx)
            if latest is not None:  # cannot happen under the lease; never write twice if it does
                return _adopt(ctx, lake, tbl, latest, namespace, name)
            committed = txn.commit_transaction()
    snapshot = committed.current_snapshot()
    ctx.log(f"committed snapshot {snapshot.snapshot_id} to {qualified} ({mode})")
    common.after_commit(ctx, qualified)
    version = _record(ctx, lake, committed, snapshot, namespace, name, mode)
    record_reads(ctx, reads)
    return {"tables": [{"table": qualified, "format": "iceberg", "catalog": lake.name, "version": version.version,
                        "operation": mode, "rows_written": source.num_rows, "rows": version.row_count,
                        "adopted": False}]}


def _always() -> Any:
    from pyiceberg.expressions import AlwaysTrue

    return AlwaysTrue()


def _write(ctx: Any, txn: Any, source: pa.Table, config: dict[str, Any], qualified: str) -> bool:
    """Stage the phase's write in ``txn``; False when an upsert finds nothing to change."""
    props, mode = common.commit_identity(ctx), config.get("mode", "append")
    try:
        if mode == "append":
            txn.append(source, snapshot_properties=props)
        elif mode == "overwrite":
            txn.overwrite(source, overwrite_filter=config.get("overwrite_filter") or _always(),
                          snapshot_properties=props)
        else:
            result = txn.upsert(source, join_cols=config["keys"], snapshot_properties=props)
            ctx.log(f"upsert: {result.rows_updated} updated, {result.rows_inserted} inserted")
            return bool(result.rows_updated or result.rows_inserted)
    except (ValueError, TypeError, KeyError) as exc:
        raise PhaseFailure(f"cannot {mode} into {qualified}: {exc}") from None
    return True


def _create_and_write(ctx: Any, lake: Lakehouse, namespace: str, name: str, source: pa.Table,
                      config: dict[str, Any]) -> Any | None:
    """A table that does not exist yet is created with its first snapshot in ONE catalog commit
    (made under the lease, like every commit): nobody ever sees it empty, and the phase pays for
    one commit, not two. Returns the committed (staged) table, or None when this path does not
    apply (an upsert reads the table, which a staged table cannot do) or someone created the
    table meanwhile: the caller then writes into the existing table."""
    from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError

    if config.get("mode", "append") == "upsert":
        return None
    catalog = lake.iceberg()
    catalog.create_namespace_if_not_exists(namespace)
    txn = _create_transaction(catalog, namespace, name, source.schema, config.get("partition_by", []))
    _write(ctx, txn, source, config, f"{namespace}.{name}")
    with lease_fence(phase_id=ctx.phase.pk, lease_token=ctx.lease_token) as phase:
        _lock(phase)
        common.refuse_if_stopped(ctx)
        try:
            return txn.commit_transaction()
        except (TableAlreadyExistsError, CommitFailedException):
            if iceberg_table(lake, namespace, name) is None:
                raise
            return None


def _create_transaction(catalog: Any, namespace: str, name: str, schema: pa.Schema, partition_by: list[str]) -> Any:
    """A create-table transaction with the partition spec staged (nothing committed yet)."""
    txn = catalog.create_table_transaction((namespace, name), schema=schema)
    try:
        if partition_by:
            with txn.update_spec() as spec:
                for item in partition_by:
                    kind, width, column = _parse_transform(item)
                    spec.add_field(column, _transform(kind, width),
                                   f"{column}_{kind}{width or ''}" if kind != "identity" else column)
    except ValueError as exc:  # a transform that does not fit the column, an unknown column
        raise PhaseFailure(f"cannot create {namespace}.{name} with partition_by {partition_by}: {exc}") from None
    return txn


def _table_for(lake: Lakehouse, namespace: str, name: str, schema: pa.Schema, partition_by: list[str]) -> Any:
    """The table, created empty (namespace too) with its partition spec if it does not exist yet
    (an upsert's first run, or when the combined create-and-write could not be used)."""
    from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError

    catalog = lake.iceberg()
    tbl = iceberg_table(lake, namespace, name)
    if tbl is not None:
        return tbl
    catalog.create_namespace_if_not_exists(namespace)
    try:
        _create_transaction(catalog, namespace, name, schema, partition_by).commit_transaction()
    except (TableAlreadyExistsError, CommitFailedException):  # another writer created it meanwhile
        if iceberg_table(lake, namespace, name) is None:
            raise
    return catalog.load_table((namespace, name))


def _fit_schema(txn: Any, tbl: Any, source: pa.Table, qualified: str, *, evolve: bool) -> pa.Table:
    """The source conformed to the table's schema; with ``evolve``, the table's schema changed
    (in the same commit) to take the source's columns; a clear error otherwise."""
    table_schema = tbl.schema().as_arrow()
    added, missing, retyped = common.schema_differences(source.schema, table_schema)
    if retyped or (added and not evolve) or (missing and not evolve):
        if not evolve:
            raise common.schema_mismatch(qualified, added, missing, retyped)
        raise PhaseFailure(f"the source changes the type of column(s) of {qualified} in a way Iceberg cannot "
                           f"evolve: {', '.join(retyped)}")
    if added:
        with txn.update_schema() as update:
            update.union_by_name(source.schema)
        return source
    return common.conform(source, table_schema)


def _record(ctx: Any, lake: Lakehouse, tbl: Any, snapshot: Any, namespace: str, name: str, operation: str,
            adopted_from: int | None = None) -> Any:
    """Record the snapshot as a TableVersion with a write edge (fenced). Its fingerprint is left
    empty: recording it enqueues the task that computes it from this snapshot once committed."""
    stats = iceberg_stats(tbl, snapshot.snapshot_id)
    summary = snapshot.summary
    commit = Commit(format="iceberg", catalog_name=lake.name, namespace=namespace, name=name, location=stats.location,
                    version=snapshot.snapshot_id, operation=operation, schema=stats.schema,
                    row_count=stats.row_count, bytes=stats.bytes,
                    attempt=adopted_from or int(summary.get(ATTEMPT) or ctx.phase.attempt),
                    committed_at=_ms(snapshot.timestamp_ms))
    return table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit)


def _adopt(ctx: Any, lake: Lakehouse, tbl: Any, snapshot: Any, namespace: str, name: str) -> dict[str, Any]:
    """An earlier attempt of this phase committed ``snapshot``: record it (if it was not) and succeed."""
    qualified = f"{namespace}.{name}"
    attempt = int(snapshot.summary.get(ATTEMPT) or 0)
    ctx.log(f"attempt {attempt} already committed snapshot {snapshot.snapshot_id} to {qualified}: "
            "adopting it, writing nothing again", level="warning")
    tbl = lake.iceberg().load_table((namespace, name))
    operation = ctx.phase.config.get("mode", "append")
    recorded = table_version_find(phase=ctx.phase, catalog_name=lake.name, namespace=namespace, name=name,
                                  version=snapshot.snapshot_id)
    if recorded is not None:  # recorded (its fingerprint may still be pending): add our edge only
        commit = Commit(format="iceberg", catalog_name=lake.name, namespace=namespace, name=name,
                        location=recorded.table.location, version=recorded.version, operation=recorded.operation,
                        attempt=recorded.attempt or attempt, committed_at=recorded.committed_at,
                        schema=recorded.schema, row_count=recorded.row_count, bytes=recorded.bytes)
        version = table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit)
    else:
        version = _record(ctx, lake, tbl, snapshot, namespace, name, operation, adopted_from=attempt)
    return {"tables": [{"table": qualified, "format": "iceberg", "catalog": lake.name, "version": version.version,
                        "operation": operation, "rows": version.row_count, "adopted": True,
                        "committed_by_attempt": attempt}]}


def _ms(value: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)


__all__ = ["config_errors", "execute", "ours"]
