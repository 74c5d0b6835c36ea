"""Run and job pages: the DAG drawing, run history filters and keyset pages, version diffs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.dag import GAP_X, NODE_W, PAD, dag_layout
from runs.models import Run
from runs.services.jobs import job_create, job_update
from runs.services.runs import run_create
from tests.test_contract import DIAMOND

pytestmark = pytest.mark.django_db


def test_dag_layout_columns_follow_dependencies(world, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=DIAMOND)
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    layout = dag_layout(list(run.phases.all()))
    column = {n.phase.name: (n.x - PAD) // (NODE_W + GAP_X) for n in layout.nodes}
    assert column == {"a": 0, "b": 1, "c": 1, "d": 2} and len(layout.edges) == 4
    assert all(e.x1 < e.x2 for e in layout.edges)  # every edge points forward
    page = world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert page.count('class="dag-node') == 4 and '<svg id="dag"' in page


def make_runs(world, count: int, django_capture_on_commit_callbacks, **fields) -> list[Run]:
    job = job_create(access=world.access("operator"), spec_text=DIAMOND.replace("diamond", f"d{Run.objects.count()}"))
    with django_capture_on_commit_callbacks(execute=False):
        runs = [run_create(access=world.access("operator"), job=job) for _ in range(count)]
    if fields:
        Run.objects.filter(pk__in=[r.pk for r in runs]).update(**fields)
    return runs


def test_run_history_filters_and_keyset_pages(world, django_capture_on_commit_callbacks,
                                              django_assert_max_num_queries):
    old = make_runs(world, 3, django_capture_on_commit_callbacks, status="failed", trigger="api",
                    created_at=timezone.now() - timedelta(days=10))
    new = make_runs(world, 60, django_capture_on_commit_callbacks)
    client = world.client("viewer")
    client.get("/w/acme/runs/")
    with django_assert_max_num_queries(8):
        first = client.get("/w/acme/runs/").content.decode()
    assert first.count('class="run-row"') == 50 and f"before={new[10].pk}" in first
    second = client.get(f"/w/acme/runs/?before={new[10].pk}").content.decode()
    assert second.count('class="run-row"') == 13  # 10 newer-than-cursor runs excluded, 3 old ones included
    failed = client.get("/w/acme/runs/?status=failed&trigger=api").content.decode()
    assert failed.count('class="run-row"') == 3
    job_slug = old[0].job.slug
    assert client.get(f"/w/acme/runs/?job={job_slug}").content.decode().count('class="run-row"') == 3
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert client.get(f"/w/acme/runs/?from={since}").content.decode().count('class="run-row"') == 50
    assert client.get("/w/acme/runs/?environment=prod").content.decode().count('class="run-row"') == 0
    bad = client.get("/w/acme/runs/?from=yesterday&before=abc")
    assert bad.status_code == 200 and "&#x27;from&#x27; must be a date as YYYY-MM-DD" in bad.content.decode()
    assert "&#x27;before&#x27; must be a run number" in bad.content.decode()
    assert bad.content.decode().count('class="run-row"') == 50  # the bad filters are dropped, not applied
    worse = client.get("/w/acme/runs/", {"status": "exploded", "trigger": "cron", "environment": "qa",
                                         "job": "../x", "before": str(10**40)}).content.decode()
    message = worse[worse.index('id="filter-error"'):].split("</li>")[0]
    for key in ("status", "trigger", "environment", "job", "before"):
        assert f"&#x27;{key}&#x27; must be" in message, key
    assert f'<a href="/w/acme/jobs/{job_slug}/">{job_slug}</a>' in failed  # the job column links to the job


def test_version_diff_page(world):
    job = job_create(access=world.access("operator"), spec_text=DIAMOND)
    job_update(access=world.access("operator"), job=job, spec_text=DIAMOND.replace("seconds: 0}}}\n  - {name: b",
                                                                                    "seconds: 1}}}\n  - {name: b"))
    page = world.client("viewer").get("/w/acme/jobs/diamond/versions/2/").content.decode()
    assert "-  - {name: a, kind: python, config: {callable: sleep, args: {seconds: 0}}}" in page
    assert "+  - {name: a, kind: python, config: {callable: sleep, args: {seconds: 1}}}" in page
    assert world.client("viewer").get("/w/acme/jobs/diamond/versions/9/").status_code == 404


def test_404_and_403_pages_keep_the_navigation(world, demo_job):
    viewer = world.client("viewer")
    missing = viewer.get("/w/acme/runs/999999/")
    page = missing.content.decode()
    assert missing.status_code == 404 and "No run 999999 in this workspace." in page
    assert 'href="/w/acme/jobs/"' in page and 'href="/w/acme/sql/"' in page and "viewer · viewer" in page
    denied = viewer.get("/w/acme/jobs/new/")
    page = denied.content.decode()
    assert denied.status_code == 403 and "needs the operator role" in page and 'href="/w/acme/runs/"' in page
    nowhere = viewer.get("/w/acme/no/such/page/")
    assert nowhere.status_code == 404 and 'href="/w/acme/jobs/"' in nowhere.content.decode()
    # Another workspace's 404 keeps only the frame: nothing of that workspace shows.
    foreign = viewer.get("/w/other/jobs/")
    assert foreign.status_code == 404 and "/w/other/" not in foreign.content.decode()
    assert 'href="/accounts/logout/"' in foreign.content.decode() or "Sign out" in foreign.content.decode()
