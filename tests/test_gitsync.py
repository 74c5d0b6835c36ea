"""Git sync against a real local repository made with the git CLI, and which git URLs a
workspace may name (tests/git_fixtures.py has the repository; the webhook is in
test_git_webhooks.py)."""

from __future__ import annotations

import os

import pytest
from django.core.exceptions import PermissionDenied

from connections.models import SecretRef
from controlroom.models import AuditEvent
from controlroom.services import ServiceError
from runs import admin as runs_admin
from runs.git_urls import git_url_check
from runs.kinds import KINDS
from runs.models import GitSource, Job, JobVersion
from runs.services import gitsync
from runs.services.gitsources import git_source_set
from runs.services.gitsync import git_sync
from tests.conftest import REPO
from tests.git_fixtures import INVALID, VALID

pytestmark = pytest.mark.django_db


def test_sync_creates_valid_jobs_and_reports_invalid_files_with_lines(world, repo, source):
    sha = repo.commit({"jobs/hello.yaml": VALID, "jobs/broken.yml": INVALID, "jobs/README.md": "not a spec",
                       "elsewhere.yaml": VALID.replace("hello", "outside")})
    result = git_sync(access=world.access("admin"), source=source)
    assert result.sha == sha
    assert [(j.slug, j.version, j.outcome) for j in result.jobs] == [("hello", 1, "created")]
    assert [(e.path, e.errors) for e in result.errors] == [
        ("jobs/broken.yml", ["line 4, phases[0].kind: unknown phase kind 'flink'; known kinds: " + ", ".join(KINDS)])]
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



ACCEPTED = ["https://github.com/acme/jobs.git", "https://ci:tok3n@gitlab.example.org:8443/acme/jobs",
            "ssh://git@github.com/acme/jobs.git", "ssh://git@[2001:db8::1]:2222/srv/jobs",
            "git@github.com:acme/jobs.git", "deploy@git.example.org:~/jobs"]
ALWAYS_REFUSED = [
    "ext::sh -c touch% {marker}", "EXT::sh -c touch% {marker}", "ext::touch {marker}", "fd::3",
    "foo::bar", "https::github.com/acme/jobs", "--upload-pack=touch {marker}", "-oProxyCommand=touch {marker}",
    "ssh://-oProxyCommand=touch%20{marker}/x", "http://github.com/acme/jobs.git", "git://github.com/acme/jobs",
    "{origin}", "./origin", "~/origin", "github.com:acme/jobs", "HTTPS://github.com/acme/jobs",
    "https://github.com/acme/jobs\nprotocol=file", "git+ssh://git@github.com/acme/jobs",
]


def test_git_url_check_accepts_https_ssh_and_scp_like_urls_only(settings):
    settings.GIT_ALLOW_FILE_PROTOCOL = False
    for url in ACCEPTED:
        assert git_url_check(f"  {url} ") == url
    for url in [*ALWAYS_REFUSED, "file:///srv/repo"]:
        with pytest.raises(ServiceError, match=r"^This git URL is refused"):
            git_url_check(url.format(marker="/tmp/x", origin="/srv/repo"))
    settings.GIT_ALLOW_FILE_PROTOCOL = True
    assert git_url_check("file:///srv/repo") == "file:///srv/repo"
    with pytest.raises(ServiceError, match="refused"):
        git_url_check("file://other-host/srv/repo")


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_other_urls_are_refused_before_git_runs_even_with_file_allowed(world, source, repo, tmp_path, url):
    """Bare paths, transport::address, clear-text transports and option-like URLs never reach git."""
    marker = tmp_path / "pwned"
    source.url = url.format(marker=marker, origin=repo.path)
    with pytest.raises(ServiceError, match=r"^This git URL is refused: use https://host/path"):
        git_sync(access=world.access("admin"), source=source)
    assert not marker.exists() and not Job.objects.exists()
    source.refresh_from_db()
    assert source.last_error.startswith("This git URL is refused")
    assert AuditEvent.objects.filter(action="git.sync", after__error=source.last_error).exists()


def test_file_urls_need_the_setting(world, repo, source, settings):
    repo.commit({"jobs/hello.yaml": VALID})
    settings.GIT_ALLOW_FILE_PROTOCOL = False
    with pytest.raises(ServiceError, match=r"refused.*file:// is off on this server"):
        git_sync(access=world.access("admin"), source=source)
    assert not Job.objects.exists()
    settings.GIT_ALLOW_FILE_PROTOCOL = True
    assert [j.slug for j in git_sync(access=world.access("admin"), source=source).jobs] == ["hello"]


@pytest.mark.parametrize("kind", ["file-url", "bare-path"])
def test_git_itself_refuses_local_repositories_when_our_check_is_bypassed(world, repo, source, settings,
                                                                          monkeypatch, kind):
    """GIT_ALLOW_PROTOCOL is the second wall: with file:// off, git refuses the transport even if
    a URL got past git_url_check (and so would a redirect or a submodule)."""
    repo.commit({"jobs/hello.yaml": VALID})
    settings.GIT_ALLOW_FILE_PROTOCOL = False
    monkeypatch.setattr(gitsync, "git_url_check", lambda url: url)
    source.url = repo.url if kind == "file-url" else str(repo.path)
    with pytest.raises(ServiceError, match="transport 'file' not allowed"):
        git_sync(access=world.access("admin"), source=source)
    assert not Job.objects.exists()


def test_git_source_set_checks_the_url_and_the_secret_workspace_and_audits(world, repo, source, settings):
    settings.GIT_ALLOW_FILE_PROTOCOL = False
    admin = world.access("admin")
    with pytest.raises(ServiceError, match="refused"):
        git_source_set(access=admin, url=repo.url)
    foreign = SecretRef.objects.create(workspace=world.other, name="theirs", source="env",
                                       locator="CONTROLROOM_SECRET_THEIRS")
    with pytest.raises(ServiceError, match="another workspace"):
        git_source_set(access=admin, url="https://github.com/acme/jobs.git", webhook_secret=foreign)
    with pytest.raises(PermissionDenied):
        git_source_set(access=world.access("operator"), url="https://github.com/acme/jobs.git")
    saved = git_source_set(access=admin, url="https://ci:tok3n@github.com/acme/jobs.git", branch="prod",
                           run_on_push=True, webhook_secret=source.webhook_secret)
    assert (saved.pk, saved.branch, saved.run_on_push) == (source.pk, "prod", True)
    event = AuditEvent.objects.get(action="git_source.set")
    assert event.before["url"] == repo.url and event.after["url"] == "https://github.com/acme/jobs.git"


def test_admin_form_and_model_clean_refuse_bad_urls_and_foreign_secrets(world, source, settings):
    settings.GIT_ALLOW_FILE_PROTOCOL = False
    foreign = SecretRef.objects.create(workspace=world.other, name="theirs", source="env",
                                       locator="CONTROLROOM_SECRET_THEIRS")
    base = {"workspace": world.workspace.pk, "branch": "main", "folder": "jobs"}
    for url in ("/srv/other-workspace/repo", "foo::bar", source.url):
        form = runs_admin.GitSourceAdminForm(data={**base, "url": url}, instance=source)
        assert not form.is_valid() and "refused" in form.errors["url"][0], url
    form = runs_admin.GitSourceAdminForm(data={**base, "url": "git@github.com:acme/jobs.git",
                                               "webhook_secret": foreign.pk}, instance=source)
    assert not form.is_valid()
    assert form.errors["webhook_secret"] == ["This secret reference belongs to another workspace."]
    form = runs_admin.GitSourceAdminForm(data={**base, "url": " git@github.com:acme/jobs.git "}, instance=source)
    assert form.is_valid(), form.errors
    assert form.save().url == "git@github.com:acme/jobs.git"
    assert GitSource.objects.get().url == "git@github.com:acme/jobs.git"


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


def test_a_file_no_database_can_store_is_reported_and_the_others_imported(world, repo, source):
    dated = "name: dated\nphases:\n  - {name: a, kind: python, config: {callable: sleep, args: {2024-01-01: 1}}}\n"
    not_a_number = "name: nn\nphases:\n  - {name: a, kind: python, config: {callable: sleep, args: {seconds: .nan}}}\n"
    repo.commit({"jobs/hello.yaml": VALID, "jobs/dated.yaml": dated, "jobs/nn.yaml": not_a_number})
    result = git_sync(access=world.access("admin"), source=source)
    assert [j.slug for j in result.jobs] == ["hello"]
    assert {e.path: e.errors[0] for e in result.errors} == {
        "jobs/dated.yaml": 'line 3, phases[0].config.args: the key "2024-01-01" must be text (quote it)',
        "jobs/nn.yaml": "line 3, phases[0].config.args.seconds: nan is not a finite number"}


@pytest.mark.slow
def test_git_dies_with_the_worker_that_started_it(tmp_path):
    """git runs in its own session (so a timeout can kill its helpers), out of reach of whoever
    stops the worker; the kernel kills it when the worker process dies. Against a server that
    accepts and never answers, kill the worker with SIGKILL: git is gone within seconds."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(8)
    port = tarpit.getsockname()[1]
    code = ("import django; django.setup()\nfrom runs.services.gitsync import _git\n"
            f"_git(['ls-remote', 'ssh://git@127.0.0.1:{port}/repo.git'], cwd=None, url='x')\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlroom.settings", "CONTROLROOM_DATA_DIR": str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)

    def gits() -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"ls-remote ssh://git@127.0.0.1:{port}"], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    try:
        deadline = time.monotonic() + 30
        while not gits() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gits(), "git did not start"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 10
        while gits() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not gits(), "git outlived the worker that started it"
    finally:
        for pid in gits():
            os.kill(pid, signal.SIGKILL)
        tarpit.close()
