"""Saving a workspace's git source: the URL, branch, folder, webhook secret and push policy."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from connections.models import SecretRef
from connections.secret_rules import FOREIGN_REFERENCE
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Role
from controlroom.services import ServiceError
from runs.git_urls import git_url_check, git_url_display
from runs.models import GitSource


def _state(source: GitSource | None) -> dict[str, Any] | None:
    if source is None:
        return None
    return {"url": git_url_display(source.url), "branch": source.branch, "folder": source.folder,
            "webhook_secret": source.webhook_secret.name if source.webhook_secret_id else None,
            "run_on_push": source.run_on_push}


def git_source_set(*, access: Access, url: str, branch: str = "main", folder: str = "jobs",
                   webhook_secret: SecretRef | None = None, run_on_push: bool = False) -> GitSource:
    """Create or change the workspace's git source (admins only). The URL must pass
    ``git_url_check``; the webhook secret must be a reference of this workspace."""
    access.require(Role.ADMIN)
    url = git_url_check(url)
    branch = (branch or "").strip()
    if not branch or branch.startswith("-"):
        raise ServiceError("The branch name must not be empty or start with '-'.")
    if webhook_secret is not None and webhook_secret.workspace_id != access.workspace.pk:
        raise ServiceError(FOREIGN_REFERENCE)
    with transaction.atomic():
        existing = (GitSource.objects.select_for_update(of=("self",)).select_related("webhook_secret")
                    .filter(workspace=access.workspace).first())
        before = _state(existing)
        source = existing or GitSource(workspace=access.workspace)
        source.url, source.branch, source.folder = url, branch, (folder or "").strip()
        source.webhook_secret, source.run_on_push = webhook_secret, run_on_push
        source.save()
        audit_record(access=access, action="git_source.set", target=source, before=before, after=_state(source))
    return source
