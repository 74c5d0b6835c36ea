"""Writes of the platform core. Each service audits inside its own transaction."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import ApiToken, Environment, Membership, Role, Workspace

TOKEN_PREFIX = "crt_"  # noqa: S105 (a prefix, not a secret)


class ServiceError(Exception):
    """A business-rule refusal whose message is fit to show the user."""

    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


def workspace_create(*, name: str, slug: str = "", owner: AbstractBaseUser | None = None) -> Workspace:
    """Create a workspace with its dev/stage/prod environments; the owner becomes admin."""
    slug = slug or slugify(name)
    if not slug:
        raise ServiceError("A workspace needs a name with letters or digits.")
    with transaction.atomic():
        if Workspace.objects.filter(slug=slug).exists():
            raise ServiceError(f"A workspace with the slug '{slug}' already exists.", code="conflict")
        workspace = Workspace.objects.create(slug=slug, name=name)
        Environment.objects.bulk_create(Environment(workspace=workspace, name=n) for n in Environment.Name.values)
        access = Access(workspace=workspace, role=Role.ADMIN, user=owner)
        if owner is not None:
            Membership.objects.create(workspace=workspace, user=owner, role=Role.ADMIN)
        audit_record(access=access, action="workspace.create", target=workspace, after={"slug": slug, "name": name})
    return workspace


def membership_set(*, access: Access, user: AbstractBaseUser, role: str) -> Membership:
    """Add a member or change their role (admins only)."""
    access.require(Role.ADMIN)
    role = Role(role)
    with transaction.atomic():
        existing = Membership.objects.filter(workspace=access.workspace, user=user).first()
        before = {"role": existing.role} if existing else None
        membership, _ = Membership.objects.update_or_create(
            workspace=access.workspace, user=user, defaults={"role": role}
        )
        audit_record(
            access=access, action="membership.set", target=membership, before=before,
            after={"user": user.get_username(), "role": role},
        )
    return membership


def _hash_token(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def api_token_create(*, access: Access, name: str, role: str) -> tuple[ApiToken, str]:
    """Issue a token; returns the row and the plaintext value, which is never stored."""
    access.require(Role.ADMIN)
    name = name.strip()
    if not name:
        raise ServiceError("A token needs a name.")
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            workspace=access.workspace, name=name, role=Role(role), prefix=value[:12],
            token_hash=_hash_token(value), created_by=access.user,
        )
        audit_record(access=access, action="api_token.create", target=token, after={"name": name, "role": role})
    return token, value


def api_token_revoke(*, access: Access, token: ApiToken) -> None:
    access.require(Role.ADMIN)
    with transaction.atomic():
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(access=access, action="api_token.revoke", target=token)


def api_token_authenticate(value: str) -> Access | None:
    """Resolve a bearer token to its workspace access, or None if unknown or revoked."""
    if not value.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("workspace")
        .filter(token_hash=_hash_token(value), revoked_at__isnull=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return Access(workspace=token.workspace, role=token.role, token=token)
