"""The kill -9 harness for exactly-once table commits (used by tests/test_lakehouse_chaos.py and
benchmarks/exactly_once.py).

Each run of the job has two phases, ``ice`` (Iceberg append) then ``dlt`` (Delta append), each
writing ``ROWS`` rows tagged with its run id. Workers start with ``CONTROLROOM_TEST_LAKEHOUSE_FAULT_DIR``
set, so a phase's first attempt drops a marker right after its table commit and sleeps (its
heartbeat keeps the lease alive). The harness waits for every marker of a batch, SIGKILLs the
worker group, starts another worker, and lets the reaper requeue the expired leases; the second
attempts find their first attempt's commit and adopt it. Afterwards every table must hold each
phase's rows exactly once: row counts per run, the fingerprint of the whole table against the
rows expected, one snapshot (Iceberg) or one application transaction (Delta) per phase.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from controlroom.models import Environment
from lakehouse.catalogs import catalog_for
from lakehouse.fingerprint import table_fingerprint
from lakehouse.models import MAINTENANCE, TableEdge, TableVersion
from lakehouse.phases.common import PHASE, RUN_ID
from lakehouse.tables import delta_table, table_arrow
from lakehouse.tasks import table_version_fingerprint
from runs.models import Phase, PhaseState, Run, RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_create
from runs.tasks import reap_expired_leases

ROWS = 50
TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
SPEC = f"""\
name: {{name}}
phases:
  - name: ice
    kind: iceberg
    retries: 3
    timeout: 600
    config:
      table: chaos.ice
      sql: "SELECT $run_id::BIGINT AS run_id, i::BIGINT AS n, 'ice ' || i AS label FROM range({ROWS}) r(i)"
  - name: dlt
    kind: delta
    retries: 3
    timeout: 600
    config:
      table: chaos.dlt
      sql: "SELECT $run_id::BIGINT AS run_id, i::BIGINT AS n, 'dlt ' || i AS label FROM range({ROWS}) r(i)"
"""


@dataclass
class Outcome:
    runs: list[int] = field(default_factory=list)
    kills: int = 0
    killed_attempts: int = 0
    committed_then_killed: list[tuple[int, str]] = field(default_factory=list)  # (run, phase)
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, diagnose: Callable[[], str],
             reaping: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s\n{diagnose()}")
        if reaping:
            reap_expired_leases.apply()
        time.sleep(0.3)


def committed(fault_dir: Path, run: int, phase: str) -> bool:
    """Whether the first attempt of ``phase`` in ``run`` committed (and then slept, to be killed)."""
    return (fault_dir / f"{run}-{phase}-1.committed").exists()


def settled(fault_dir: Path, run_ids: list[int], phase: str) -> bool:
    """Every first attempt of ``phase`` either committed, or lost its lease before committing
    (a slow heartbeat on a loaded machine: the fence then refuses its commit and a second attempt
    writes instead; no marker ever appears for it)."""
    moved_on = set(Phase.objects.filter(run_id__in=run_ids, name=phase, attempt__gte=2)
                   .values_list("run_id", flat=True))
    return all(committed(fault_dir, run, phase) or run in moved_on for run in run_ids)


def fingerprinted(run_ids: list[int], asked: dict[int, float], *, again_after: float = 10.0) -> bool:
    """Whether the workers filled the fingerprint of every version the runs wrote (a task enqueued
    when each was recorded). Like the beat's sweep, a version still waiting ``again_after`` seconds
    after it was first seen is asked for again: its message may have gone to a worker killed since."""
    pending = list(TableVersion.objects.filter(run_id__in=run_ids, fingerprint="").exclude(operation__in=MAINTENANCE)
                   .values_list("pk", flat=True))
    now = time.monotonic()
    for pk in pending:
        if now - asked.setdefault(pk, now) > again_after:
            table_version_fingerprint.delay(pk)
            asked[pk] = now
    return not pending


def diagnose(run_ids: list[int], pool) -> str:
    lines = []
    for run in Run.objects.filter(pk__in=run_ids).order_by("pk"):
        lines.append(f"run {run.pk}: {run.status} {run.error[:200]}")
        for p in run.phases.all():
            lines.append(f"  {p.name}: {p.state} attempt {p.attempt} error={p.error[:300]!r}")
    return "\n".join(lines) + "\n" + pool.logs(3000)


def chaos(*, world, pool, fault_dir: Path, runs: int, batch: int) -> Outcome:
    """Run ``runs`` runs in batches of ``batch``, killing the worker after each phase's first
    commit; returns what happened and every broken invariant."""
    job = job_create(access=world.access("operator"), spec_text=SPEC.format(name="chaos"))
    outcome = Outcome()
    worker = pool.start(concurrency=batch, name="chaos").wait_ready()
    while len(outcome.runs) < runs:
        count = min(batch, runs - len(outcome.runs))
        ids = [run_create(access=world.access("operator"), job=job).pk for _ in range(count)]
        outcome.runs += ids
        for phase in ("ice", "dlt"):
            wait_for(lambda p=phase, ids=ids: settled(fault_dir, ids, p), timeout=120,
                     what=f"every {phase} phase committed", diagnose=lambda ids=ids: diagnose(ids, pool))
            outcome.killed_attempts += Phase.objects.filter(run_id__in=ids, name=phase, state=PhaseState.RUNNING,
                                                            attempt=1).count()
            outcome.committed_then_killed += [(run, phase) for run in ids if committed(fault_dir, run, phase)]
            worker.kill()
            outcome.kills += 1
            worker = pool.start(concurrency=batch, name="chaos")
        wait_for(lambda ids=ids: not Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL).exists(),
                 timeout=180, what="the batch finished", diagnose=lambda ids=ids: diagnose(ids, pool))
    asked: dict[int, float] = {}
    wait_for(lambda: fingerprinted(outcome.runs, asked), timeout=180, what="the workers filled every fingerprint",
             diagnose=lambda: diagnose(outcome.runs, pool), reaping=False)
    worker.kill()
    outcome.problems, outcome.duplicates = check(world, outcome.runs, set(outcome.committed_then_killed))
    return outcome


def check(world, run_ids: list[int], adopted: set[tuple[int, str]]) -> tuple[list[str], int]:
    """Every broken invariant, and how many duplicate rows the tables hold."""
    problems: list[str] = []
    lake = catalog_for(world.workspace, Environment.objects.get(workspace=world.workspace, name="dev"))
    duplicates = 0
    for run in Run.objects.filter(pk__in=run_ids).order_by("pk"):
        if run.status != RunStatus.SUCCEEDED:
            problems.append(f"run {run.pk}: {run.status} {run.error[:200]}")
        for phase in run.phases.all():
            out = (phase.output.get("tables") or [{}])[0]
            first = (run.pk, phase.name) in adopted  # its first attempt committed, then was killed
            adopted_right = bool(out.get("adopted")) == first and (not first or out.get("committed_by_attempt") == 1)
            if phase.attempt < 2 or not adopted_right:
                problems.append(f"run {run.pk} {phase.name}: attempt {phase.attempt}, output {out}")
            versions = TableVersion.objects.filter(phase=phase)
            if versions.count() != 1 or (first and versions[0].attempt != 1) or not versions[0].fingerprint:
                problems.append(f"run {run.pk} {phase.name}: versions {list(versions.values('version', 'attempt'))}")
            if TableEdge.objects.filter(phase=phase, direction="write").count() != 1:
                problems.append(f"run {run.pk} {phase.name}: not one write edge")
    for fmt, table, phase in (("iceberg", "chaos.ice", "ice"), ("delta", "chaos.dlt", "dlt")):
        data, current = table_arrow(lake, fmt, *table.split("."))
        per_run = Counter(data.column("run_id").to_pylist())
        for run_id in run_ids:
            if per_run.get(run_id, 0) != ROWS:
                problems.append(f"{table}: run {run_id} has {per_run.get(run_id, 0)} rows, not {ROWS}")
        duplicates += data.num_rows - pc.count_distinct(
            pc.binary_join_element_wise(pc.cast(data.column("run_id"), pa.string()),
                                        pc.cast(data.column("n"), pa.string()), ":")).as_py()
        content = table_fingerprint(data)
        if content != table_fingerprint(expected(run_ids, phase)):
            problems.append(f"{table}: fingerprint differs from the rows expected")
        recorded = TableVersion.objects.filter(table__namespace="chaos", table__name=table.split(".")[1],
                                               version=current).values_list("fingerprint", flat=True).first()
        if recorded != content:  # the workers computed it from that very version, after the fact
            problems.append(f"{table}: version {current} records fingerprint {recorded!r}, not its content's")
        if fmt == "iceberg":
            tbl = lake.iceberg().load_table(table)
            commits = Counter((s.summary.get(RUN_ID), s.summary.get(PHASE)) for s in tbl.snapshots())
            problems += [f"{table}: run {k[0]} committed {n} snapshots" for k, n in commits.items() if n != 1]
        else:
            dt = delta_table(lake, *table.split("."))
            for phase_row in Phase.objects.filter(run_id__in=run_ids, name=phase):
                want = 1 if (phase_row.run_id, phase) in adopted else phase_row.attempt
                if dt.transaction_version(f"controlroom-run-{phase_row.run_id}-phase-{phase_row.pk}") != want:
                    problems.append(f"{table}: run {phase_row.run_id} has no app transaction of attempt {want}")
    return problems, duplicates


def expected(run_ids: list[int], phase: str) -> pa.Table:
    run_col = [r for r in run_ids for _ in range(ROWS)]
    n = [i for _ in run_ids for i in range(ROWS)]
    return pa.table({"run_id": pa.array(run_col, pa.int64()), "n": pa.array(n, pa.int64()),
                     "label": [f"{phase} {i}" for i in n]})
