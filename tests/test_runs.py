"""The run engine in-process: claims, events, failures, retries, timeouts, reaping, pages."""

from datetime import timedelta

import pytest
from django.utils import timezone

from artifacts.models import Artifact
from runs import tasks
from runs.models import Phase, PhaseState, Run, RunEvent, RunStatus
from runs.services.events import StaleLease, phase_log
from runs.services.jobs import job_create
from runs.services.leases import phase_claim
from runs.services.phases import phase_complete, phases_reap
from runs.services.runs import run_create

pytestmark = pytest.mark.django_db


def spec(*phases: str, name: str = "t") -> str:
    return f"name: {name}\nphases:\n" + "".join(phases)


def sql_phase(name: str, sql: str, extra: str = "") -> str:
    return f"  - name: {name}\n    kind: sql\n{extra}    config:\n      sql: \"{sql}\"\n"


def trigger(world, spec_text: str, django_capture_on_commit_callbacks, **kwargs) -> Run:
    job = job_create(access=world.access("operator"), spec_text=spec_text)
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(access=world.access("operator"), job=job, **kwargs)
    run.refresh_from_db()
    return run


def types(run: Run) -> list[str]:
    return list(run.events.values_list("type", flat=True))


def test_demo_job_from_the_ui_succeeds_with_ordered_events(world, demo_job, eager_celery,
                                                           django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = world.client("operator").post("/w/acme/jobs/medallion/trigger/",
                                                  {"environment": "dev", "param_min_amount": "0"})
    run = Run.objects.get()
    assert response["Location"] == f"/w/acme/runs/{run.pk}/"
    assert run.status == RunStatus.SUCCEEDED and run.trigger == "ui" and run.git_sha == "a" * 40
    seqs = list(run.events.values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    flow = types(run)
    assert flow[0] == "RUN_CREATED" and flow[-1] == "RUN_SUCCEEDED"
    assert flow.count("PHASE_SUCCEEDED") == 5 and "PHASE_LOG" in flow
    assert [p.state for p in run.phases.all()] == [PhaseState.SUCCEEDED] * 5
    assert all(p.started_at <= p.finished_at for p in run.phases.all())
    gold = run.phases.get(name="gold")
    assert gold.output == {"table": "gold_revenue_by_country", "rows": 6}
    artifact = Artifact.objects.get(run=run)
    assert artifact.name == "gold_revenue_by_country.csv" and artifact.phase.name == "publish"
    page = world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert "RUN_SUCCEEDED" in page and "gold_revenue_by_country.csv" in page and "hx-trigger" not in page


def test_duplicate_delivery_runs_a_phase_once(world, settings, tmp_path, django_capture_on_commit_callbacks):
    settings.PHASE_CALLABLE_MODULES = ["runs.builtin_callables", "tests.callables"]
    marker = tmp_path / "effects.txt"
    text = spec(f"  - name: once\n    kind: python\n    config:\n      callable: record_side_effect\n"
                f"      args: {{path: '{marker}'}}\n")
    job = job_create(access=world.access("operator"), spec_text=text)
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    phase = run.phases.get()
    tasks.phase_execute.apply((phase.pk,))
    tasks.phase_execute.apply((phase.pk,))  # the same message again
    assert marker.read_text().splitlines() == [f"{phase.pk}:1"]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and types(run).count("PHASE_STARTED") == 1


def test_failure_skips_dependents_and_explains(world, eager_celery, django_capture_on_commit_callbacks):
    run = trigger(world, spec(sql_phase("a", "select 1"), sql_phase("b", "select * from no_such_table"),
                              sql_phase("c", "select 2")), django_capture_on_commit_callbacks)
    states = {p.name: p.state for p in run.phases.all()}
    assert run.status == RunStatus.FAILED
    assert states == {"a": "succeeded", "b": "failed", "c": "skipped"}
    assert run.phases.get(name="b").error.startswith("SQL error: Catalog Error: Table with name no_such_table")
    assert "b: SQL error" in run.error and types(run)[-1] == "RUN_FAILED" and "PHASE_SKIPPED" in types(run)
    page = world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert "Table with name no_such_table does not exist" in page


def test_missing_connection_fails_the_phase_clearly(world, eager_celery, django_capture_on_commit_callbacks):
    text = "name: t\nphases:\n  - name: a\n    kind: sql\n    config: {sql: select 1, connection: nope}\n"
    run = trigger(world, text, django_capture_on_commit_callbacks, environment="stage")
    assert run.status == RunStatus.FAILED
    assert run.phases.get().error == "No connection named 'nope' in acme/stage."


def test_executor_crash_is_logged_and_reported_briefly(world, settings, eager_celery, caplog,
                                                       django_capture_on_commit_callbacks):
    settings.PHASE_CALLABLE_MODULES = ["runs.builtin_callables", "tests.callables"]
    run = trigger(world, spec("  - name: a\n    kind: python\n    config: {callable: crash}\n"),
                  django_capture_on_commit_callbacks)
    assert run.phases.get().error == "internal error in the python executor (KeyError); see the worker log"
    assert any("an executor bug" in (r.exc_text or str(r.exc_info)) for r in caplog.records if r.exc_info)


def test_retries_then_fail_with_retry_events(world, eager_celery, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    run = trigger(world, spec("  - name: a\n    kind: python\n    retries: 2\n    config: {callable: fail}\n"),
                  django_capture_on_commit_callbacks)
    phase = run.phases.get()
    assert (run.status, phase.state, phase.attempt) == (RunStatus.FAILED, PhaseState.FAILED, 3)
    assert types(run).count("PHASE_RETRY_SCHEDULED") == 2 and types(run).count("PHASE_FAILED") == 1


def test_a_retry_is_not_claimable_before_it_is_due(world, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"),
                     spec_text=spec("  - name: a\n    kind: python\n    retries: 1\n    config: {callable: fail}\n"))
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    phase, token = phase_claim(phase_id=run.phases.get().pk, worker="w1")
    phase_complete(phase=phase, lease_token=token, succeeded=False, error="boom")
    phase.refresh_from_db()
    assert phase.state == PhaseState.PENDING and phase.not_before > timezone.now() - timedelta(seconds=1)
    Phase.objects.filter(pk=phase.pk).update(not_before=timezone.now() + timedelta(minutes=5))
    assert phase_claim(phase_id=phase.pk, worker="w2") is None
    event = run.events.get(type="PHASE_RETRY_SCHEDULED")
    assert "due" in event.payload and event.level == "warning"


@pytest.mark.slow  # waits for the timeout
def test_sql_timeout_interrupts_the_engine(world, eager_celery, django_capture_on_commit_callbacks):
    slow = sql_phase("slow", "select count(*) from range(100000000000)", extra="    timeout: 1\n")
    run = trigger(world, spec(slow), django_capture_on_commit_callbacks)
    assert run.phases.get().error == "timed out after 1 s"  # the same words as the reaper's


def test_reaper_requeues_expired_lease_and_fences_the_old_worker(world, monkeypatch,
                                                                  django_capture_on_commit_callbacks):
    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    job = job_create(access=world.access("operator"), spec_text=spec(sql_phase("a", "select 1", "    retries: 1\n")))
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    phase, old_token = phase_claim(phase_id=run.phases.get().pk, worker="lost-worker")
    Phase.objects.filter(pk=phase.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert phases_reap() == [run.pk]
    phase.refresh_from_db()
    assert phase.state == PhaseState.PENDING and "PHASE_LEASE_EXPIRED" in types(run)
    new_phase, new_token = phase_claim(phase_id=phase.pk, worker="new-worker")
    assert new_phase.attempt == 2 and new_token != old_token
    before = RunEvent.objects.count()
    with pytest.raises(StaleLease):
        phase_log(phase=phase, lease_token=old_token, message="late write")
    with pytest.raises(StaleLease):
        phase_complete(phase=phase, lease_token=old_token, succeeded=True)
    assert RunEvent.objects.count() == before
    phase_complete(phase=new_phase, lease_token=new_token, succeeded=True)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_bad_trigger_input_creates_no_run(world, demo_job):
    client = world.client("operator")
    response = client.post("/w/acme/jobs/medallion/trigger/", {"param_min_amount": "lots"}, follow=True)
    assert "Could not start the run: parameter min_amount must be a number, not &#x27;lots&#x27;" in \
        response.content.decode()
    response = client.post("/w/acme/jobs/medallion/trigger/", {"environment": "qa"}, follow=True)
    assert "Unknown environment &#x27;qa&#x27;" in response.content.decode()
    assert world.client("analyst").post("/w/acme/jobs/medallion/trigger/").status_code == 403
    assert not Run.objects.exists()


def test_live_log_fragment_and_polling_stop(world, demo_job, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=demo_job)
    client = world.client("viewer")
    htmx = {"HTTP_HX_REQUEST": "true"}
    running = client.get(f"/w/acme/runs/{run.pk}/log/?after=0", **htmx)
    body = running.content.decode()
    assert running.status_code == 200 and "RUN_CREATED" in body and "log/?after=1\"" in body
    status = client.get(f"/w/acme/runs/{run.pk}/", **htmx)
    assert status.status_code == 200 and 'id="run-status"' in status.content.decode()
    assert "<html" not in status.content.decode()
    phase, token = phase_claim(phase_id=run.phases.first().pk, worker="w")
    phase_log(phase=phase, lease_token=token, message="hello from the phase")
    after = client.get(f"/w/acme/runs/{run.pk}/log/?after=1", **htmx).content.decode()
    assert "hello from the phase" in after and "RUN_CREATED" not in after
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    done = client.get(f"/w/acme/runs/{run.pk}/log/?after=0", **htmx)
    assert done.status_code == 286 and "hx-trigger" not in done.content.decode()
    assert client.get(f"/w/acme/runs/{run.pk}/", **htmx).status_code == 286


def test_unknown_run_ids_are_404_in_ui_and_api(world, demo_job):
    assert world.client("viewer").get("/w/acme/runs/999999/").status_code == 404
    auth = {"HTTP_AUTHORIZATION": f"Bearer {world.token('viewer')}"}
    for run_id in ("999999", "abc", "99999999999999999999999", "-3"):
        response = world.client("viewer").get(f"/api/v1/workspaces/acme/runs/{run_id}", **auth)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_api_trigger_read_and_page_events(world, demo_job, eager_celery, django_capture_on_commit_callbacks):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {world.token('operator')}"}
    client = world.client("viewer")
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post("/api/v1/workspaces/acme/jobs/medallion/runs",
                              {"parameters": {"min_amount": 100}, "environment": "stage"},
                              content_type="application/json", **auth)
    assert created.status_code == 201
    run_id = created.json()["id"]
    detail = client.get(f"/api/v1/workspaces/acme/runs/{run_id}", **auth).json()
    assert detail["status"] == "succeeded" and detail["parameters"] == {"source_file": "orders.csv",
                                                                        "min_amount": 100}
    assert detail["environment"] == "stage" and [p["state"] for p in detail["phases"]] == ["succeeded"] * 5
    seen, after = [], 0
    while True:
        page = client.get(f"/api/v1/workspaces/acme/runs/{run_id}/events?after={after}", **auth).json()
        if not page["events"]:
            break
        seen += page["events"]
        after = page["next_after"]
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1)) and seen[-1]["type"] == "RUN_SUCCEEDED"
    listed = client.get("/api/v1/workspaces/acme/runs?status=succeeded", **auth).json()
    assert [r["id"] for r in listed["runs"]] == [run_id]
    bad = client.post("/api/v1/workspaces/acme/jobs/medallion/runs", {"parameters": {"x": 1}},
                      content_type="application/json", **auth)
    assert bad.status_code == 400 and "unknown parameter(s): x" in bad.json()["error"]["message"]
    assert Run.objects.count() == 1


def test_list_pages_and_api_have_bounded_query_counts(world, demo_job, django_capture_on_commit_callbacks,
                                                      django_assert_max_num_queries):
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(30):
            run_create(access=world.access("operator"), job=demo_job)
    client = world.client("viewer")
    client.get("/w/acme/runs/")  # warm the session
    with django_assert_max_num_queries(8):
        page = client.get("/w/acme/runs/")
    assert page.content.decode().count('class="badge running"') == 30
    with django_assert_max_num_queries(8):
        assert client.get("/w/acme/jobs/").status_code == 200
    with django_assert_max_num_queries(10):
        assert client.get("/w/acme/jobs/medallion/").status_code == 200
    auth = {"HTTP_AUTHORIZATION": f"Bearer {world.token('viewer')}"}
    with django_assert_max_num_queries(6):
        listed = client.get("/api/v1/workspaces/acme/runs", **auth).json()["runs"]
    assert len(listed) == 30 and all(len(r["phases"]) == 5 for r in listed)


def test_a_database_blip_while_reporting_success_is_retried(world, eager_celery, monkeypatch,
                                                            django_capture_on_commit_callbacks):
    from django.db import OperationalError

    from runs.services import phases as phase_services

    real, calls = phase_services.phase_complete, {"n": 0}

    def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(phase_services, "phase_complete", flaky)
    monkeypatch.setattr(phase_services.time, "sleep", lambda s: None)
    monkeypatch.setattr(phase_services.connections["default"], "close", lambda: None)  # keep the test's transaction
    run = trigger(world, spec(sql_phase("a", "select 1")), django_capture_on_commit_callbacks)
    phase = run.phases.get()
    assert (run.status, phase.state, phase.attempt, phase.error) == (RunStatus.SUCCEEDED, "succeeded", 1, "")
    assert calls["n"] == 2
