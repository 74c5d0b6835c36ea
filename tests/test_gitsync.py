"""Git sync against a real local repository made with the git CLI, and the push webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied

from connections.models import SecretRef
from controlroom.models import AuditEvent
from controlroom.services import ServiceError
from runs.models import GitSource, Job, JobVersion, Run
from runs.services.gitsync import git_sync

pytestmark = pytest.mark.django_db
SECRET = "s3cret-webhook-value"
HOOK = "/hooks/git/acme"

VALID = """name: hello
description: first
phases:
  - name: one
    kind: sql
    config:
      sql: "SELECT 1"
"""
INVALID = """name: broken
phases:
  - name: one
    kind: spark
"""


class Repo:
    """A git repository in tmp_path, driven by the git CLI with no user or system config."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
        return subprocess.run(
            ["git", "-c", "user.email=ci@example.org", "-c", "user.name=CI", "-c", "commit.gpgsign=false", *args],
            cwd=self.path, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")

    @property
    def url(self) -> str:
        return self.path.as_uri()


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo(tmp_path / "origin")


@pytest.fixture
def source(world, repo, monkeypatch) -> GitSource:
    monkeypatch.setenv("CR_TEST_HOOK_SECRET", SECRET)
    ref = SecretRef.objects.create(workspace=world.workspace, name="git-hook", source=SecretRef.Source.ENV,
                                   locator="CR_TEST_HOOK_SECRET")
    return GitSource.objects.create(workspace=world.workspace, url=repo.url, branch="main", folder="jobs",
                                    webhook_secret=ref)


def github_post(client, body: dict, *, secret: str = SECRET, event: str = "push"):
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(HOOK, raw, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=signature,
                       HTTP_X_GITHUB_EVENT=event)


def test_sync_creates_valid_jobs_and_reports_invalid_files_with_lines(world, repo, source):
    sha = repo.commit({"jobs/hello.yaml": VALID, "jobs/broken.yml": INVALID, "jobs/README.md": "not a spec",
                       "elsewhere.yaml": VALID.replace("hello", "outside")})
    result = git_sync(access=world.access("admin"), source=source)
    assert result.sha == sha
    assert [(j.slug, j.version, j.outcome) for j in result.jobs] == [("hello", 1, "created")]
    assert [(e.path, e.errors) for e in result.errors] == [
        ("jobs/broken.yml", ["line 4, phases[0].kind: unknown phase kind 'spark'; known kinds: sql, python"])]
    version = Job.objects.get(slug="hello").current_version
    assert (version.number, version.git_sha, version.git_repo, version.git_path) == (1, sha, repo.url,
                                                                                     "jobs/hello.yaml")
    assert not Job.objects.filter(slug__in=["broken", "outside"]).exists()  # nothing half-made, folder respected
    source.refresh_from_db()
    assert source.last_synced_sha == sha and source.last_synced_at is not None
    assert source.last_error.startswith("jobs/broken.yml: line 4")
    event = AuditEvent.objects.get(action="git.sync")
    assert event.after == {"repo": repo.url, "branch": "main", "sha": sha, "created": 1, "updated": 0,
                                "unchanged": 0, "failed": 1}
    assert event.actor_user_id == world.users["admin"].pk


def test_changed_spec_adds_a_version_and_resync_adds_nothing(world, repo, source):
    repo.commit({"jobs/hello.yaml": VALID})
    git_sync(access=world.access("admin"), source=source)
    sha2 = repo.commit({"jobs/hello.yaml": VALID.replace("first", "second")})
    result = git_sync(access=world.access("admin"), source=source)
    assert [(j.slug, j.version, j.outcome) for j in result.jobs] == [("hello", 2, "updated")]
    job = Job.objects.get(slug="hello")
    assert (job.current_version.number, job.current_version.git_sha, job.description) == (2, sha2, "second")
    again = git_sync(access=world.access("admin"), source=source)
    assert [j.outcome for j in again.jobs] == ["unchanged"] and JobVersion.objects.count() == 2
    # A commit that leaves this spec alone does not version it either.
    repo.commit({"jobs/other.yaml": VALID.replace("hello", "other")})
    third = git_sync(access=world.access("admin"), source=source)
    assert {(j.slug, j.outcome) for j in third.jobs} == {("hello", "unchanged"), ("other", "created")}
    assert job.versions.count() == 2


def test_two_files_naming_the_same_job_keep_the_first(world, repo, source):
    repo.commit({"jobs/a.yaml": VALID, "jobs/b.yaml": VALID.replace("first", "copy")})
    result = git_sync(access=world.access("admin"), source=source)
    assert [(j.path, j.outcome) for j in result.jobs] == [("jobs/a.yaml", "created")]
    assert [(e.path, e.errors) for e in result.errors] == [("jobs/b.yaml",
                                                            ["job 'hello' is already defined by jobs/a.yaml"])]
    assert JobVersion.objects.count() == 1


def test_symlinks_and_folders_outside_the_repository_are_not_read(world, repo, source, tmp_path):
    outside = tmp_path / "server-file.yaml"
    outside.write_text(VALID.replace("hello", "leaked"))
    (repo.path / "jobs").mkdir()
    (repo.path / "jobs" / "leak.yaml").symlink_to(outside)
    repo.commit({"jobs/hello.yaml": VALID})
    result = git_sync(access=world.access("admin"), source=source)
    assert [e.path for e in result.errors] == ["jobs/leak.yaml"] and not Job.objects.filter(slug="leaked").exists()
    source.folder = "../.."
    with pytest.raises(ServiceError, match="outside the repository"):
        git_sync(access=world.access("admin"), source=source)


@pytest.mark.parametrize("url", ["ext::sh -c touch% {marker}", "EXT::sh -c touch% {marker}",
                                 "--upload-pack=touch {marker}"])
def test_command_running_urls_are_refused(world, source, tmp_path, url):
    marker = tmp_path / "pwned"
    source.url = url.format(marker=marker)
    with pytest.raises(ServiceError, match=r"refused|must not start with '-'"):
        git_sync(access=world.access("admin"), source=source)
    assert not marker.exists()
    source.refresh_from_db()
    assert "refused" in source.last_error or "must not start" in source.last_error
    assert AuditEvent.objects.filter(action="git.sync", after__error=source.last_error).exists()


def test_unreachable_repository_records_one_clear_error(world, source, tmp_path):
    source.url = (tmp_path / "missing").as_uri()
    with pytest.raises(ServiceError, match="git clone failed"):
        git_sync(access=world.access("admin"), source=source)
    source.refresh_from_db()
    assert source.last_error.startswith("git clone failed") and source.last_synced_sha == ""


@pytest.mark.parametrize("persona", ["operator", "viewer"])
def test_only_admins_sync(world, repo, source, persona):
    repo.commit({"jobs/hello.yaml": VALID})
    with pytest.raises(PermissionDenied):
        git_sync(access=world.access(persona), source=source)
    assert not Job.objects.exists()


def test_github_push_syncs_and_runs_changed_jobs(world, repo, source, client, django_capture_on_commit_callbacks):
    source.run_on_push = True
    source.save()
    sha = repo.commit({"jobs/hello.yaml": VALID, "jobs/broken.yaml": INVALID})
    with django_capture_on_commit_callbacks(execute=False):
        response = github_post(client, {"ref": "refs/heads/main", "after": sha})
    assert response.status_code == 200, response.content
    body = response.json()
    run = Run.objects.get()
    assert body["sha"] == sha and body["runs"] == [run.pk]
    assert body["jobs"] == [{"job": "hello", "path": "jobs/hello.yaml", "version": 1, "outcome": "created"}]
    assert body["errors"][0]["file"] == "jobs/broken.yaml" and "line 4" in body["errors"][0]["errors"][0]
    assert (run.job.slug, run.git_sha, run.trigger, run.environment.name) == ("hello", sha, Run.Trigger.GIT, "dev")
    # The same push delivered again changes nothing and starts nothing.
    with django_capture_on_commit_callbacks(execute=False):
        again = github_post(client, {"ref": "refs/heads/main", "after": sha})
    assert again.json()["runs"] == [] and Run.objects.count() == 1


def test_github_push_without_run_on_push_only_syncs(world, repo, source, client):
    sha = repo.commit({"jobs/hello.yaml": VALID})
    response = github_post(client, {"ref": "refs/heads/main", "after": sha})
    assert response.status_code == 200 and response.json()["runs"] == []
    assert Job.objects.get().current_version.git_sha == sha and not Run.objects.exists()


@pytest.mark.parametrize("headers", [
    {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + "0" * 64, "HTTP_X_GITHUB_EVENT": "push"},
    {"HTTP_X_GITHUB_EVENT": "push"},
    {"HTTP_X_GITLAB_TOKEN": "wrong", "HTTP_X_GITLAB_EVENT": "Push Hook"},
    {"HTTP_X_GITLAB_TOKEN": "", "HTTP_X_GITLAB_EVENT": "Push Hook"},
])
def test_bad_or_missing_signature_is_401_and_changes_nothing(world, repo, source, client, headers):
    repo.commit({"jobs/hello.yaml": VALID})
    response = client.post(HOOK, json.dumps({"ref": "refs/heads/main"}), content_type="application/json", **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"
    assert not Job.objects.exists() and not AuditEvent.objects.filter(action="git.sync").exists()
    source.refresh_from_db()
    assert source.last_synced_at is None


def test_signature_with_another_secret_is_refused(world, repo, source, client):
    repo.commit({"jobs/hello.yaml": VALID})
    assert github_post(client, {"ref": "refs/heads/main"}, secret="guess").status_code == 401
    assert not Job.objects.exists()


def test_gitlab_token_shape_syncs(world, repo, source, client):
    sha = repo.commit({"jobs/hello.yaml": VALID})
    response = client.post(HOOK, json.dumps({"ref": "refs/heads/main", "checkout_sha": sha}),
                           content_type="application/json", HTTP_X_GITLAB_TOKEN=SECRET,
                           HTTP_X_GITLAB_EVENT="Push Hook")
    assert response.status_code == 200 and response.json()["pushed_sha"] == sha
    assert Job.objects.get().current_version.git_sha == sha


def test_other_branches_and_events_are_ignored(world, repo, source, client):
    repo.commit({"jobs/hello.yaml": VALID})
    other = github_post(client, {"ref": "refs/heads/feature", "after": "a" * 40})
    assert other.status_code == 202 and "refs/heads/feature" in other.json()["ignored"]
    ping = github_post(client, {"zen": "hi"}, event="ping")
    assert ping.status_code == 202 and "not a push" in ping.json()["ignored"]
    deleted = github_post(client, {"ref": "refs/heads/main", "after": "0" * 40})
    assert deleted.status_code == 202 and "deleted" in deleted.json()["ignored"]
    assert not Job.objects.exists()


def test_webhook_errors_share_the_api_shape(world, source, client, monkeypatch):
    assert client.get(HOOK).json()["error"]["code"] == "method_not_allowed"
    missing = client.post("/hooks/git/other", b"{}", content_type="application/json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    monkeypatch.delenv("CR_TEST_HOOK_SECRET")
    unreadable = github_post(client, {"ref": "refs/heads/main"})
    assert unreadable.status_code == 503 and set(unreadable.json()["error"]) == {"code", "message"}


def test_webhook_reports_a_refused_url_as_a_sync_error(world, source, client):
    source.url = "ext::sh -c true"
    source.save()
    response = github_post(client, {"ref": "refs/heads/main", "after": "b" * 40})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "sync_failed" and "ext::" in response.json()["error"]["message"]


def test_yaml_alias_bombs_are_refused_before_parsing(world, repo, source):
    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = ("name: bomb\nphases:\n  - name: p\n    kind: python\n    config:\n      callable: check_table\n"
            "      args:\n" + "".join(f"        {line}\n" for line in levels))
    repo.commit({"jobs/bomb.yaml": bomb, "jobs/hello.yaml": VALID})
    result = git_sync(access=world.access("admin"), source=source)
    assert [(e.path, e.errors) for e in result.errors] == [
        ("jobs/bomb.yaml", ["line 9: YAML aliases (*a0) are not accepted"])]
    assert [j.slug for j in result.jobs] == ["hello"]


def test_push_syncs_and_runs_the_pushed_commit_and_ignores_late_older_pushes(
        world, repo, source, client, django_capture_on_commit_callbacks):
    """Webhooks can arrive after later pushes. Each runs at its own commit, not at the branch
    tip; one delivered after a newer commit was synced does not roll the job back."""
    source.run_on_push = True
    source.save()
    first = repo.commit({"jobs/hello.yaml": VALID})
    second = repo.commit({"jobs/hello.yaml": VALID.replace("first", "second")})
    with django_capture_on_commit_callbacks(execute=False):
        early = github_post(client, {"ref": "refs/heads/main", "after": first})
    assert early.status_code == 200, early.content
    assert early.json()["sha"] == first and not early.json()["stale"]
    run = Run.objects.get(pk=early.json()["runs"][0])
    assert run.git_sha == first and run.job_version.spec["description"] == "first"
    with django_capture_on_commit_callbacks(execute=False):
        late = github_post(client, {"ref": "refs/heads/main", "after": second})
    run = Run.objects.get(pk=late.json()["runs"][0])
    assert run.git_sha == second and run.job_version.spec["description"] == "second"
    with django_capture_on_commit_callbacks(execute=False):
        replay = github_post(client, {"ref": "refs/heads/main", "after": first})
    assert replay.status_code == 200 and replay.json()["stale"] and replay.json()["runs"] == []
    assert Job.objects.get().current_version.git_sha == second and Run.objects.count() == 2


def test_push_naming_a_commit_the_repository_lacks_is_one_clear_error(world, repo, source, client):
    repo.commit({"jobs/hello.yaml": VALID})
    response = github_post(client, {"ref": "refs/heads/main", "after": "ab" * 20})
    assert response.status_code in (422, 502), response.content
    assert "cannot be fetched" in response.json()["error"]["message"]
    assert not Job.objects.exists()
