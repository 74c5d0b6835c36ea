"""Reruns: retry from failed keeps what succeeded; rebuild compares output hashes."""

import duckdb
import pytest

from controlroom.services import ServiceError
from runs.models import Run, RunStatus
from runs.services.jobs import job_create
from runs.services.reruns import rebuild_comparison, run_rerun
from runs.services.runs import run_create

pytestmark = pytest.mark.django_db
FLAKY = """name: flaky
phases:
  - {name: load, kind: sql, config: {table: t, sql: "select 1 as x"}}
  - {name: check, kind: sql, config: {sql: "select count(*) from upstream_flags"}}
  - {name: publish, kind: sql, config: {artifact: out.csv, sql: "select * from t"}}
"""


def test_retry_from_failed_reruns_only_what_did_not_succeed(world, settings, eager_celery,
                                                            django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=FLAKY)
    with django_capture_on_commit_callbacks(execute=True):
        failed = run_create(access=world.access("operator"), job=job)
    failed.refresh_from_db()
    assert failed.status == RunStatus.FAILED
    assert dict(failed.phases.values_list("name", "state")) == {"load": "succeeded", "check": "failed",
                                                                "publish": "skipped"}
    # Someone fixes the upstream data; retrying from failed keeps `load` and runs the rest.
    duckdb.connect(str(settings.WAREHOUSE_DIR / "acme" / "dev" / "warehouse.duckdb")).execute(
        "create table upstream_flags as select 1 as ok").close()
    with django_capture_on_commit_callbacks(execute=True):
        retry = run_rerun(access=world.access("operator"), run=failed, mode="retry")
    retry.refresh_from_db()
    assert retry.status == RunStatus.SUCCEEDED and retry.rerun_of == failed and retry.trigger == "rerun"
    load = retry.phases.get(name="load")
    assert load.attempt == 0 and load.output["kept_from_run"] == failed.pk  # not run again
    started = list(retry.events.filter(type="PHASE_STARTED").values_list("phase__name", flat=True))
    assert started == ["check", "publish"]
    assert retry.output_manifest["artifacts"].keys() == {"out.csv"}
    with pytest.raises(ServiceError, match="nothing to retry"):
        run_rerun(access=world.access("operator"), run=retry, mode="retry")


def test_rebuild_runs_everything_and_compares_hashes(world, demo_job, eager_celery,
                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        original = run_create(access=world.access("operator"), job=demo_job)
    original.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        rebuild = run_rerun(access=world.access("operator"), run=original, mode="rebuild")
    rebuild.refresh_from_db()
    assert rebuild.status == RunStatus.SUCCEEDED and rebuild.git_sha == original.git_sha
    assert rebuild.parameters == original.parameters
    assert rebuild.events.filter(type="PHASE_STARTED").count() == 5
    [diff] = rebuild_comparison(rebuild)
    assert diff.name == "gold_revenue_by_country.csv" and diff.same and diff.original == diff.rebuilt
    page = world.client("viewer").get(f"/w/acme/runs/{rebuild.pk}/").content.decode()
    assert "identical" in page and f'rebuild of <a href="/w/acme/runs/{original.pk}/">run #{original.pk}</a>' in page
    # A different output shows up as a difference.
    Run.objects.filter(pk=original.pk).update(output_manifest={"artifacts": {"gold_revenue_by_country.csv": "0" * 64}})
    rebuild.refresh_from_db()
    assert not rebuild_comparison(rebuild)[0].same
    assert "differs" in world.client("viewer").get(f"/w/acme/runs/{rebuild.pk}/").content.decode()


def test_rerun_buttons_respect_roles_and_state(world, demo_job, eager_celery, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(access=world.access("operator"), job=demo_job)
    url = f"/w/acme/runs/{run.pk}/rerun/"
    assert world.client("analyst").post(url, {"mode": "rebuild"}).status_code == 403
    bad = world.client("operator").post(url, {"mode": "retry"}, follow=True)
    assert "nothing to retry" in bad.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        ok = world.client("operator").post(url, {"mode": "rebuild"})
    new = Run.objects.get(rerun_of=run)
    assert ok["Location"] == f"/w/acme/runs/{new.pk}/"
    page = world.client("operator").get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert 'value="rebuild"' in page and 'value="retry"' not in page  # succeeded: rebuild only
