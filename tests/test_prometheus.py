"""A real Prometheus (Debian's package, tests/prometheus_server.py) scrapes the running test
server's /metrics with its bearer token; through Prometheus's query API the figures move when
runs succeed, fail and are requeued after a lost lease, and when a worker beats. Every query of
the Grafana dashboard in compose/ runs on that Prometheus and names only metrics it scraped."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from controlroom.worker_beat import beat_once
from runs.models import Phase
from runs.services.leases import phase_claim_next
from runs.services.phases import phase_execute, phases_reap
from tests.prometheus_server import PrometheusServer
from tests.test_metrics import TOKEN, make_run

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]
DASHBOARD = Path(__file__).resolve().parent.parent / "compose" / "grafana" / "controlroom-dashboard.json"


@pytest.fixture
def prometheus(settings, live_server):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = TOKEN, []
    server = PrometheusServer(target=urlsplit(live_server.url).netloc, token=TOKEN)
    server.start()
    try:
        server.wait_for('up{job="controlroom"}', 1)  # it scrapes us, with the token
        yield server
    finally:
        server.stop()


def test_prometheus_sees_runs_succeed_fail_and_requeue(world, prometheus, monkeypatch, live_server,
                                                       django_capture_on_commit_callbacks):
    assert prometheus.value("sum(controlroom_runs_total)") is None  # no run has ended yet
    for name, sql in (("good", "select 1"), ("good", "select 1"), ("bad", "select * from no_such_table")):
        run = make_run(world, name, sql, django_capture_on_commit_callbacks)
        phase_execute(phase_id=run.phases.get().pk, worker="w")
    prometheus.wait_for('sum(controlroom_runs_total{job_slug="good", state="succeeded"})', 2)
    prometheus.wait_for('sum(controlroom_runs_total{job_slug="bad", state="failed"})', 1)
    prometheus.wait_for('sum(controlroom_phases_total{kind="sql", state="failed"})', 1)
    prometheus.wait_for('sum(controlroom_phase_duration_seconds_count{kind="sql"})', 3)

    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    flaky = make_run(world, "flaky", "select 1", django_capture_on_commit_callbacks, retries=1)
    prometheus.wait_for('sum(controlroom_queue_depth{kind="phase:sql"})', 1)
    phase, _ = phase_claim_next(workspace=world.workspace, worker="vanishing", kinds=["sql"])
    Phase.objects.filter(pk=phase.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert phases_reap() == [flaky.pk]
    prometheus.wait_for("sum(controlroom_lease_expiries_total)", 1)
    prometheus.wait_for('sum(controlroom_phase_retries_total{reason="lease_expired"})', 1)
    phase_execute(phase_id=phase.pk, worker="w2")  # the requeued attempt runs and succeeds
    prometheus.wait_for('sum(controlroom_runs_total{job_slug="flaky", state="succeeded"})', 1)
    prometheus.wait_for('sum(controlroom_queue_depth{kind="phase:sql"})', 0)

    beat_once("celery@prom-test", "default,sql")
    prometheus.wait_for('controlroom_celery_worker_up{worker="celery@prom-test"}', 1)
    assert prometheus.value('sum(controlroom_http_request_duration_seconds_count{view="metrics"})') >= 1


def test_every_dashboard_query_runs_and_names_exported_metrics(world, prometheus, live_server):
    scrape = requests.get(f"{live_server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    exported = set()  # every sample name a family may have, even one with no sample yet
    for family in text_string_to_metric_families(scrape.text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    assert "controlroom_runs_total" in exported and "controlroom_phase_duration_seconds_bucket" in exported
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 15
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m")
            prometheus.query(expr)  # valid PromQL: Prometheus accepts it
            names = set(re.findall(r"\bcontrolroom_[a-z_]+", expr))
            assert names, f"panel {panel['title']!r} names no Control Room metric"
            missing = {n for n in names if n not in exported}
            assert not missing, f"panel {panel['title']!r} names metrics the server does not export: {missing}"
