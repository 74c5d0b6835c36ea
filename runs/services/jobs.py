"""Creating and editing jobs: every accepted edit becomes an immutable JobVersion."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.limits import require_text
from controlroom.models import Role
from controlroom.services import ServiceError
from runs.models import Job, JobVersion
from runs.spec import parse_spec, spec_hash


def _git_fields(git_repo: str, git_sha: str, git_path: str) -> dict[str, str]:
    git_sha = require_text(JobVersion, "git_sha", (git_sha or "").strip()).lower()
    if git_sha and not (7 <= len(git_sha) <= 40 and all(c in "0123456789abcdef" for c in git_sha)):
        raise ServiceError(f"git sha {git_sha!r} is not a hexadecimal commit id (7 to 40 characters).")
    return {"git_repo": require_text(JobVersion, "git_repo", git_repo).strip(), "git_sha": git_sha,
            "git_path": require_text(JobVersion, "git_path", git_path).strip()}


def job_create(
    *, access: Access, spec_text: str, git_repo: str = "", git_sha: str = "", git_path: str = "",
    parsed: dict | None = None, files: dict[str, str] | None = None,
) -> Job:
    """Create a job from YAML spec text (``parsed``: that text already through parse_spec;
    ``files``: the repository files its phases run, read at ``git_sha``); raises SpecError or
    ServiceError, writing nothing."""
    access.require(Role.OPERATOR)
    spec = parsed if parsed is not None else parse_spec(spec_text)
    git = _git_fields(git_repo, git_sha, git_path)
    slug = slugify(spec["name"])
    try:
        with transaction.atomic():
            job = Job.objects.create(
                workspace=access.workspace, slug=slug, name=spec["name"],
                description=spec.get("description", ""), created_by=access.user if access.token is None else None,
            )
            version = _version_add(job=job, access=access, spec_text=spec_text, spec=spec, git=git,
                                   files=files or {})
            audit_record(access=access, action="job.create", target=job,
                         after={"slug": slug, "version": 1, "spec_hash": version.spec_hash, **git})
    except IntegrityError:
        raise ServiceError(f"A job named '{slug}' already exists in this workspace.", code="conflict") from None
    return job


def job_update(
    *, access: Access, job: Job, spec_text: str, git_repo: str = "", git_sha: str = "", git_path: str = "",
    parsed: dict | None = None, files: dict[str, str] | None = None,
) -> tuple[JobVersion, bool]:
    """Store an edit as a new version; returns (version, created). Unchanged input (spec, git
    fields and ``files``) is a no-op. ``parsed``: the spec text already through parse_spec."""
    access.require(Role.OPERATOR)
    spec = parsed if parsed is not None else parse_spec(spec_text)
    if spec["name"] != job.name:
        raise ServiceError(f"The spec's name must stay '{job.name}' (create a new job to rename).")
    git = _git_fields(git_repo, git_sha, git_path)
    with transaction.atomic():
        current = Job.objects.select_for_update().get(pk=job.pk).current_version
        if current and current.spec_hash == spec_hash(spec) and all(getattr(current, k) == v for k, v in git.items()) \
                and current.files == (files or {}):
            return current, False
        version = _version_add(job=job, access=access, spec_text=spec_text, spec=spec, git=git, files=files or {})
        Job.objects.filter(pk=job.pk).update(description=spec.get("description", ""))
        audit_record(
            access=access, action="job.update", target=job,
            before={"version": current.number, "spec_hash": current.spec_hash} if current else None,
            after={"version": version.number, "spec_hash": version.spec_hash, **git},
        )
    job.refresh_from_db()
    return version, True


def _version_add(*, job: Job, access: Access, spec_text: str, spec: dict, git: dict[str, str],
                 files: dict[str, str]) -> JobVersion:
    last = job.versions.order_by("-number").values_list("number", flat=True).first() or 0
    version = JobVersion.objects.create(
        job=job, number=last + 1, spec_text=spec_text, spec=spec, spec_hash=spec_hash(spec), files=files,
        created_by=access.user if access.token is None else None, **git,
    )
    Job.objects.filter(pk=job.pk).update(current_version=version)
    job.current_version = version
    return version
