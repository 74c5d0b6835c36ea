"""/metrics, /healthz and /readyz (controlroom/metrics.py, controlroom/health.py): never public;
runs, phases and their durations, queue depth, lease expiries and requeues, retries, artifact
upload failures, SQL executions, table freshness, HTTP latency by view and worker liveness, each
moving when the thing it counts happens. A real Prometheus scrapes them in test_prometheus.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from controlroom.metrics import count
from controlroom.worker_beat import beat_once
from runs.models import Phase, PhaseState, Run
from runs.services.jobs import job_create
from runs.services.leases import phase_claim_next
from runs.services.phases import phase_execute, phases_reap
from runs.services.runs import run_create

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "scrape-token-for-the-tests-0123456789"


@pytest.fixture
def scrape(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = TOKEN, []

    def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.content[:300]
        assert response["Content-Type"].startswith("text/plain; version=")
        samples = {}
        for family in text_string_to_metric_families(response.content.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    return read


def value(samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(v for (n, got), v in samples.items() if n == name and set(labels.items()) <= set(got))


def make_run(world, name: str, sql: str, django_capture_on_commit_callbacks, retries: int = 0) -> Run:
    spec = f"name: {name}\nphases:\n  - {{name: a, kind: sql, retries: {retries}, config: {{sql: \"{sql}\"}}}}\n"
    from runs.models import Job

    job = Job.objects.filter(workspace=world.workspace, slug=name).first() or job_create(
        access=world.access("operator"), spec_text=spec)
    with django_capture_on_commit_callbacks(execute=False):
        return run_create(access=world.access("operator"), job=job)


def test_metrics_are_never_public(world, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    assert Client().get("/metrics").status_code == 404  # nothing configured: nobody
    assert world.client("admin").get("/metrics").status_code == 404  # a signed-in admin is not a scraper
    settings.METRICS_TOKEN = TOKEN
    assert Client().get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 404
    assert Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    settings.METRICS_TOKEN = ""
    import ipaddress

    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert Client().get("/metrics").status_code == 404  # the test client is 127.0.0.1
    assert Client().get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 404  # forged
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    assert Client().get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200  # via our proxy
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 0
    assert Client().get("/metrics").status_code == 200


def test_runs_phases_and_durations_move_with_outcomes(world, scrape, django_capture_on_commit_callbacks):
    before = scrape()
    for name, sql in (("good", "select 1"), ("good", "select 1"), ("bad", "select * from no_such_table")):
        run = make_run(world, name, sql, django_capture_on_commit_callbacks)
        phase_execute(phase_id=run.phases.get().pk, worker="w")
    after = scrape()
    common = {"workspace": "acme", "environment": "dev"}
    assert value(after, "controlroom_runs_total", job_slug="good", state="succeeded", **common) == 2
    assert value(after, "controlroom_runs_total", job_slug="bad", state="failed", **common) == 1
    assert value(after, "controlroom_phases_total", job_slug="bad", kind="sql", state="failed") == 1
    count_ = value(after, "controlroom_phase_duration_seconds_count", job_slug="good", kind="sql", state="succeeded")
    assert count_ == 2
    assert value(after, "controlroom_phase_duration_seconds_bucket", job_slug="good", state="succeeded", le="+Inf") == 2
    assert value(after, "controlroom_phase_duration_seconds_bucket", job_slug="good", state="succeeded", le="15.0") == 2
    assert value(before, "controlroom_runs_total") == 0
    assert value(after, "controlroom_runs_current") == 0


def test_queue_depth_lease_expiries_requeues_and_retries(world, scrape, settings, monkeypatch,
                                                         django_capture_on_commit_callbacks):
    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    run = make_run(world, "flaky", "select 1", django_capture_on_commit_callbacks, retries=2)
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(seconds=30))
    samples = scrape()
    assert value(samples, "controlroom_queue_depth", kind="phase:sql") == 1
    assert 25 < value(samples, "controlroom_queue_oldest_seconds", kind="phase:sql") < 120
    phase, _ = phase_claim_next(workspace=world.workspace, worker="lost-worker", kinds=["sql"])
    assert value(scrape(), "controlroom_queue_depth", kind="phase:sql") == 0  # taken
    Phase.objects.filter(pk=phase.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert phases_reap() == [run.pk]  # the worker vanished: its lease expired, the phase is requeued
    samples = scrape()
    assert value(samples, "controlroom_lease_expiries_total", kind="sql") == 1
    assert value(samples, "controlroom_phase_retries_total", kind="sql", reason="lease_expired") == 1
    assert value(samples, "controlroom_queue_depth", kind="phase:sql") == 1  # back in the queue
    assert Phase.objects.get(pk=phase.pk).state == PhaseState.PENDING


def test_database_counters_add_up_and_refuse_unknown_names(db):
    count("controlroom_artifact_upload_failures", store="s3")
    count("controlroom_artifact_upload_failures", by=2, store="s3")
    from controlroom.models import MetricCount

    assert MetricCount.objects.get(name="controlroom_artifact_upload_failures").value == 3
    with pytest.raises(ValueError):
        count("controlroom_anything_else")


def test_an_artifact_store_failure_is_counted(world, scrape, settings, tmp_path):
    from artifacts.storage import BlobStoreError, get_store

    writer = get_store().writer()
    writer.write(b"first part")
    writer._keep = lambda chunk: (_ for _ in ()).throw(BlobStoreError("disk full"))  # the store fails mid-upload
    with pytest.raises(BlobStoreError):
        writer.write(b"second part")
    writer.abort()
    assert value(scrape(), "controlroom_artifact_upload_failures_total", store="local") == 1


def test_sql_executions_by_engine_and_state_with_durations(world, scrape):
    from sqlwarehouse.execution import query_execute, query_submit

    conn = world.workspace.connections.get(name="warehouse")
    for sql in ("select 1", "select 2", "select * from nope"):
        execution = query_submit(access=world.access("analyst"), connection=conn, sql=sql)
        query_execute(execution_id=execution.pk)
    samples = scrape()
    assert value(samples, "controlroom_sql_executions_total", engine="duckdb", state="succeeded") == 2
    assert value(samples, "controlroom_sql_executions_total", engine="duckdb", state="failed") == 1
    assert value(samples, "controlroom_sql_execution_duration_seconds_count", engine="duckdb") == 3
    assert value(samples, "controlroom_sql_execution_duration_seconds_sum", engine="duckdb") > 0


def test_table_freshness_and_worker_liveness(world, scrape):
    from lakehouse.models import Table, TableVersion

    table = Table.objects.create(workspace=world.workspace, environment=world.workspace.environments.get(name="dev"),
                                 namespace="gold", name="revenue", format="iceberg")
    TableVersion.objects.create(table=table, version=1, operation=TableVersion.Operation.values[0],
                                committed_at=timezone.now() - timedelta(minutes=10))
    beat_once("celery@host-a", "default")
    samples = scrape()
    assert 590 < value(samples, "controlroom_table_freshness_seconds", table="gold.revenue") < 700
    assert value(samples, "controlroom_celery_worker_up", worker="celery@host-a", queues="default") == 1
    from controlroom.models import WorkerBeat

    WorkerBeat.objects.update(seen_at=timezone.now() - timedelta(minutes=5))  # it stopped beating
    assert value(scrape(), "controlroom_celery_worker_up", worker="celery@host-a") == 0


def test_http_latency_by_view(world, scrape):
    world.client("operator").get("/w/acme/jobs/")
    samples = scrape()
    assert value(samples, "controlroom_http_request_duration_seconds_count", view="runs:job_list", method="GET",
                 status="2xx") >= 1


def test_healthz_needs_nothing_and_readyz_names_what_is_down(world, settings):
    assert Client().get("/healthz").json() == {"status": "ok"}
    ready = Client().get("/readyz")
    assert ready.status_code == 200, ready.content
    assert {k: v["ok"] for k, v in ready.json()["checks"].items()} == {
        "database": True, "broker": True, "artifact_store": True}
    settings.ARTIFACT_STORE_URL = "file:///proc/no-such-place"
    down = Client().get("/readyz")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert down.json()["checks"]["artifact_store"] == {**down.json()["checks"]["artifact_store"], "ok": False,
                                                       "error": "artifact_store not reachable"}
    assert "/proc" not in down.content.decode()  # the reason goes to the log only


def test_probes_and_the_scraper_answer_whatever_host_they_call(world, settings):
    """The kubelet and Prometheus call a pod by its address or a service name ALLOWED_HOSTS need
    not list; every other page still refuses such a host."""
    settings.ALLOWED_HOSTS, settings.METRICS_TOKEN = ["controlroom.example"], TOKEN
    for host in ("10.1.2.3:8000", "web:8000"):
        assert Client().get("/healthz", HTTP_HOST=host).status_code == 200
        assert Client().get("/readyz", HTTP_HOST=host).status_code == 200
        assert Client().get("/metrics", HTTP_HOST=host, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert Client().get("/metrics", HTTP_HOST=host).status_code == 404  # still guarded
        assert Client().get("/accounts/login/", HTTP_HOST=host).status_code == 400  # DisallowedHost
