"""`delta` phases: write a query's result or a dataset file into a Delta table (delta-rs), or
maintain one.

config (besides the fields in ``lakehouse.phases.common``): ``mode``: append (default) |
overwrite | merge; ``overwrite_filter`` (overwrite only: a SQL predicate, Delta's replaceWhere);
``keys`` (merge: update matching rows, insert the others); ``partition_by`` (columns, used when
the table is created); or ``action``: optimize | vacuum (``retention_hours``, default 168) with no
source.

Exactly once per (run, phase): every commit carries a Delta application transaction whose app
id names the run and phase and whose version is the attempt (read back with
``DeltaTable.transaction_version``). An attempt that finds its app id already committed adopts
that version instead of writing again (a newer attempt's version means this one is stale). Two
attempts racing both load the table before either commits; Delta's conflict check refuses the
second commit with the same app id, and the loser then adopts the winner's version.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from lakehouse.catalogs import Lakehouse
from lakehouse.phases import common
from lakehouse.phases.common import ATTEMPT, PHASE, RUN_ID, PhaseFailure
from lakehouse.phases.inputs import read_inputs, record_reads
from lakehouse.services import Commit, table_version_find, table_version_record
from lakehouse.tables import delta_stats, delta_table
from runs.services.fence import StaleLease, lease_is_live

_FIELDS = {"table", "catalog", "sql", "file", "connection", "inputs", "mode", "overwrite_filter", "keys",
           "partition_by", "schema_evolution", "action", "retention_hours"}
_MODES = ("append", "overwrite", "merge")
_ACTIONS = ("optimize", "vacuum")
_HISTORY = 1000  # how far back a retry looks for its earlier attempt's commit


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with a delta phase's config."""
    errors = [f"unknown delta config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    action = config.get("action")
    errors += common.common_errors(config, kind="delta", source_required=action is None)
    if action is not None:
        if action not in _ACTIONS:
            errors.append(f"'action' must be one of {', '.join(_ACTIONS)}")
        errors += [f"'{key}' has no use with an action" for key in
                   ("mode", "keys", "overwrite_filter", "partition_by", "schema_evolution", "inputs") if key in config]
        hours = config.get("retention_hours", 168)
        if action != "vacuum" and "retention_hours" in config:
            errors.append("'retention_hours' is for action: vacuum")
        elif isinstance(hours, bool) or not isinstance(hours, int) or not 0 <= hours <= 100_000:
            errors.append("'retention_hours' must be a whole number of hours (0 or more)")
        return errors
    if "retention_hours" in config:
        errors.append("'retention_hours' is for action: vacuum")
    mode = config.get("mode", "append")
    if mode not in _MODES:
        errors.append(f"'mode' must be one of {', '.join(_MODES)}")
    if mode == "merge" and "keys" not in config:
        errors.append("merge needs 'keys': the columns that identify a row")
    if "keys" in config and mode != "merge":
        errors.append("'keys' are for mode: merge")
    if "overwrite_filter" in config and (mode != "overwrite" or not isinstance(config["overwrite_filter"], str)
                                         or not config["overwrite_filter"].strip()):
        errors.append("'overwrite_filter' is a SQL predicate for mode: overwrite")
    partition_by = config.get("partition_by", [])
    if partition_by != [] and not common.column_list(partition_by):
        errors.append("'partition_by' of a Delta table lists column names (Delta has no partition transforms)")
    return errors


# --- exactly once -----------------------------------------------------------------------------


def committed_attempt(table: Any, ctx: Any) -> int | None:
    """The attempt of this (run, phase) that already committed to ``table``, if any; StaleLease
    if it is newer than ours."""
    done = table.transaction_version(common.delta_app_id(ctx))
    if done is not None and done > ctx.phase.attempt:
        raise StaleLease(f"phase {ctx.phase.pk}: attempt {done} already committed to {table.table_uri}; "
                         f"attempt {ctx.phase.attempt} is stale")
    return done


def _our_version(table: Any, ctx: Any) -> int | None:
    """The table version this (run, phase) committed last, from the commits' custom metadata."""
    for entry in table.history(_HISTORY):  # newest first
        if entry.get(RUN_ID) == str(ctx.run.pk) and entry.get(PHASE) == ctx.phase.name:
            return int(entry["version"])
    return None


def _commit_properties(ctx: Any) -> Any:
    from deltalake import CommitProperties, Transaction

    return CommitProperties(custom_metadata=common.commit_identity(ctx),
                            app_transactions=[Transaction(common.delta_app_id(ctx), ctx.phase.attempt)])


def _before_commit(ctx: Any) -> None:
    """The lease must be live and the phase not stopped right before the commit."""
    common.refuse_if_stopped(ctx)
    if not lease_is_live(phase_id=ctx.phase.pk, lease_token=ctx.lease_token):
        raise StaleLease(f"phase {ctx.phase.pk}: the lease was lost before the Delta commit")


# --- execute ----------------------------------------------------------------------------------


def execute(ctx: Any) -> dict[str, Any]:
    """Write (or maintain) the table once per (run, phase); record the version and lineage."""
    from deltalake.exceptions import CommitFailedError

    config = ctx.phase.config
    lake, namespace, name, qualified = common.write_target(ctx, config, "delta")
    table = delta_table(lake, namespace, name)
    if table is not None and committed_attempt(table, ctx) is not None:
        return _adopt(ctx, lake, namespace, name)
    action = config.get("action")
    operation = action or config.get("mode", "append")
    if action is not None:
        if table is None:
            raise PhaseFailure(f"cannot {action} {qualified}: catalog '{lake.name}' has no such Delta table")
        source, reads = None, []
    else:
        views, reads = read_inputs(ctx, lake, config)
        source = common.normalise(common.read_source(ctx, config, views))
        ctx.log(f"source: {source.num_rows} rows, {source.num_columns} columns")
        if table is not None:
            source = _fit_schema(table, source, qualified, evolve=config.get("schema_evolution", False))
    try:
        changed = _write(ctx, lake, table, source, namespace, name, config, operation)
    except _Adopt:
        return _adopt(ctx, lake, namespace, name)
    except CommitFailedError as exc:
        again = delta_table(lake, namespace, name)
        if again is not None and committed_attempt(again, ctx) is not None:
            return _adopt(ctx, lake, namespace, name)  # another attempt of ours won the race
        raise PhaseFailure(f"the commit to {qualified} conflicted with another writer; retry the phase ({exc})") \
            from None
    if not changed:
        ctx.log(f"{qualified}: nothing to {operation}")
        return {"tables": [{"table": qualified, "format": "delta", "catalog": lake.name, "version": None,
                            "operation": operation}]}
    table = delta_table(lake, namespace, name)
    version = _our_version(table, ctx)
    ctx.log(f"committed version {version} of {qualified} ({operation})")
    common.after_commit(ctx, qualified)
    recorded = _record(ctx, lake, namespace, name, version, operation)
    record_reads(ctx, reads)
    return {"tables": [{"table": qualified, "format": "delta", "catalog": lake.name, "version": recorded.version,
                        "operation": operation, "rows_written": source.num_rows if source is not None else 0,
                        "rows": recorded.row_count, "adopted": False}]}


def _write(ctx: Any, lake: Lakehouse, table: Any, source: pa.Table | None, namespace: str, name: str,
           config: dict[str, Any], operation: str) -> bool:
    """One commit with this attempt's application transaction; False when there was nothing to do."""
    from deltalake import write_deltalake

    properties = _commit_properties(ctx)
    evolve = config.get("schema_evolution", False)
    if operation == "optimize":
        _before_commit(ctx)
        metrics = table.optimize.compact(commit_properties=properties)
        ctx.log(f"optimize: {metrics.get('numFilesRemoved', 0)} files compacted into {metrics.get('numFilesAdded', 0)}")
        return bool(metrics.get("numFilesAdded") or metrics.get("numFilesRemoved"))
    if operation == "vacuum":
        hours = int(config.get("retention_hours", 168))
        _before_commit(ctx)
        before = table.version()
        removed = table.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False,
                               commit_properties=properties)
        ctx.log(f"vacuum: {len(removed)} files older than {hours} h removed")
        table.update_incremental()
        return table.version() != before
    if operation == "merge":
        if table is None:
            return _write_new(ctx, lake, source, namespace, name, config, properties)
        predicate = " AND ".join(f't."{key}" = s."{key}"' for key in config["keys"])
        _before_commit(ctx)
        metrics = (table.merge(source, predicate, source_alias="s", target_alias="t", merge_schema=evolve,
                               commit_properties=properties)
                   .when_matched_update_all().when_not_matched_insert_all().execute())
        ctx.log(f"merge: {metrics.get('num_target_rows_updated', 0)} updated, "
                f"{metrics.get('num_target_rows_inserted', 0)} inserted")
        return bool(metrics.get("num_target_rows_updated") or metrics.get("num_target_rows_inserted"))
    if table is None:
        return _write_new(ctx, lake, source, namespace, name, config, properties)
    _before_commit(ctx)
    write_deltalake(table, source, mode=operation, predicate=config.get("overwrite_filter"),
                    schema_mode="merge" if evolve else None, commit_properties=properties)
    return True


def _write_new(ctx: Any, lake: Lakehouse, source: pa.Table, namespace: str, name: str, config: dict[str, Any],
               properties: Any) -> bool:
    """Create the table with the first commit; if someone created it meanwhile, write into theirs
    (after checking it holds no commit of ours: the create is this attempt's only check)."""
    from deltalake import write_deltalake
    from deltalake.exceptions import DeltaError

    missing = [c for c in config.get("partition_by", []) if c not in source.column_names]
    if missing:
        raise PhaseFailure(f"cannot create {namespace}.{name}: partition column(s) {', '.join(missing)} "
                           "are not in the source")
    _before_commit(ctx)
    try:
        write_deltalake(lake.delta_uri(namespace, name), source, mode="error",
                        partition_by=config.get("partition_by") or None,
                        storage_options=lake.delta_storage_options() or None, commit_properties=properties)
        return True
    except DeltaError as exc:
        table = delta_table(lake, namespace, name)
        if table is None:
            raise PhaseFailure(f"cannot create {namespace}.{name}: {exc}") from None
    if committed_attempt(table, ctx) is not None:
        raise _Adopt
    return _write(ctx, lake, table, source, namespace, name, config, config.get("mode", "append"))


class _Adopt(Exception):
    """Another attempt of this phase committed first: adopt its version."""


def _fit_schema(table: Any, source: pa.Table, qualified: str, *, evolve: bool) -> pa.Table:
    table_schema = pa.schema(table.schema().to_arrow())
    added, missing, retyped = common.schema_differences(source.schema, table_schema)
    if retyped:
        if evolve:
            raise PhaseFailure(f"the source changes the type of column(s) of {qualified} in a way Delta cannot "
                               f"evolve: {', '.join(retyped)}")
        raise common.schema_mismatch(qualified, added, missing, retyped)
    if (added or missing) and not evolve:
        raise common.schema_mismatch(qualified, added, missing, retyped)
    return common.conform(source, table_schema)


def _record(ctx: Any, lake: Lakehouse, namespace: str, name: str, version: int, operation: str,
            attempt: int | None = None) -> Any:
    """Record ``version`` with a write edge (fenced). Its fingerprint is left empty: recording it
    enqueues the task that computes it from this version once committed (none for maintenance)."""
    at = delta_table(lake, namespace, name, version)
    stats = delta_stats(at)
    entry = next((e for e in at.history(_HISTORY) if e.get("version") == version), {})
    committed_at = dt.datetime.fromtimestamp(entry["timestamp"] / 1000, tz=dt.UTC) if "timestamp" in entry else None
    commit = Commit(format="delta", catalog_name=lake.name, namespace=namespace, name=name, location=stats.location,
                    version=version, operation=operation, schema=stats.schema, row_count=stats.row_count,
                    bytes=stats.bytes,
                    attempt=attempt or int(entry.get(ATTEMPT) or ctx.phase.attempt), committed_at=committed_at)
    return table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit)


def _adopt(ctx: Any, lake: Lakehouse, namespace: str, name: str) -> dict[str, Any]:
    """An earlier attempt of this phase committed: record its version (if it was not) and succeed."""
    qualified = f"{namespace}.{name}"
    table = delta_table(lake, namespace, name)
    attempt = table.transaction_version(common.delta_app_id(ctx))
    version = _our_version(table, ctx)
    operation = ctx.phase.config.get("action") or ctx.phase.config.get("mode", "append")
    ctx.log(f"attempt {attempt} already committed version {version} of {qualified}: adopting it, writing "
            "nothing again", level="warning")
    out = {"table": qualified, "format": "delta", "catalog": lake.name, "version": version, "operation": operation,
           "adopted": True, "committed_by_attempt": attempt}
    if version is None:  # its commit info left the history window: the rows are there, once
        return {"tables": [out]}
    recorded = table_version_find(phase=ctx.phase, catalog_name=lake.name, namespace=namespace, name=name,
                                  version=version)
    if recorded is None or recorded.run_id is None:
        recorded = _record(ctx, lake, namespace, name, version, operation, attempt=attempt)
    else:
        table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=Commit(
            format="delta", catalog_name=lake.name, namespace=namespace, name=name,
            location=recorded.table.location, version=version, operation=recorded.operation,
            attempt=recorded.attempt, committed_at=recorded.committed_at))
    out.update(rows=recorded.row_count)
    return {"tables": [out]}
