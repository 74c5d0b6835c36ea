"""Importing job specs from a workspace's git repository folder (on demand or on a signed push).

Each sync is a fresh shallow clone into a temporary directory that is removed afterwards: no
cache to lock between concurrent syncs, to go stale after a force-push, or to grow on disk;
the price is one ``--depth 1`` download of the branch tip per sync.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Role
from controlroom.services import ServiceError
from runs.git_urls import git_env, git_redact, git_url_check, git_url_display
from runs.models import GitSource, Job, Run
from runs.services.jobs import job_create, job_update
from runs.services.runs import run_create
from runs.spec import SpecError, parse_spec, spec_hash

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 120
SETPRIV = shutil.which("setpriv")  # util-linux, on every Debian
# No prompts; a server that does not answer (or goes silent) is given up on within a minute.
SSH_COMMAND = "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=3"
SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
# How much history a push sync fetches to tell a late webhook (an older commit) from a new one.
HISTORY_DEPTH = 200
MAX_SPEC_FILES = 200
MAX_SPEC_BYTES = 1_000_000
MAX_JOB_FILE_BYTES = 1_000_000  # a script a phase runs (spark), kept with the job version
SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SyncedJob:
    slug: str
    path: str
    version: int
    outcome: str  # "created", "updated" or "unchanged"


@dataclass(frozen=True)
class FileError:
    path: str
    errors: list[str]


@dataclass
class SyncResult:
    sha: str
    jobs: list[SyncedJob] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    stale: bool = False  # the pushed commit is older than the one already synced: nothing imported

    def count(self, outcome: str) -> int:
        return sum(1 for j in self.jobs if j.outcome == outcome)

    @property
    def changed(self) -> list[SyncedJob]:
        return [j for j in self.jobs if j.outcome != "unchanged"]


def _git(args: list[str], *, cwd: Path | None, url: str) -> str:
    """Run git without a shell or a terminal; its own session so a timeout kills helpers too.

    Its own session also puts it out of reach of whoever stops this worker (the supervisor
    signals the worker's process group), so git is told to die with the worker (the kernel's
    parent-death signal, set by util-linux's setpriv), and ssh gives up on a server that does
    not answer instead of hanging on after both are gone."""
    # GIT_ALLOW_PROTOCOL: git itself refuses other transports, in redirects and submodules too.
    env = {**os.environ, **git_env()}
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = SSH_COMMAND
    command = ["git", "-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never", *args]
    if SETPRIV:
        command = [SETPRIV, "--pdeathsig", "KILL", "--", *command]
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except FileNotFoundError:
        raise ServiceError("git is not installed on this server.", code="git_failed") from None
    try:
        out, err = proc.communicate(timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ServiceError(f"git {args[0]} did not finish within {GIT_TIMEOUT_S} s.", code="git_failed") from None
    if proc.returncode != 0:
        detail = git_redact(err.strip(), url)
        log.warning("git %s failed (%s): %s", args[0], proc.returncode, detail)
        last = detail.splitlines()[-1] if detail else f"exit status {proc.returncode}"
        raise ServiceError(f"git {args[0]} failed: {last}", code="git_failed")
    return out.strip()


def _spec_files(root: Path, folder: str) -> tuple[list[Path], list[FileError]]:
    base = (root / folder).resolve()
    if not base.is_relative_to(root):
        raise ServiceError(f"The folder '{folder}' points outside the repository.")
    if not base.is_dir():
        raise ServiceError(f"The folder '{folder or '.'}' does not exist in the repository.")
    files, errors = [], []
    for path in sorted(p for p in base.iterdir() if p.suffix in SPEC_SUFFIXES):
        rel = path.relative_to(root).as_posix()
        # A symlink could point at a file on this server; never read one.
        if path.is_symlink() or not path.is_file():
            errors.append(FileError(rel, ["not a regular file (symbolic links are not followed)"]))
        elif path.stat().st_size > MAX_SPEC_BYTES:
            errors.append(FileError(rel, [f"larger than {MAX_SPEC_BYTES // 1000} kB"]))
        elif len(files) >= MAX_SPEC_FILES:
            errors.append(FileError(rel, [f"skipped: a sync imports at most {MAX_SPEC_FILES} files"]))
        else:
            files.append(path)
    return files, errors


def _refuse_aliases(text: str) -> None:
    # parse_spec expands aliases when it converts to JSON, so a few hundred bytes of nested
    # aliases ("billion laughs") would exhaust memory; anyone who can push could send them.
    try:
        alias = next((t for t in yaml.scan(text, Loader=yaml.SafeLoader) if isinstance(t, yaml.AliasToken)), None)
    except yaml.YAMLError:
        return  # parse_spec reports the syntax error with its line
    if alias is not None:
        raise SpecError([f"line {alias.start_mark.line + 1}: YAML aliases (*{alias.value}) are not accepted"])


def _parse_file(text: str) -> dict:
    """The file's spec, or SpecError: the slow part of a sync (about a second a megabyte), done
    before the import takes any database lock."""
    _refuse_aliases(text)
    return parse_spec(text)


def _import_file(*, access: Access, text: str, spec: dict, rel: str, repo: str, sha: str,
                 files: dict[str, str]) -> SyncedJob:
    slug = slugify(spec["name"])
    git = {"git_repo": repo, "git_sha": sha, "git_path": rel}
    job = Job.objects.filter(workspace=access.workspace, slug=slug).select_related("current_version").first()
    if job is None:
        job_create(access=access, spec_text=text, parsed=spec, files=files, **git)
        return SyncedJob(slug, rel, 1, "created")
    current = job.current_version
    # A job whose spec (and the scripts it runs) did not change keeps the version of the commit
    # that last changed it, so a push touching one file neither versions nor runs every other job.
    if current and current.spec_hash == spec_hash(spec) and (current.git_repo, current.git_path) == (repo, rel) \
            and current.files == files:
        return SyncedJob(slug, rel, current.number, "unchanged")
    version, created = job_update(access=access, job=job, spec_text=text, parsed=spec, files=files, **git)
    return SyncedJob(slug, rel, version.number, "updated" if created else "unchanged")


def _git_ok(args: list[str], *, cwd: Path, url: str) -> bool:
    """Whether a git query command answers yes (exit status 0)."""
    try:
        _git(args, cwd=cwd, url=url)
    except ServiceError:
        return False
    return True


def _checkout_pushed(root: Path, *, url: str, branch: str, sha: str, last_synced: str) -> bool:
    """Fetch the pushed commit (with recent history of it and of the branch) into ``root`` and
    check it out. Returns False when the source already synced a newer commit that contains it:
    a webhook delivered late must not roll the jobs back."""
    _git(["init", "--quiet", str(root)], cwd=None, url=url)
    try:
        _git(["fetch", "--quiet", "--no-tags", f"--depth={HISTORY_DEPTH}", "--", url, sha,
              f"refs/heads/{branch}"], cwd=root, url=url)
    except ServiceError as exc:
        raise ServiceError(f"The pushed commit {sha[:12]} cannot be fetched from branch {branch}: {exc}",
                           code="git_failed") from None
    _git(["checkout", "--quiet", "--detach", sha], cwd=root, url=url)
    if last_synced and last_synced != sha and _git_ok(["cat-file", "-e", f"{last_synced}^{{commit}}"],
                                                      cwd=root, url=url):
        return not _git_ok(["merge-base", "--is-ancestor", sha, last_synced], cwd=root, url=url)
    return True


def git_sync(*, access: Access, source: GitSource, sha: str | None = None) -> SyncResult:
    """Clone the source's branch (or fetch the commit ``sha``, as a push webhook names it) and
    import every *.yaml/*.yml directly in its folder.

    A file whose spec is invalid is reported (path and error lines) and leaves nothing behind;
    the other files are still imported. Raises ServiceError (after recording it on the source)
    when the repository cannot be read at all."""
    access.require(Role.ADMIN)
    if source.workspace_id != access.workspace.pk:
        raise PermissionDenied("This git source belongs to another workspace.")
    try:
        url = git_url_check(source.url)
        if source.branch.startswith("-") or not source.branch.strip():
            raise ServiceError("The branch name must not be empty or start with '-'.")
        with tempfile.TemporaryDirectory(prefix="controlroom-git-") as tmp:
            root = Path(tmp).resolve() / "repo"
            if sha is None:
                _git(["clone", "--quiet", "--depth", "1", "--no-tags", "--branch", source.branch, "--", url,
                      str(root)], cwd=None, url=url)
            else:
                if not SHA_RE.fullmatch(sha):
                    raise ServiceError("The pushed commit id must be 40 hex digits.")
                if not _checkout_pushed(root, url=url, branch=source.branch, sha=sha.lower(),
                                        last_synced=source.last_synced_sha):
                    return SyncResult(sha=sha.lower(), errors=[], stale=True)
            sha = _git(["rev-parse", "HEAD"], cwd=root, url=url).lower()
            if len(sha) != 40:
                raise ServiceError("Only SHA-1 repositories are supported (commit ids of 40 hex digits).")
            files, errors = _spec_files(root, source.folder.strip().strip("/"))
            texts, parsed, job_files = {}, {}, {}
            for path in files:
                rel = path.relative_to(root).as_posix()
                text = _text_of(path)
                if text is None:
                    errors.append(FileError(rel, ["not UTF-8 text (or it contains NUL characters)"]))
                    continue
                try:  # before the import's transaction: no lock is held while YAML is read
                    spec = _parse_file(text)
                    job_files[rel] = _phase_files(root, spec, url=url)
                except SpecError as exc:
                    errors.append(FileError(rel, exc.errors))
                else:
                    texts[rel], parsed[rel] = text, spec
    except ServiceError as exc:
        _record_failure(access=access, source=source, message=str(exc))
        raise
    return _import_all(access=access, source=source, repo=git_url_display(url), sha=sha, texts=texts,
                       parsed=parsed, job_files=job_files, errors=errors)


def _text_of(path: Path) -> str | None:
    """A file's text, None when it is not UTF-8 or holds NUL (PostgreSQL text cannot)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _phase_files(root: Path, spec: dict, *, url: str) -> dict[str, str]:
    """{path: text} of the repository files the spec's phases run (``runs.executors.repo_files``),
    read from this checkout, and {"folder/": "tree <id>"} for the folders they run whole
    (``repo_trees``: a change anywhere in one makes a new job version); SpecError naming each file
    that cannot be used."""
    from runs.executors import repo_files, repo_trees

    found, problems = {}, []
    for phase in spec.get("phases", []):
        for rel in repo_trees(phase["kind"], phase.get("config") or {}):
            rel = rel.strip("/") if rel.strip("/") != "." else ""
            try:
                listed = (_git(["rev-parse", "HEAD^{tree}"], cwd=root, url=url) if not rel else
                          _git(["ls-tree", "-d", "HEAD", "--", rel], cwd=root, url=url)).split()
            except ServiceError:
                listed = []
            if rel and (len(listed) < 3 or listed[1] != "tree"):
                problems.append(f"phase '{phase['name']}': {rel} is not a folder in the repository at this commit")
            elif listed:
                found[f"{rel}/"] = f"tree {listed[0] if not rel else listed[2]}"
        for rel in repo_files(phase["kind"], phase.get("config") or {}):
            path = (root / rel).resolve()
            where = f"phase '{phase['name']}': {rel}"
            if not path.is_relative_to(root) or (root / rel).is_symlink():
                problems.append(f"{where} is outside the repository or a symbolic link")
            elif not path.is_file():
                problems.append(f"{where} is not a file in the repository at this commit")
            elif path.stat().st_size > MAX_JOB_FILE_BYTES:
                problems.append(f"{where} is larger than {MAX_JOB_FILE_BYTES // 1000} kB")
            elif (text := _text_of(path)) is None:
                problems.append(f"{where} is not UTF-8 text (or it contains NUL characters)")
            else:
                found[rel] = text
    if problems:
        raise SpecError(problems)
    return found


def _import_all(*, access: Access, source: GitSource, repo: str, sha: str, texts: dict[str, str],
                parsed: dict[str, dict], job_files: dict[str, dict[str, str]], errors: list[FileError]) -> SyncResult:
    result = SyncResult(sha=sha, errors=errors)
    seen: dict[str, str] = {}
    with transaction.atomic():
        GitSource.objects.select_for_update().filter(pk=source.pk).first()  # one sync writes at a time
        for rel, spec in parsed.items():
            try:
                with transaction.atomic():
                    synced = _import_file(access=access, text=texts[rel], spec=spec, rel=rel, repo=repo, sha=sha,
                                          files=job_files.get(rel, {}))
                    if synced.slug in seen:
                        raise ServiceError(f"job '{synced.slug}' is already defined by {seen[synced.slug]}")
            except SpecError as exc:
                result.errors.append(FileError(rel, exc.errors))
            except ServiceError as exc:
                result.errors.append(FileError(rel, [str(exc)]))
            else:
                seen[synced.slug] = rel
                result.jobs.append(synced)
        result.errors.sort(key=lambda e: e.path)
        summary = "\n".join(f"{e.path}: {'; '.join(e.errors)}" for e in result.errors)[:4000]
        now = timezone.now()
        GitSource.objects.filter(pk=source.pk).update(last_synced_sha=sha, last_synced_at=now, last_error=summary)
        source.last_synced_sha, source.last_synced_at, source.last_error = sha, now, summary
        audit_record(access=access, action="git.sync", target=source,
                     after={"repo": repo, "branch": source.branch, "sha": sha, "created": result.count("created"),
                            "updated": result.count("updated"), "unchanged": result.count("unchanged"),
                            "failed": len(result.errors)})
    return result


def _record_failure(*, access: Access, source: GitSource, message: str) -> None:
    with transaction.atomic():
        GitSource.objects.filter(pk=source.pk).update(last_error=message)
        source.last_error = message
        audit_record(access=access, action="git.sync", target=source,
                     after={"branch": source.branch, "error": message})


@dataclass
class PushResult:
    sync: SyncResult
    run_ids: list[int] = field(default_factory=list)
    run_errors: list[dict[str, str]] = field(default_factory=list)


def git_push_receive(*, access: Access, source: GitSource, sha: str | None = None) -> PushResult:
    """Sync at the pushed commit after a verified push; with ``run_on_push``, run each job this
    sync versioned, at that commit."""
    result = PushResult(sync=git_sync(access=access, source=source, sha=sha))
    if not source.run_on_push or result.sync.stale:
        return result
    changed = {j.slug for j in result.sync.changed}
    for job in Job.objects.filter(workspace=access.workspace, slug__in=changed).select_related("current_version"):
        try:
            run = run_create(access=access, job=job, environment="dev", trigger=Run.Trigger.GIT)
        except (SpecError, ServiceError) as exc:
            result.run_errors.append({"job": job.slug, "message": str(exc)})
        else:
            result.run_ids.append(run.pk)
    return result
