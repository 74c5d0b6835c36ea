"""What a claim costs the database: it reads only claimable phases, however many have ended, and
on PostgreSQL the two hot statements are prepared once per connection instead of planned per call.

The figures behind these live in benchmarks/claim_throughput.py; here only the structure is
checked (which index, how many rows visited, prepared or not), never a time."""

import datetime as dt
import uuid
from typing import Any

import pytest
from django.db import connection

from runs.models import Phase, PhaseState, Run, RunEvent, RunStatus
from runs.services import pgclaim
from runs.services.jobs import job_create
from runs.services.leases import _claimable, phase_claim_next
from runs.services.phases import phase_complete
from runs.services.runs import run_create

pytestmark = pytest.mark.django_db(transaction=True)
BURST, ENDED = 2000, 500


def queue(world, django_capture_on_commit_callbacks, phases: int):
    lines = [f"  - {{name: p{i}, kind: python, config: {{callable: sleep, args: {{seconds: 0}}}}}}"
             for i in range(phases)]
    job = job_create(access=world.access("operator"), spec_text="name: wide\nphases:\n" + "\n".join(lines) + "\n")
    with django_capture_on_commit_callbacks(execute=False):
        return run_create(access=world.access("operator"), job=job)


def drain(world, count: int) -> None:
    for _ in range(count):
        phase, token = phase_claim_next(workspace=world.workspace, worker="w", kinds=["python"])
        phase_complete(phase=phase, lease_token=token, succeeded=True)


def walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a PostgreSQL JSON plan, depth first."""
    return [plan] + [node for child in plan.get("Plans", []) for node in walk(child)]


def scans(plan: dict[str, Any], model: type) -> list[dict[str, Any]]:
    """The nodes under ``plan`` that read the model's table, depth first."""
    return [n for n in walk(plan) if n.get("Relation Name") == model._meta.db_table and "Scan" in n["Node Type"]]


def test_a_claim_reads_only_claimable_phases_however_many_have_ended(world, django_capture_on_commit_callbacks):
    # A burst: 100 runs of 20 phases queued (beside 200 ended runs), the statistics taken while
    # all waited; then 500 phases end before autovacuum looks again. A claim must neither walk
    # past the ended phases nor start from the runs (every running run's phases, sorted).
    run = queue(world, django_capture_on_commit_callbacks, phases=1)
    fields = {"workspace": run.workspace, "environment": run.environment, "job": run.job, "trigger": "api",
              "job_version": run.job_version}
    Run.objects.bulk_create(Run(**fields, status=RunStatus.SUCCEEDED) for _ in range(200))
    burst = Run.objects.bulk_create(Run(**fields, status=RunStatus.QUEUED) for _ in range(BURST // 20))
    Phase.objects.bulk_create(Phase(run=r, name=f"b{i}", position=i, kind="python", config={})
                              for r in burst for i in range(20))
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute(f"ANALYZE {Phase._meta.db_table}")
            cur.execute(f"ANALYZE {Run._meta.db_table}")
    Run.objects.filter(pk__in=[r.pk for r in burst]).update(status=RunStatus.RUNNING)
    Phase.objects.filter(run=run).update(state=PhaseState.SUCCEEDED)
    ended = list(Phase.objects.filter(run__in=burst).order_by("id").values_list("id", flat=True)[:ENDED])
    Phase.objects.filter(pk__in=ended).update(state=PhaseState.SUCCEEDED)

    if connection.vendor == "postgresql":
        now = dt.datetime.now(dt.UTC)
        params = {"kinds": ["python"], "kind": "python", "now": now, "workspace": world.workspace.pk, "run": None,
                  "token": "t", "worker": "w", "expires": now, "expires_iso": now.isoformat(),
                  "event_id": uuid.uuid4()}
        connection.ensure_connection()
        raw = connection.connection
        with raw.transaction(force_rollback=True), raw.cursor() as cur:  # EXPLAIN ANALYZE runs it: roll back
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + pgclaim.claim_sql(kinds=1, one_run=False), params)
            plan = cur.fetchone()[0][0]["Plan"]
        # The candidate scan (the first one) walks a partial index of claimable phases: it meets
        # the next pending phase at once instead of filtering out the ended ones.
        # Its run is looked up for that one candidate: the plan never starts from the runs.
        [cand] = [node for node in walk(plan) if node.get("Subplan Name") == "CTE cand"]
        candidate = scans(cand, Phase)[0]
        assert candidate.get("Index Name") in ("phase_next_idx", "phase_claimable_idx"), candidate
        assert candidate.get("Rows Removed by Filter", 0) == 0, candidate
        assert candidate["Actual Rows"] == 1 and candidate["Actual Loops"] == 1
        for lookup in scans(cand, Run):  # one probe, for the one candidate
            assert lookup["Actual Loops"] == 1, lookup
    else:
        now = dt.datetime.now(dt.UTC)
        query = Phase.objects.filter(_claimable(now), kind__in=["python"], run__workspace=world.workspace)
        sql, params = query.order_by("id").values_list("id", flat=True)[:1].query.sql_with_params()
        with connection.cursor() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = " ".join(str(row[-1]) for row in cur.fetchall())
            index = next(name for name in ("phase_next_idx", "phase_claimable_idx") if name in plan)
            cur.execute(f"PRAGMA index_list({Phase._meta.db_table})")
            partial = {row[1]: row[4] for row in cur.fetchall()}
        assert partial[index] == 1, f"{index} is not a partial index: {plan}"
    phase, _ = phase_claim_next(workspace=world.workspace, worker="w", kinds=["python"])
    assert phase.pk == Phase.objects.filter(run__in=burst).exclude(pk__in=ended).order_by("id").first().pk


def test_claims_and_successes_are_prepared_once_per_connection(world, settings, django_capture_on_commit_callbacks):
    run = queue(world, django_capture_on_commit_callbacks, phases=8)
    drain(world, 6)
    events = list(run.events.order_by("seq").values_list("seq", "type"))
    assert [s for s, _ in events] == list(range(1, 14))  # RUN_CREATED, then a claim and a success each
    assert [t for _, t in events[1:]] == ["PHASE_CLAIMED", "PHASE_SUCCEEDED"] * 6
    if connection.vendor != "postgresql":
        assert not hasattr(connection.connection, "prepare_threshold")
        return

    def prepared() -> dict[str, int]:
        with connection.cursor() as cur:
            cur.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
            return {("claim" if "PHASE_CLAIMED" in sql else "success" if "PHASE_SUCCEEDED" in sql else sql): n
                    for sql, n in cur.fetchall()}

    assert prepared() == {"claim": 6, "success": 6}  # planned from a cache: one PREPARE each
    settings.PG_PREPARE_CLAIMS = False  # behind a transaction-mode pooler: plain statements
    drain(world, 2)
    assert prepared() == {"claim": 6, "success": 6}
    assert RunEvent.objects.filter(run=run, type="PHASE_SUCCEEDED").count() == 8
