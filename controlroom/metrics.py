"""Prometheus metrics: what ``/metrics`` exports, and where each figure comes from.

Three sources, each chosen so that every process (gunicorn workers, Celery workers in other
containers, the standalone executor's calls) is counted exactly once, across restarts:

- **The database, read at scrape time** (``DatabaseCollector``): runs and phases by final state,
  phase and SQL durations (histograms), queue depth and the age of the oldest runnable phase,
  table freshness, Celery worker liveness (``WorkerBeat`` rows the workers write). The rows are
  the truth; no code path can forget to count (the PostgreSQL fast path of a phase's success, the
  executor API, the reaper all write rows).
- **Database counters of rare events** (``count``, ``MetricCount`` rows): lease expiries, retries
  scheduled, artifact upload failures. Written where they happen, in the same transaction.
- **This process's instruments** (prometheus-client): HTTP request latency by view, measured by
  ``HttpMetricsMiddleware`` in the web processes that also serve ``/metrics``; under gunicorn
  they share ``PROMETHEUS_MULTIPROC_DIR`` (set by the settings before prometheus-client loads).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)
PHASE_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
SQL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WORKER_STALE_S = 60.0  # a worker not seen for this long counts as down
# Rare events counted in the database: name -> help.
COUNTED = {
    "controlroom_lease_expiries": "Phase attempts whose lease expired (the reaper ended them)",
    "controlroom_phase_retries": "Phase attempts that failed and were scheduled to run again",
    "controlroom_artifact_upload_failures": "Artifact uploads the store failed to keep",
    "controlroom_openlineage_failures": "OpenLineage deliveries that failed (retry: tried again; dropped: refused)",
}

HTTP_LATENCY = Histogram("controlroom_http_request_duration_seconds", "HTTP request latency by view",
                         ["view", "method", "status"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


def count(name: str, by: float = 1.0, **labels: str) -> None:
    """Add ``by`` to a database counter (one of COUNTED), in the caller's transaction if any."""
    if name not in COUNTED:
        raise ValueError(f"not a counted metric: {name}")
    from controlroom.models import MetricCount

    key = "\t".join(f"{k}={labels[k]}" for k in sorted(labels))[:400]
    for _ in range(3):  # two first writers of one counter: the loser updates the winner's row
        if MetricCount.objects.filter(name=name, labels=key).update(value=F("value") + by):
            return
        try:
            with transaction.atomic():
                MetricCount.objects.create(name=name, labels=key, value=by)
            return
        except IntegrityError:
            continue
    log.warning("metric %s{%s} could not be counted", name, key)


def _since(field: str) -> ExpressionWrapper:
    return ExpressionWrapper(F("finished_at") - F(field), output_field=DurationField())


def _histogram(name: str, help_text: str, labelnames: list[str], rows: Iterable[dict[str, Any]],
               buckets: tuple[float, ...]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=labelnames)
    for row in rows:
        cumulative = [(str(b), row[f"le_{i}"]) for i, b in enumerate(buckets)] + [("+Inf", row["n"])]
        total = row["total"].total_seconds() if row["total"] is not None else 0.0
        family.add_metric([str(row[k]) for k in labelnames], cumulative, total)
    return family


def _bucket_counts(buckets: tuple[float, ...]) -> dict[str, Count]:
    return {f"le_{i}": Count("pk", filter=Q(d__lte=timedelta(seconds=b))) for i, b in enumerate(buckets)}


class DatabaseCollector:
    """The figures read from the database at each scrape (see the module)."""

    def collect(self) -> Iterator[Metric]:
        began = time.monotonic()
        yield from self._runs()
        yield from self._phases()
        yield from self._queues()
        yield from self._sql()
        yield from self._tables()
        yield from self._workers()
        yield from self._counted()
        spent = GaugeMetricFamily("controlroom_metrics_collect_seconds", "Time this scrape spent in the database")
        spent.add_metric([], time.monotonic() - began)
        yield spent

    def _runs(self) -> Iterator[Metric]:
        from runs.models import TERMINAL_RUN, Run

        # "job_slug", not "job": Prometheus puts its own scrape job in "job".
        labels = ["workspace", "job_slug", "environment", "state"]
        done = CounterMetricFamily("controlroom_runs", "Runs that ended, by job, environment and final state",
                                   labels=labels)
        now = GaugeMetricFamily("controlroom_runs_current", "Runs queued or running now", labels=labels)
        rows = Run.objects.values_list("workspace__slug", "job__slug", "environment__name", "status").annotate(
            n=Count("pk"))
        for workspace, job, environment, status, n in rows:
            (done if status in TERMINAL_RUN else now).add_metric([workspace, job, environment, status], n)
        yield done
        yield now

    def _phases(self) -> Iterator[Metric]:
        from runs.models import Phase, PhaseState

        final = (PhaseState.SUCCEEDED, PhaseState.FAILED, PhaseState.CANCELLED, PhaseState.SKIPPED)
        labels = ["workspace", "job_slug", "environment", "kind", "state"]
        keys = {"workspace": "run__workspace__slug", "job_slug": "run__job__slug",
                "environment": "run__environment__name", "kind": "kind", "state": "state"}
        rows = [{**row, **{k: row[v] for k, v in keys.items()}} for row in
                Phase.objects.filter(state__in=final).annotate(d=_since("started_at")).values(*keys.values())
                .annotate(n=Count("pk"), total=Sum("d"), **_bucket_counts(PHASE_BUCKETS))]
        done = CounterMetricFamily("controlroom_phases", "Phases that ended, by job, environment, kind and state",
                                   labels=labels)
        for row in rows:
            done.add_metric([str(row[k]) for k in labels], row["n"])
        yield done
        timed = [r for r in rows if r["state"] != PhaseState.SKIPPED]  # a skipped phase never ran
        yield _histogram("controlroom_phase_duration_seconds", "Duration of the last attempt of ended phases",
                         labels, timed, PHASE_BUCKETS)

    def _queues(self) -> Iterator[Metric]:
        from runs.kinds import KINDS
        from runs.models import Phase, PhaseState, Run, RunStatus
        from sqlwarehouse.models import QueryExecution

        now = timezone.now()
        depth = GaugeMetricFamily("controlroom_queue_depth", "Work waiting to start, by kind", labels=["kind"])
        oldest = GaugeMetricFamily("controlroom_queue_oldest_seconds",
                                   "Age of the oldest runnable item, by kind (0: none)", labels=["kind"])
        runnable = (Phase.objects.filter(state=PhaseState.PENDING, blocked=False, run__status=RunStatus.RUNNING)
                    .filter(Q(not_before__isnull=True) | Q(not_before__lte=now)))
        found = {kind: (n, first) for kind, n, first in runnable.values_list("kind").annotate(
            n=Count("pk"), first=Min(Coalesce("not_before", "run__started_at")))}
        for kind in sorted(set(KINDS) | set(found)):  # every kind, 0 when none waits: a series, not a gap
            n, first = found.get(kind, (0, None))
            depth.add_metric([f"phase:{kind}"], n)
            oldest.add_metric([f"phase:{kind}"], max(0.0, (now - first).total_seconds()) if first else 0.0)
        waiting = Run.objects.filter(status=RunStatus.QUEUED).aggregate(n=Count("pk"), first=Min("created_at"))
        sql = QueryExecution.objects.filter(status=QueryExecution.Status.QUEUED).aggregate(
            n=Count("pk"), first=Min("started_at"))
        for kind, agg in (("run:admission", waiting), ("sql", sql)):
            depth.add_metric([kind], agg["n"])
            oldest.add_metric([kind], max(0.0, (now - agg["first"]).total_seconds()) if agg["first"] else 0.0)
        yield depth
        yield oldest

    def _sql(self) -> Iterator[Metric]:
        from sqlwarehouse.models import QueryExecution

        ended = QueryExecution.objects.filter(status__in=QueryExecution.TERMINAL, finished_at__isnull=False)
        rows = list(ended.annotate(d=_since("started_at")).values("engine", "status").annotate(
            n=Count("pk"), total=Sum("d"), **_bucket_counts(SQL_BUCKETS)))
        done = CounterMetricFamily("controlroom_sql_executions", "SQL executions that ended, by engine and state",
                                   labels=["engine", "state"])
        for row in rows:
            done.add_metric([row["engine"], row["status"]], row["n"])
        yield done
        for row in rows:
            row["state"] = row["status"]
        yield _histogram("controlroom_sql_execution_duration_seconds", "SQL execution time, submit to end",
                         ["engine", "state"], rows, SQL_BUCKETS)

    def _tables(self) -> Iterator[Metric]:
        from django.db.models import OuterRef, Subquery

        from lakehouse.models import Table, TableVersion

        now = timezone.now()
        fresh = GaugeMetricFamily("controlroom_table_freshness_seconds",
                                  "Seconds since the last commit of each registered table",
                                  labels=["workspace", "environment", "table"])
        rows = Table.objects.values_list("workspace__slug", "environment__name", "namespace", "name").annotate(
            last=Max("versions__committed_at")).filter(last__isnull=False)
        for workspace, environment, namespace, name, last in rows:
            fresh.add_metric([workspace, environment, f"{namespace}.{name}"], (now - last).total_seconds())
        yield fresh
        behind = GaugeMetricFamily("controlroom_table_source_lag_seconds",
                                   "Seconds since the source state the table's newest version holds (tables fed "
                                   "by ingest phases; alert on the freshness SLO with it)",
                                   labels=["workspace", "environment", "table"])
        latest = TableVersion.objects.filter(table=OuterRef("pk")).order_by("-committed_at", "-id")
        rows = (Table.objects.annotate(as_of=Subquery(latest.values("source_as_of")[:1])).filter(as_of__isnull=False)
                .values_list("workspace__slug", "environment__name", "namespace", "name", "as_of"))
        for workspace, environment, namespace, name, as_of in rows:
            behind.add_metric([workspace, environment, f"{namespace}.{name}"], (now - as_of).total_seconds())
        yield behind

    def _workers(self) -> Iterator[Metric]:
        from controlroom.models import WorkerBeat

        now = timezone.now()
        up = GaugeMetricFamily("controlroom_celery_worker_up", "1 when the Celery worker was seen in the last "
                               f"{WORKER_STALE_S:.0f} s", labels=["worker", "queues"])
        seen = GaugeMetricFamily("controlroom_celery_worker_last_seen_seconds", "Seconds since the worker's last beat",
                                 labels=["worker", "queues"])
        for beat in WorkerBeat.objects.all():
            age = (now - beat.seen_at).total_seconds()
            up.add_metric([beat.hostname, beat.queues], 1.0 if age < WORKER_STALE_S else 0.0)
            seen.add_metric([beat.hostname, beat.queues], age)
        yield up
        yield seen

    def _counted(self) -> Iterator[Metric]:
        from controlroom.models import MetricCount

        rows: dict[str, list[MetricCount]] = {name: [] for name in COUNTED}
        for row in MetricCount.objects.filter(name__in=list(COUNTED)).order_by("name", "labels"):
            rows[row.name].append(row)
        for name, help_text in COUNTED.items():
            parsed = [dict(pair.split("=", 1) for pair in r.labels.split("\t") if "=" in pair) for r in rows[name]]
            labelnames = sorted({k for labels in parsed for k in labels})
            family = CounterMetricFamily(name, help_text, labels=labelnames)
            for labels, row in zip(parsed, rows[name], strict=True):
                family.add_metric([labels.get(k, "") for k in labelnames], row.value)
            yield family


def exposition() -> bytes:
    """The text of a scrape: the database's figures and this process's (or, under gunicorn, every
    web process's) instruments."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_LocalCollector())
    return generate_latest(registry)


class _LocalCollector:
    """This process's own instruments (no multiprocess folder: one process serves everything)."""

    def collect(self) -> Iterator[Metric]:
        yield from HTTP_LATENCY.collect()


class HttpMetricsMiddleware:
    """Times every request and records it by the view that answered (its URL name)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        began = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match._func_path) if match is not None else "unmatched"
        HTTP_LATENCY.labels(view=view, method=request.method if request.method in _METHODS else "other",
                            status=f"{response.status_code // 100}xx").observe(time.perf_counter() - began)
        return response


_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
