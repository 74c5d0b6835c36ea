"""The git push webhook: verified, recorded and answered at once; synced on a worker; a replayed
delivery ignored (repository and signed posts from tests/git_fixtures.py)."""

from __future__ import annotations

import json

import pytest

from controlroom.models import AuditEvent
from runs.git_tasks import git_delivery_process
from runs.models import GitDelivery, Job, Run
from tests.git_fixtures import HOOK, INVALID, SECRET, SECRET_VAR, VALID, github_post

pytestmark = pytest.mark.django_db


@pytest.fixture
def push(client, django_capture_on_commit_callbacks, eager_celery):
    """Send a signed GitHub push, then let the worker do its part: the on_commit hooks of the
    request run after it answered, and eager Celery runs the task they enqueue in-process."""

    def send(body: dict, *, delivery: str | None = None, **kwargs):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            response = github_post(client, body, delivery=delivery, **kwargs)
        for callback in queued:
            callback()
        return response

    return send


def delivery_of(response) -> GitDelivery:
    return GitDelivery.objects.get(delivery_id=response.json()["delivery"])


def test_the_request_answers_202_before_the_sync_which_runs_on_a_worker(
        world, repo, source, client, django_capture_on_commit_callbacks, eager_celery):
    sha = repo.commit({"jobs/hello.yaml": VALID})
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = github_post(client, {"ref": "refs/heads/main", "after": sha}, delivery="d-1")
    assert response.status_code == 202, response.content
    assert response.json() == {"delivery": "d-1", "status": "queued"}
    # The request did not clone or import anything: it only recorded the delivery.
    delivery = GitDelivery.objects.get()
    assert (delivery.delivery_id, delivery.sha, delivery.status, delivery.source_id) == ("d-1", sha, "queued",
                                                                                        source.pk)
    assert not Job.objects.exists() and not AuditEvent.objects.filter(action="git.sync").exists()
    for callback in queued:  # the transaction commits: the task is enqueued; eager Celery runs it here
        callback()
    delivery.refresh_from_db()
    assert delivery.status == "synced"
    assert delivery.result["jobs"] == [{"job": "hello", "path": "jobs/hello.yaml", "version": 1,
                                        "outcome": "created"}]
    assert Job.objects.get().current_version.git_sha == sha
    source.refresh_from_db()
    assert source.last_synced_sha == sha
    assert git_delivery_process(delivery.pk) is None  # a repeated message finds it done: nothing runs twice


def test_a_replayed_delivery_is_ignored(world, repo, source, client, push):
    source.run_on_push = True
    source.save()
    sha = repo.commit({"jobs/hello.yaml": VALID})
    first = push({"ref": "refs/heads/main", "after": sha}, delivery="d-7")
    assert first.status_code == 202 and delivery_of(first).status == "synced"
    replay = push({"ref": "refs/heads/main", "after": sha}, delivery="d-7")
    assert replay.status_code == 200 and replay.json() == {"delivery": "d-7", "status": "duplicate"}
    assert GitDelivery.objects.count() == 1 and Run.objects.count() == 1
    assert AuditEvent.objects.filter(action="git.sync").count() == 1  # no second sync
    # Without a delivery header the body's sha256 is the id: the same body again is a replay.
    body = {"ref": "refs/heads/main", "after": sha, "n": 2}
    assert push(body).status_code == 202
    again = push(body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert GitDelivery.objects.count() == 2


def test_github_push_syncs_and_runs_changed_jobs(world, repo, source, push):
    source.run_on_push = True
    source.save()
    sha = repo.commit({"jobs/hello.yaml": VALID, "jobs/broken.yaml": INVALID})
    response = push({"ref": "refs/heads/main", "after": sha}, delivery="a")
    assert response.status_code == 202, response.content
    result = delivery_of(response).result
    run = Run.objects.get()
    assert result["sha"] == sha and result["runs"] == [run.pk]
    assert result["jobs"] == [{"job": "hello", "path": "jobs/hello.yaml", "version": 1, "outcome": "created"}]
    assert result["errors"][0]["file"] == "jobs/broken.yaml" and "line 4" in result["errors"][0]["errors"][0]
    assert (run.job.slug, run.git_sha, run.trigger, run.environment.name) == ("hello", sha, Run.Trigger.GIT, "dev")
    # The same commit pushed again (a new delivery, another body) changes nothing and starts nothing.
    again = push({"ref": "refs/heads/main", "after": sha, "forced": True}, delivery="b")
    assert delivery_of(again).result["runs"] == [] and Run.objects.count() == 1


def test_github_push_without_run_on_push_only_syncs(world, repo, source, push):
    sha = repo.commit({"jobs/hello.yaml": VALID})
    response = push({"ref": "refs/heads/main", "after": sha})
    assert response.status_code == 202 and delivery_of(response).result["runs"] == []
    assert Job.objects.get().current_version.git_sha == sha and not Run.objects.exists()


def test_gitlab_token_shape_syncs_with_its_event_uuid(world, repo, source, client, django_capture_on_commit_callbacks,
                                                      eager_celery):
    sha = repo.commit({"jobs/hello.yaml": VALID})
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(HOOK, json.dumps({"ref": "refs/heads/main", "checkout_sha": sha}),
                               content_type="application/json", HTTP_X_GITLAB_TOKEN=SECRET,
                               HTTP_X_GITLAB_EVENT="Push Hook", HTTP_X_GITLAB_EVENT_UUID="gl-42")
    assert response.status_code == 202 and response.json()["delivery"] == "gl-42"
    assert delivery_of(response).result["pushed_sha"] == sha
    assert Job.objects.get().current_version.git_sha == sha


@pytest.mark.parametrize("headers", [
    {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + "0" * 64, "HTTP_X_GITHUB_EVENT": "push"},
    {"HTTP_X_GITHUB_EVENT": "push"},
    {"HTTP_X_GITLAB_TOKEN": "wrong", "HTTP_X_GITLAB_EVENT": "Push Hook"},
    {"HTTP_X_GITLAB_TOKEN": "", "HTTP_X_GITLAB_EVENT": "Push Hook"},
])
def test_bad_or_missing_signature_is_401_and_records_nothing(world, repo, source, client, headers):
    repo.commit({"jobs/hello.yaml": VALID})
    response = client.post(HOOK, json.dumps({"ref": "refs/heads/main"}), content_type="application/json",
                           HTTP_X_GITHUB_DELIVERY="d-1", **headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "bad_signature"
    assert not GitDelivery.objects.exists() and not Job.objects.exists()
    assert github_post(client, {"ref": "refs/heads/main"}, secret="guess").status_code == 401
    assert not GitDelivery.objects.exists()


def test_other_branches_and_events_are_recorded_as_ignored(world, repo, source, push):
    repo.commit({"jobs/hello.yaml": VALID})
    other = push({"ref": "refs/heads/feature", "after": "a" * 40})
    assert other.status_code == 202 and other.json()["status"] == "ignored"
    assert "refs/heads/feature" in other.json()["ignored"]
    ping = push({"zen": "hi"}, event="ping")
    assert ping.status_code == 202 and "not a push" in ping.json()["ignored"]
    deleted = push({"ref": "refs/heads/main", "after": "0" * 40})
    assert deleted.status_code == 202 and "deleted" in deleted.json()["ignored"]
    odd = push({"ref": "refs/heads/main", "after": "x" * 41})
    assert odd.status_code == 202 and "40 hex digits" in odd.json()["ignored"]
    assert list(GitDelivery.objects.values_list("status", flat=True)) == ["ignored"] * 4
    assert not Job.objects.exists() and not AuditEvent.objects.filter(action="git.sync").exists()


def test_webhook_errors_share_the_api_shape(world, source, client, monkeypatch):
    assert client.get(HOOK).json()["error"]["code"] == "method_not_allowed"
    missing = client.post("/hooks/git/other", b"{}", content_type="application/json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    monkeypatch.delenv(SECRET_VAR)
    unreadable = github_post(client, {"ref": "refs/heads/main"})
    assert unreadable.status_code == 503 and set(unreadable.json()["error"]) == {"code", "message"}
    assert SECRET_VAR not in unreadable.content.decode()


def test_a_webhook_secret_outside_the_prefix_is_not_read(world, source, client, monkeypatch):
    """A reference to any other variable (here the database URL's neighbour) answers 503."""
    monkeypatch.setenv("HOOK_SECRET_ELSEWHERE", SECRET)
    source.webhook_secret.locator = "HOOK_SECRET_ELSEWHERE"
    source.webhook_secret.save()
    response = github_post(client, {"ref": "refs/heads/main"})
    assert response.status_code == 503 and "HOOK_SECRET_ELSEWHERE" not in response.content.decode()
    assert not GitDelivery.objects.exists()


def test_a_refused_url_is_a_failed_delivery(world, source, push):
    source.url = "ext::sh -c true"
    source.save()
    response = push({"ref": "refs/heads/main", "after": "b" * 40})
    assert response.status_code == 202
    delivery = delivery_of(response)
    assert delivery.status == "failed" and delivery.result["error"].startswith("This git URL is refused")
    source.refresh_from_db()
    assert source.last_error == delivery.result["error"]


def test_pushes_sync_their_own_commit_and_a_late_older_push_is_ignored(world, repo, source, push):
    """Webhooks can arrive after later pushes. Each runs at its own commit, not at the branch
    tip; one delivered after a newer commit was synced does not roll the job back."""
    source.run_on_push = True
    source.save()
    first = repo.commit({"jobs/hello.yaml": VALID})
    second = repo.commit({"jobs/hello.yaml": VALID.replace("first", "second")})
    early = delivery_of(push({"ref": "refs/heads/main", "after": first}, delivery="1"))
    assert early.status == "synced" and early.result["sha"] == first and not early.result["stale"]
    run = Run.objects.get(pk=early.result["runs"][0])
    assert run.git_sha == first and run.job_version.spec["description"] == "first"
    late = delivery_of(push({"ref": "refs/heads/main", "after": second}, delivery="2"))
    run = Run.objects.get(pk=late.result["runs"][0])
    assert run.git_sha == second and run.job_version.spec["description"] == "second"
    older = delivery_of(push({"ref": "refs/heads/main", "after": first, "before": second}, delivery="3"))
    assert older.status == "ignored" and older.result["stale"] and older.result["runs"] == []
    assert Job.objects.get().current_version.git_sha == second and Run.objects.count() == 2


def test_a_commit_the_repository_lacks_is_one_clear_error(world, repo, source, push):
    repo.commit({"jobs/hello.yaml": VALID})
    delivery = delivery_of(push({"ref": "refs/heads/main", "after": "ab" * 20}))
    assert delivery.status == "failed" and "cannot be fetched" in delivery.result["error"]
    assert not Job.objects.exists()


def test_a_lost_wake_up_or_a_worker_dying_mid_sync_is_recovered_by_the_reaper(
        world, repo, source, client, django_capture_on_commit_callbacks, eager_celery):
    from datetime import timedelta

    from django.utils import timezone

    from runs.services.gitdeliveries import git_deliveries_stalled
    from runs.services.gitdeliveries import git_delivery_process as process_service
    from runs.tasks import reap_expired_leases

    sha = repo.commit({"jobs/hello.yaml": VALID})
    with django_capture_on_commit_callbacks(execute=False):  # the wake-up message is lost
        github_post(client, {"ref": "refs/heads/main", "after": sha}, delivery="lost")
    assert git_deliveries_stalled() == []  # not yet: it may still be in the queue
    GitDelivery.objects.update(received_at=timezone.now() - timedelta(minutes=2))
    reap_expired_leases()  # beat: wakes a worker for it (eager here)
    delivery = GitDelivery.objects.get()
    assert delivery.status == "synced" and Job.objects.get().current_version.git_sha == sha
    # A worker that claimed a delivery and died: after the grace time it is queued and synced again.
    GitDelivery.objects.filter(pk=delivery.pk).update(status="syncing", claimed_at=timezone.now())
    assert git_deliveries_stalled() == [] and GitDelivery.objects.get().status == "syncing"
    GitDelivery.objects.filter(pk=delivery.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    assert git_deliveries_stalled() == [delivery.pk]
    assert git_deliveries_stalled() == []  # woken once per minute, not at every beat
    again = process_service(delivery_pk=delivery.pk)
    assert again is not None and again.status == "synced" and again.claimed_at is not None


def test_a_captured_delivery_replayed_under_a_new_id_is_a_duplicate(world, repo, source, push):
    """The signature covers the body, not the delivery id header: a replay is known by its body."""
    sha = repo.commit({"jobs/hello.yaml": VALID})
    body = {"ref": "refs/heads/main", "after": sha}
    assert push(body, delivery="d-1").status_code == 202
    replayed = push(body, delivery="d-1-replayed")
    assert replayed.status_code == 200 and replayed.json()["status"] == "duplicate"
    assert GitDelivery.objects.count() == 1 and Job.objects.get().versions.count() == 1


def test_specs_are_read_before_the_import_takes_its_lock(world, repo, source, monkeypatch):
    from django.db import connection

    from runs.services import gitsync

    real, seen, depth = gitsync._parse_file, [], len(connection.atomic_blocks)  # the test's own transaction

    def parse(text):
        seen.append(len(connection.atomic_blocks) > depth)
        return real(text)

    monkeypatch.setattr(gitsync, "_parse_file", parse)
    repo.commit({"jobs/hello.yaml": VALID, "jobs/broken.yml": INVALID})
    result = gitsync.git_sync(access=world.access("admin"), source=source)
    assert seen == [False, False] and [j.slug for j in result.jobs] == ["hello"] and len(result.errors) == 1
