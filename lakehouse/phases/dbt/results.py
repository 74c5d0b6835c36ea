"""What a dbt invocation left in its target folder, turned into Control Room's records: check
results for tests (with their stored failing rows), table versions and lineage edges for the
relations built and read.

``run_results.json`` says what ran and how it ended; ``manifest.json`` says what each node is
(its relation, materialization, test type and severity) and what it depends on
(``depends_on.nodes``). Every write goes through ``lakehouse.services`` under the phase's lease.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from lakehouse.checks import FAILING_ROWS_CAP, CheckResult
from lakehouse.models import TableVersion
from lakehouse.phases.dbt.target import DbtTarget
from lakehouse.services import Commit, table_read_record, table_version_record
from runs.executors.base import PhaseFailure

BUILT = ("model", "seed", "snapshot")
TESTS = ("test", "unit_test")
_CHECK_STATUS = {"pass": "pass", "warn": "warn", "fail": "fail", "error": "fail", "runtime error": "fail",
                 "skipped": "skipped"}
_FAILED = {"error", "fail", "runtime error"}


@dataclass
class Invocation:
    """The two artifacts of one dbt invocation, parsed."""

    manifest: dict[str, Any]
    results: list[dict[str, Any]]
    elapsed_s: float = 0.0
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def node(self, unique_id: str) -> dict[str, Any]:
        """The manifest's node (or source, or unit test) of that id; empty when unknown."""
        return self.nodes.get(unique_id) or {}


def invocation_load(target_dir: Path) -> Invocation | None:
    """The invocation's manifest and run results, or None when dbt wrote no run results (it
    stopped before running anything: a parse or connection error)."""
    try:
        results = json.loads((target_dir / "run_results.json").read_text())
        manifest = json.loads((target_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    nodes = {**manifest.get("nodes", {}), **manifest.get("sources", {}), **manifest.get("unit_tests", {})}
    return Invocation(manifest=manifest, results=list(results.get("results") or []),
                      elapsed_s=float(results.get("elapsed_time") or 0.0), nodes=nodes)


def kind_of(unique_id: str) -> str:
    """A node's resource type, from its unique id (``model.shop.orders`` -> ``model``)."""
    return unique_id.split(".", 1)[0]


def failed_nodes(inv: Invocation) -> list[str]:
    """``<kind> <name> <what happened>`` for every node that errored or failed, in run order."""
    found = []
    for result in inv.results:
        if result.get("status") not in _FAILED:
            continue
        uid = result.get("unique_id", "")
        name = inv.node(uid).get("name") or uid
        failures = result.get("failures")
        if result.get("status") == "fail" and isinstance(failures, int):
            found.append(f"{kind_of(uid).replace('_', ' ')} {name} failed ({failures} failing row"
                         f"{'' if failures == 1 else 's'})")
        else:
            found.append(f"{kind_of(uid).replace('_', ' ')} {name} errored")
    return found


def _completed(result: dict[str, Any]) -> dt.datetime:
    for timing in result.get("timing") or []:
        if timing.get("name") == "execute" and timing.get("completed_at"):
            try:
                return dt.datetime.fromisoformat(timing["completed_at"].replace("Z", "+00:00"))
            except ValueError:
                break
    return dt.datetime.now(dt.UTC)


# --- checks -----------------------------------------------------------------------------------


def checks_of(inv: Invocation) -> list[tuple[CheckResult, dict[str, Any]]]:
    """A check result per test that ran, with the test's node."""
    found = []
    for result in inv.results:
        uid = result.get("unique_id", "")
        if kind_of(uid) not in TESTS:
            continue
        node = inv.node(uid)
        status = _CHECK_STATUS.get(str(result.get("status")), "fail")
        severity = "warn" if str((node.get("config") or {}).get("severity", "")).lower() == "warn" else "fail"
        failures = result.get("failures")
        failing = failures if isinstance(failures, int) else int(status == "fail")
        message = str(result.get("message") or "")
        if result.get("status") in ("error", "runtime error"):
            message = f"error: {message}"
        kind = ((node.get("test_metadata") or {}).get("name") or ("unit_test" if kind_of(uid) == "unit_test"
                                                                   else "singular"))
        found.append((CheckResult(name=str(node.get("name") or uid)[:200], type=f"dbt {kind}", severity=severity,
                                  status=status, failing=failing if status != "pass" else 0,
                                  message=message[:1000]), node))
    return found


def failing_rows(target: DbtTarget, checks: list[tuple[CheckResult, dict[str, Any]]]) -> pa.Table | None:
    """The stored failing rows of every failed or warned test (at most FAILING_ROWS_CAP each),
    its name in a first column ``failed_check``; None when no test stored any."""
    tables = []
    for check, node in checks:
        if check.status not in ("fail", "warn") or not check.failing or not node.get("alias"):
            continue
        relation = target.relation(node.get("database"), str(node.get("schema")), str(node["alias"]))
        try:
            rows = target.rows(relation, FAILING_ROWS_CAP)
        except PhaseFailure as exc:  # not stored (store_failures off for this test), or gone
            target.ctx.log(f"check {check.name}: its failing rows cannot be read ({exc})", level="warning")
            continue
        label = "failed_check"
        while label in rows.column_names:
            label = "_" + label
        tables.append(rows.add_column(0, label, pa.array([check.name] * rows.num_rows, pa.string())))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


# --- registry ---------------------------------------------------------------------------------


def _operation(node: dict[str, Any], existing: bool) -> str:
    materialized = (node.get("config") or {}).get("materialized")
    if node.get("resource_type") == "snapshot":
        return TableVersion.Operation.MERGE
    if materialized == "incremental":
        has_key = bool((node.get("config") or {}).get("unique_key"))
        return TableVersion.Operation.MERGE if has_key else TableVersion.Operation.APPEND
    return TableVersion.Operation.OVERWRITE if existing else TableVersion.Operation.CREATE


def _has_versions(target: DbtTarget, schema: str, name: str) -> TableVersion | None:
    run = target.ctx.run
    return (TableVersion.objects.filter(table__workspace_id=run.workspace_id, table__environment_id=run.environment_id,
                                        table__catalog_name=target.catalog_name, table__namespace=schema,
                                        table__name=name).order_by("-committed_at", "-id").first())


def _commit(target: DbtTarget, node: dict[str, Any], *, version: int, operation: str, attempt: int,
            committed_at: dt.datetime) -> Commit:
    schema, name = str(node.get("schema")), str(node.get("alias") or node.get("identifier") or node.get("name"))
    relation = target.relation(node.get("database"), schema, name)
    stats = target.stats(relation)
    return Commit(format=target.format, catalog_name=target.catalog_name, namespace=schema, name=name,
                  location=relation, version=version, operation=operation, schema=stats.schema,
                  row_count=stats.row_count, fingerprint=stats.fingerprint, attempt=attempt,
                  committed_at=committed_at)


def _identity(node: dict[str, Any]) -> tuple[str, str]:
    return str(node.get("schema")), str(node.get("alias") or node.get("identifier") or node.get("name"))


def tables_record(target: DbtTarget, inv: Invocation) -> list[dict[str, Any]]:
    """A table version with a write edge for every model, seed and snapshot dbt built, then a read
    edge for every relation a built model depends on (ephemeral models are looked through)."""
    ctx = target.ctx
    written: dict[str, TableVersion] = {}
    recorded: list[dict[str, Any]] = []
    for result in inv.results:
        uid = result.get("unique_id", "")
        node = inv.node(uid)
        if kind_of(uid) not in BUILT or result.get("status") != "success" or _ephemeral(node):
            continue
        schema, name = _identity(node)
        committed_at = _completed(result)
        commit = _commit(target, node, version=int(committed_at.timestamp() * 1_000_000),
                         operation=_operation(node, _has_versions(target, schema, name) is not None),
                         attempt=ctx.phase.attempt, committed_at=committed_at)
        version = table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit)
        written[uid] = version
        recorded.append({"table": f"{schema}.{name}", "catalog": target.catalog_name, "format": target.format,
                         "version": version.version, "rows": commit.row_count, "node": uid})
        ctx.log(f"table {target.catalog_name}.{schema}.{name}: version {version.version}, {commit.row_count} rows",
                node=uid)
    read: dict[str, TableVersion | None] = {}
    for uid in written:
        for parent in _parents(inv, uid):
            if parent in written:
                table_read_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, table_version=written[parent])
            elif parent not in read:
                read[parent] = _observe(target, inv.node(parent))
    return recorded


def _ephemeral(node: dict[str, Any]) -> bool:
    return (node.get("config") or {}).get("materialized") == "ephemeral"


def _parents(inv: Invocation, uid: str) -> list[str]:
    """The relations ``uid`` reads: its depends_on nodes, through ephemeral models to theirs."""
    found, todo, seen = [], list((inv.node(uid).get("depends_on") or {}).get("nodes") or []), set()
    while todo:
        parent = todo.pop(0)
        if parent in seen:
            continue
        seen.add(parent)
        node = inv.node(parent)
        if _ephemeral(node):
            todo += (node.get("depends_on") or {}).get("nodes") or []
        elif kind_of(parent) in (*BUILT, "source"):
            found.append(parent)
    return found


def _observe(target: DbtTarget, node: dict[str, Any]) -> TableVersion | None:
    """A read edge to the relation as it is now: to its newest recorded version when that holds
    the same rows, else to a new version recorded as seen (not made) by this phase."""
    ctx = target.ctx
    schema, name = _identity(node)
    if not node:
        return None
    try:
        commit = _commit(target, node, version=0, operation=TableVersion.Operation.CREATE, attempt=0,
                         committed_at=dt.datetime.now(dt.UTC))
    except PhaseFailure as exc:
        ctx.log(f"lineage: {schema}.{name} cannot be read ({exc}); no read edge", level="warning")
        return None
    latest = _has_versions(target, schema, name)
    if latest is not None and latest.fingerprint == commit.fingerprint:
        table_read_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, table_version=latest)
        return latest
    commit.version = int(commit.committed_at.timestamp() * 1_000_000)
    commit.operation = TableVersion.Operation.OVERWRITE if latest is not None else TableVersion.Operation.CREATE
    return table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit, made_here=False)


__all__ = ["Invocation", "checks_of", "failed_nodes", "failing_rows", "invocation_load", "tables_record"]
