"""Concurrency limits per job and per workspace: queued runs wait their turn, visibly."""

import pytest

from runs.models import Job, Run, RunStatus
from runs.services.jobs import job_create
from runs.services.leases import phase_claim_next
from runs.services.phases import phase_complete
from runs.services.runs import run_cancel, run_create

pytestmark = pytest.mark.django_db
ONE = "name: {name}\nphases:\n  - {{name: a, kind: sql, config: {{sql: select 1}}}}\n"


def start(world, job: Job, count: int, django_capture_on_commit_callbacks) -> list[Run]:
    with django_capture_on_commit_callbacks(execute=False):
        return [run_create(access=world.access("operator"), job=job) for _ in range(count)]


def statuses(runs: list[Run]) -> list[str]:
    return [Run.objects.get(pk=r.pk).status for r in runs]


def finish_next(world) -> Run:
    phase, token = phase_claim_next(workspace=world.workspace, worker="w", kinds=["sql"])
    phase_complete(phase=phase, lease_token=token, succeeded=True)
    return phase.run


def test_job_limit_queues_runs_and_admits_them_in_order(world, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=ONE.format(name="limited"))
    Job.objects.filter(pk=job.pk).update(max_concurrent_runs=1)
    job.refresh_from_db()
    runs = start(world, job, 3, django_capture_on_commit_callbacks)
    assert statuses(runs) == ["running", "queued", "queued"]
    page = world.client("viewer").get(f"/w/acme/runs/{runs[2].pk}/").content.decode()
    assert "waiting for a slot: 1 of 1 runs of this job are running; 1 queued ahead" in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert finish_next(world).pk == runs[0].pk
    wake_ups = [c for c in callbacks if "_admit_and_dispatch" in c.__qualname__]
    assert statuses(runs) == ["succeeded", "running", "queued"] and len(wake_ups) == 1  # a wake-up for run 2
    with django_capture_on_commit_callbacks(execute=False):
        assert finish_next(world).pk == runs[1].pk
        assert finish_next(world).pk == runs[2].pk
    assert statuses(runs) == ["succeeded"] * 3


def test_workspace_limit_spans_jobs(world, django_capture_on_commit_callbacks):
    world.workspace.max_concurrent_runs = 2
    world.workspace.save()
    a = job_create(access=world.access("operator"), spec_text=ONE.format(name="a"))
    b = job_create(access=world.access("operator"), spec_text=ONE.format(name="b"))
    capture = django_capture_on_commit_callbacks
    runs = start(world, a, 2, capture) + start(world, b, 1, capture)
    assert statuses(runs) == ["running", "running", "queued"]
    assert "the workspace runs at most 2 runs at once" in \
        world.client("viewer").get(f"/w/acme/runs/{runs[2].pk}/").content.decode()
    # A queued run's phases are not claimable: only the two admitted runs hand out work.
    with django_capture_on_commit_callbacks(execute=False):
        claimed = {finish_next(world).pk, finish_next(world).pk}
    assert claimed == {runs[0].pk, runs[1].pk} and statuses(runs)[2] == "running"


def test_cancelling_a_queued_run_ends_it_at_once(world, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=ONE.format(name="limited"))
    Job.objects.filter(pk=job.pk).update(max_concurrent_runs=1)
    job.refresh_from_db()
    runs = start(world, job, 2, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        run_cancel(access=world.access("operator"), run=runs[1])
    assert statuses(runs) == [RunStatus.RUNNING, RunStatus.CANCELLED]
    assert list(Run.objects.get(pk=runs[1].pk).events.values_list("type", flat=True))[-1] == "RUN_CANCELLED"
