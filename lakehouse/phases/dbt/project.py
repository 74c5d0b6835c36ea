"""Where a dbt phase's project comes from: the job's git repository at the run's commit, or a
folder of the workspace's datasets.

The repository is fetched afresh into the phase's scratch folder (one ``--depth 1`` fetch of that
one commit, as a git sync does for a push; nothing is cached between runs), from the workspace's
git source, which must still be the repository the job version was synced from. Git runs under the
same URL rules as a sync (``runs.git_urls``), in its own session, told to die with the worker, and
stoppable by cancel. Symbolic links are checked out as plain files (``core.symlinks=false``), so a
project cannot point dbt at a file of this server; a datasets folder is copied without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from controlroom.services import ServiceError
from lakehouse.phases.dbt.process import ProcessFailed, run_quietly
from runs.executors.base import PhaseFailure
from runs.git_urls import git_env, git_redact, git_url_check, git_url_display
from runs.models import GitSource
from runs.services.gitsync import GIT_TIMEOUT_S, SSH_COMMAND

MAX_DATASET_PROJECT_FILES = 5000
MAX_DATASET_PROJECT_BYTES = 50 * 1024 * 1024


def project_checkout(ctx: Any, where: str, rel: str) -> Path:
    """The dbt project's folder, inside ``ctx.scratch``; PhaseFailure with the reason otherwise."""
    root = git_checkout(ctx) if where == "git" else datasets_copy(ctx, rel)
    project = root if where == "datasets" or rel == "." else (root / rel)
    if not project.resolve().is_relative_to(root.resolve()):
        raise PhaseFailure(f"the dbt project {rel} points outside the repository")
    if not (project / "dbt_project.yml").is_file():
        shown = f"datasets://{rel}" if where == "datasets" else f"{rel} at commit {ctx.run.git_sha[:12]}"
        raise PhaseFailure(f"the dbt project {shown} has no dbt_project.yml")
    return project


def git_checkout(ctx: Any) -> Path:
    """The job's repository at the run's commit, checked out into the scratch folder."""
    run = ctx.run
    version = run.job_version
    sha = (run.git_sha or version.git_sha or "").lower()
    if not sha or not version.git_repo:
        raise PhaseFailure("the dbt project is read from the job's git repository at its commit, and this job "
                           "version has none: sync the job from git, or name a datasets:// folder")
    source = GitSource.objects.filter(workspace_id=run.workspace_id).first()
    if source is None or git_url_display(source.url) != version.git_repo:
        raise PhaseFailure(f"the job's repository {version.git_repo} is no longer the workspace's git source: "
                           "sync the job again")
    try:
        url = git_url_check(source.url)
    except ServiceError as exc:
        raise PhaseFailure(str(exc)) from None
    root = ctx.scratch / "repo"
    env = {**os.environ, **git_env()}
    env.setdefault("GIT_SSH_COMMAND", SSH_COMMAND)
    base = ["git", "-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never", "-c", "core.symlinks=false"]
    steps = [["init", "--quiet", str(root)],
             ["-C", str(root), "fetch", "--quiet", "--no-tags", "--depth=1", "--", url, sha],
             ["-C", str(root), "checkout", "--quiet", "--detach", sha]]
    ctx.log(f"checking out {version.git_repo} at {sha[:12]}")
    for step in steps:
        try:
            run_quietly(ctx, [*base, *step], env=env, timeout_s=GIT_TIMEOUT_S)
        except ProcessFailed as exc:
            detail = git_redact(str(exc), url)
            raise PhaseFailure(f"git {step[0] if step[0] != '-C' else step[2]} failed: {detail}") from None
    return root


def datasets_copy(ctx: Any, rel: str) -> Path:
    """A copy of the workspace's datasets folder ``rel`` (regular files only, bounded)."""
    from sqlwarehouse.datasets import datasets_area

    area = datasets_area(ctx.run.workspace)
    folder = (area / rel).resolve()
    if not folder.is_relative_to(area) or not folder.is_dir():
        raise PhaseFailure(f"datasets://{rel} is not a folder of this workspace's datasets")
    target = ctx.scratch / "project"
    count = size = 0
    target.mkdir()
    for top, dirs, files in os.walk(folder):  # never into a symlinked folder (another workspace's?)
        here = Path(top)
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for name in dirs:
            (target / (here / name).relative_to(folder)).mkdir()
        for name in sorted(files):
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue  # never followed: it could name a file of this server
            count, size = count + 1, size + path.stat().st_size
            if count > MAX_DATASET_PROJECT_FILES or size > MAX_DATASET_PROJECT_BYTES:
                raise PhaseFailure(f"datasets://{rel} is too large for a dbt project (at most "
                                   f"{MAX_DATASET_PROJECT_FILES} files, {MAX_DATASET_PROJECT_BYTES // 2**20} MiB)")
            shutil.copyfile(path, target / path.relative_to(folder), follow_symlinks=False)
    return target
