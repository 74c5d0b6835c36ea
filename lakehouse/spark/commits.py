"""Which commits a `spark` phase's application made, recorded as table versions.

A phase declares its ``outputs`` (``namespace.name``, Iceberg by default, ``{table, format:
delta}`` for Delta) and ``inputs``. Before the driver starts, each output's versions are noted.
Afterwards, a version is this attempt's when it appeared meanwhile and carries the attempt's mark:
the driver puts the run, phase and attempt in every Iceberg snapshot summary and in Delta's
``commitInfo.userMetadata``; an Iceberg snapshot without them (a delete that only drops whole
files) still carries the application id (``spark.app.id``), which counts outside Spark Connect
(where the application is the server's, shared by every session). Commits other writers made
meanwhile are not the phase's.

Exactly once on retry: the application ids of earlier attempts are known (each attempt records
its id under its lease before the script runs), so a new attempt sees what an interrupted one
committed. When every output already holds a commit of an earlier attempt, those versions are
adopted and the script does not run again; otherwise the script runs, and its
``controlroom.committed(table)`` tells it which tables an earlier attempt finished.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from lakehouse.catalogs import Lakehouse
from lakehouse.phases import common
from lakehouse.phases.common import ATTEMPT, PHASE, RUN_ID
from lakehouse.services import Commit, table_read_record, table_version_find, table_version_record
from lakehouse.tables import delta_stats, delta_table, iceberg_stats, iceberg_table

APP_ID = "spark.app.id"  # Iceberg's Spark writer: the application that committed the snapshot
_HISTORY = 200


@dataclass(frozen=True)
class Declared:
    """A table the phase declares it writes or reads."""

    format: str  # "iceberg" or "delta"
    namespace: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


def declared(config: dict[str, Any], key: str) -> list[Declared]:
    """The tables a valid config lists under ``key`` (outputs or inputs)."""
    found = []
    for item in config.get(key) or []:
        table, fmt = (item, "iceberg") if isinstance(item, str) else (item["table"], item.get("format", "iceberg"))
        namespace, name = common.split_table(table)
        found.append(Declared(fmt, namespace, name))
    return found


def declared_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with ``outputs`` and ``inputs``."""
    errors = []
    for key in ("outputs", "inputs"):
        items = config.get(key, [])
        if not isinstance(items, list) or len(items) > 50:
            errors.append(f"'{key}' must be a list of at most 50 tables")
            continue
        for item in items:
            table = item if isinstance(item, str) else item.get("table") if isinstance(item, dict) else None
            fmt = item.get("format", "iceberg") if isinstance(item, dict) else "iceberg"
            if isinstance(item, dict) and set(item) - {"table", "format"}:
                errors.append(f"'{key}' entries have only 'table' and 'format'")
            elif common.split_table(table) is None:
                errors.append(f"'{key}' entry {str(item)[:80]!r} is not namespace.name (plain lower-case identifiers)")
            elif fmt not in ("iceberg", "delta"):
                errors.append(f"'{key}' entry {table}: 'format' must be iceberg or delta")
    return errors


def tags(ctx: Any) -> dict[str, str]:
    """The mark the driver puts on every Delta commit (``commitInfo.userMetadata``)."""
    return common.commit_identity(ctx)


def _delta_entries(lake: Lakehouse, out: Declared) -> list[dict[str, Any]]:
    table = delta_table(lake, out.namespace, out.name)
    return [] if table is None else table.history(_HISTORY)


def _delta_mark(entry: dict[str, Any]) -> dict[str, str]:
    try:
        mark = json.loads(entry.get("userMetadata") or "{}")
    except ValueError:
        return {}
    return mark if isinstance(mark, dict) else {}


def versions_now(lake: Lakehouse, out: Declared) -> set[int]:
    """The versions (snapshot ids, Delta versions) the table has now."""
    if out.format == "delta":
        return {int(e["version"]) for e in _delta_entries(lake, out) if "version" in e}
    tbl = iceberg_table(lake, out.namespace, out.name)
    return set() if tbl is None else {s.snapshot_id for s in tbl.snapshots()}


def committed_by(ctx: Any, lake: Lakehouse, out: Declared, apps: set[str], *, attempts: set[int] | None = None,
                 before: set[int] | None = None) -> list[int]:
    """Versions of ``out`` that this phase's applications ``apps`` (Iceberg) or its ``attempts``
    (Delta; None: any attempt) committed, oldest first, leaving out the ``before`` versions."""
    before = before or set()
    if out.format == "delta":
        mine = []
        for entry in _delta_entries(lake, out):
            if _ours(ctx, _delta_mark(entry), attempts):
                mine.append(int(entry["version"]))
        return sorted(v for v in mine if v not in before)
    tbl = iceberg_table(lake, out.namespace, out.name)
    if tbl is None:
        return []
    snaps = [s for s in tbl.snapshots() if s.snapshot_id not in before and s.summary is not None
             and (_ours(ctx, s.summary, attempts) or s.summary.get(APP_ID) in apps)]
    return [s.snapshot_id for s in sorted(snaps, key=lambda s: (s.sequence_number or 0, s.timestamp_ms))]


def _ours(ctx: Any, mark: Any, attempts: set[int] | None) -> bool:
    """Whether a commit's mark (snapshot summary, Delta userMetadata) names this phase's run and
    one of ``attempts`` (None: any)."""
    return (mark.get(RUN_ID) == str(ctx.run.pk) and mark.get(PHASE) == ctx.phase.name
            and (attempts is None or int(mark.get(ATTEMPT) or 0) in attempts))


def record(ctx: Any, lake: Lakehouse, out: Declared, version: int, *, attempt: int) -> dict[str, Any]:
    """Record ``version`` of ``out`` with a write edge (fenced); its fingerprint is computed after
    (the task ``table_version_fingerprint``). An already recorded version gets this phase's edge."""
    known = table_version_find(phase=ctx.phase, catalog_name=lake.name, namespace=out.namespace, name=out.name,
                               version=version)
    if known is not None:
        commit = Commit(format=out.format, catalog_name=lake.name, namespace=out.namespace, name=out.name,
                        location=known.table.location, version=version, operation=known.operation,
                        attempt=known.attempt or attempt, committed_at=known.committed_at, schema=known.schema,
                        row_count=known.row_count, bytes=known.bytes)
    elif out.format == "delta":
        at = delta_table(lake, out.namespace, out.name, version)
        stats = delta_stats(at)
        entry = next((e for e in at.history(_HISTORY) if e.get("version") == version), {})
        commit = Commit(format="delta", catalog_name=lake.name, namespace=out.namespace, name=out.name,
                        location=stats.location, version=version, operation=_delta_operation(entry),
                        schema=stats.schema, row_count=stats.row_count, bytes=stats.bytes, attempt=attempt,
                        committed_at=_ms(entry.get("timestamp")))
    else:
        tbl = iceberg_table(lake, out.namespace, out.name)
        snapshot = tbl.snapshot_by_id(version)
        stats = iceberg_stats(tbl, version)
        commit = Commit(format="iceberg", catalog_name=lake.name, namespace=out.namespace, name=out.name,
                        location=stats.location, version=version, operation=_iceberg_operation(snapshot),
                        schema=stats.schema, row_count=stats.row_count, bytes=stats.bytes, attempt=attempt,
                        committed_at=_ms(snapshot.timestamp_ms))
    recorded = table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit)
    ctx.log(f"recorded {out.qualified} version {recorded.version} ({recorded.operation}, {recorded.row_count} rows)",
            table=out.qualified, version=recorded.version)
    return {"table": out.qualified, "format": out.format, "catalog": lake.name, "version": recorded.version,
            "operation": recorded.operation, "rows": recorded.row_count}


def record_reads(ctx: Any, lake: Lakehouse, inputs: list[Declared], seen: dict[Declared, int | None]) -> None:
    """Read edges at the versions the inputs had when the application started (already recorded
    versions only: a version nobody recorded is left alone, with a warning)."""
    for read in inputs:
        version = seen.get(read)
        known = None if version is None else table_version_find(
            phase=ctx.phase, catalog_name=lake.name, namespace=read.namespace, name=read.name, version=version)
        if known is None:
            ctx.log(f"input {read.qualified}: no recorded version to link (version {version})", level="warning")
            continue
        table_read_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, table_version=known)


def current_version(lake: Lakehouse, table: Declared) -> int | None:
    """The table's current version (snapshot id or Delta version), None if it has none."""
    if table.format == "delta":
        found = delta_table(lake, table.namespace, table.name)
        return None if found is None else found.version()
    tbl = iceberg_table(lake, table.namespace, table.name)
    snapshot = tbl.current_snapshot() if tbl is not None else None
    return None if snapshot is None else snapshot.snapshot_id


def _delta_operation(entry: dict[str, Any]) -> str:
    op = str(entry.get("operation") or "").upper()
    if "MERGE" in op:
        return "merge"
    if "OPTIMIZE" in op:
        return "optimize"
    if "WRITE" in op and "Overwrite" in json.dumps(entry.get("operationParameters") or {}):
        return "overwrite"
    return "append" if op in ("WRITE", "CREATE TABLE AS SELECT", "STREAMING UPDATE") or "APPEND" in op else "overwrite"


def _iceberg_operation(snapshot: Any) -> str:
    op = str(getattr(snapshot.summary.operation, "value", snapshot.summary.operation)) if snapshot.summary else ""
    return {"append": "append", "replace": "optimize"}.get(op, "overwrite")


def _ms(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC) if isinstance(value, (int, float)) else None
