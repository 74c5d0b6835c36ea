"""Reruns: retry from failed keeps what succeeded; rebuild compares output hashes."""

import duckdb
import pytest
from django.core.exceptions import PermissionDenied

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


DIAMOND = """name: diamond
phases:
  - {name: a, kind: sql, config: {table: a, sql: "select 1 as x"}}
  - {name: b, kind: sql, depends_on: [a], config: {table: b, sql: "select x from a"}}
  - {name: c, kind: sql, depends_on: [a], config: {table: c, sql: "select x from a"}}
  - {name: d, kind: sql, depends_on: [b, c], config: {table: d, sql: "select * from b, c"}}
"""


def test_repair_reruns_the_chosen_phases_and_their_downstream(world, eager_celery,
                                                              django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=DIAMOND)
    with django_capture_on_commit_callbacks(execute=True):
        original = run_create(access=world.access("operator"), job=job)
    original.refresh_from_db()
    assert original.status == RunStatus.SUCCEEDED
    client = world.client("operator")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/w/acme/runs/{original.pk}/rerun/", {"mode": "repair", "phase": ["b"]})
    repair = Run.objects.exclude(pk=original.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/w/acme/runs/{repair.pk}/"
    repair.refresh_from_db()
    assert repair.status == RunStatus.SUCCEEDED and repair.rerun_mode == "repair"
    started = sorted(repair.events.filter(type="PHASE_STARTED").values_list("phase__name", flat=True))
    assert started == ["b", "d"]  # b was chosen, d is downstream of it; a and c are kept
    assert {p.name: p.output.get("kept_from_run") for p in repair.phases.all()} == {
        "a": original.pk, "b": None, "c": original.pk, "d": None}
    page = client.get(f"/w/acme/runs/{repair.pk}/").content.decode()
    assert 'value="repair"' in page and f"repair of <a href=\"/w/acme/runs/{original.pk}/\"" in page


def test_repair_refuses_what_could_never_start(world, eager_celery, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=FLAKY)
    with django_capture_on_commit_callbacks(execute=True):
        failed = run_create(access=world.access("operator"), job=job)
    failed.refresh_from_db()  # load succeeded, check failed, publish skipped
    operator = world.access("operator")
    with pytest.raises(ServiceError, match="publish depends on check, which did not succeed"):
        run_rerun(access=operator, run=failed, mode="repair", phases=["publish"])
    with pytest.raises(ServiceError, match="no phase named 'nope'"):
        run_rerun(access=operator, run=failed, mode="repair", phases=["nope"])
    with pytest.raises(ServiceError, match="at least one phase"):
        run_rerun(access=operator, run=failed, mode="repair", phases=[])
    with pytest.raises(PermissionDenied):
        run_rerun(access=world.access("viewer"), run=failed, mode="repair", phases=["check"])
    page = world.client("operator").post(f"/w/acme/runs/{failed.pk}/rerun/", {"mode": "repair", "phase": ["zz"]},
                                         follow=True).content.decode()
    assert "no phase named" in page and Run.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        repaired = run_rerun(access=operator, run=failed, mode="repair", phases=["check"])
    repaired.refresh_from_db()
    started = sorted(repaired.events.filter(type="PHASE_STARTED").values_list("phase__name", flat=True))
    assert started == ["check"]  # still failing upstream data; publish is then skipped again
    assert repaired.status == RunStatus.FAILED


def test_repair_over_the_api(world, eager_celery, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=DIAMOND)
    with django_capture_on_commit_callbacks(execute=True):
        original = run_create(access=world.access("operator"), job=job)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {world.token('operator')}"}
    url = f"/api/v1/ops/runs/{original.pk}/rerun"
    bad = world.client("viewer").post(url, {"mode": "repair", "phases": "c"}, content_type="application/json", **auth)
    assert bad.status_code == 400 and "list of phase names" in bad.json()["error"]["message"]
    with django_capture_on_commit_callbacks(execute=True):
        ok = world.client("viewer").post(url, {"mode": "repair", "phases": ["c"]}, content_type="application/json",
                                         **auth)
    assert ok.status_code == 201 and ok.json()["rerun_mode"] == "repair"
