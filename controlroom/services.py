"""Writes of the platform core. Each service audits inside its own transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import slugify

from controlroom.access import Access
from controlroom.audit import AuditTarget, audit_record
from controlroom.models import TOKEN_SCOPES, ApiToken, Environment, Membership, Role, Workspace

TOKEN_PREFIX = "crt_"  # noqa: S105 (a prefix, not a secret)
TOKEN_NAME_MAX = 100  # ApiToken.name's max_length
TOKEN_MAX_DAYS = 730  # the longest a token may live when it expires at all


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


def _token_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError("A token needs a name.")
    if len(name) > TOKEN_NAME_MAX:
        raise ServiceError(f"A token name has at most {TOKEN_NAME_MAX} characters.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ServiceError("A token name must not contain control characters (such as NUL or a line break).")
    return name


def _token_expiry(expires_at: dt.datetime | int | None) -> dt.datetime | None:
    if expires_at is None:
        return None
    now = timezone.now()
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, dt.datetime)):
        raise ServiceError("The expiry must be a date and time or a number of days.")
    if isinstance(expires_at, int):
        if not 1 <= expires_at <= TOKEN_MAX_DAYS:
            raise ServiceError(f"A token expires after 1 to {TOKEN_MAX_DAYS} days.")
        return now + dt.timedelta(days=expires_at)
    if timezone.is_naive(expires_at):
        raise ServiceError("The expiry needs a time zone.")
    if expires_at <= now:
        raise ServiceError("The expiry must be in the future.")
    if expires_at > now + dt.timedelta(days=TOKEN_MAX_DAYS):
        raise ServiceError(f"A token expires at most {TOKEN_MAX_DAYS} days from now.")
    return expires_at


def api_token_create(*, access: Access, name: str, role: str, expires_at: dt.datetime | int | None = None,
                     scopes: list[str] | None = None) -> tuple[ApiToken, str]:
    """Issue a token; returns the row and the plaintext value, which is never stored.

    ``scopes``: some of TOKEN_SCOPES (None: all of them; the role still limits the token).

    ``name`` is stripped, 1 to 100 characters without control characters. ``expires_at`` is
    None (no expiry), an aware datetime in the future, or a number of days from now; either way
    at most TOKEN_MAX_DAYS ahead. An expired token authenticates nothing."""
    access.require(Role.ADMIN)
    name = _token_name(name)
    expiry = _token_expiry(expires_at)
    scopes = _token_scopes(scopes)
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            workspace=access.workspace, name=name, role=Role(role), prefix=value[:12],
            token_hash=_hash_token(value), created_by=access.user, expires_at=expiry, scopes=scopes,
        )
        audit_record(access=access, action="api_token.create", target=token,
                     after={"name": name, "role": role, "expires_at": expiry.isoformat() if expiry else None,
                            "scopes": scopes})
    return token, value


def _token_scopes(scopes: list[str] | None) -> list[str]:
    if scopes is None:
        return list(TOKEN_SCOPES)
    if not isinstance(scopes, (list, tuple)) or not scopes:
        raise ServiceError("Choose at least one scope for the token.")
    unknown = [s for s in scopes if s not in TOKEN_SCOPES]
    if unknown:
        raise ServiceError(f"Unknown scope {unknown[0]!r}: choose from {', '.join(TOKEN_SCOPES)}.")
    return [s for s in TOKEN_SCOPES if s in scopes]  # in the one order, once each


def api_token_revoke(*, access: Access, token: ApiToken) -> None:
    """Revoke a token of the access's workspace (admins only); revoking twice is refused."""
    access.require(Role.ADMIN)
    if token.workspace_id != access.workspace.pk:
        raise ServiceError("No such token in this workspace.", code="not_found")
    with transaction.atomic():
        if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
            raise ServiceError(f"Token {token.name} is already revoked.", code="conflict")
        token.refresh_from_db(fields=["revoked_at"])
        audit_record(access=access, action="api_token.revoke", target=token)


def _live_tokens(now: dt.datetime) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True)


def api_token_live(token: ApiToken) -> bool:
    """Whether ``token`` still authenticates (not revoked, not expired): for a request that holds
    on to its access for a while, such as a long poll."""
    return _live_tokens(timezone.now()).filter(pk=token.pk).exists()


def api_token_authenticate(value: str) -> Access | None:
    """Resolve a bearer token to its workspace access, or None if unknown, revoked or expired."""
    if not value.startswith(TOKEN_PREFIX):
        return None
    now = timezone.now()
    token = _live_tokens(now).select_related("workspace").filter(token_hash=_hash_token(value)).first()
    if token is None:
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    role = token.role
    if "admin" not in (token.scopes or []) and role == Role.ADMIN:
        role = Role.OPERATOR  # an admin role without the admin scope acts as an operator
    return Access(workspace=token.workspace, role=role, token=token)


# Sign-ins and sign-outs, and the changes people make to their own account on allauth's pages.
AUTH_ACTIONS = ("auth.login", "auth.login_failed", "auth.logout", "auth.password_change", "auth.password_set",
                "auth.password_reset", "auth.email_add", "auth.email_remove", "auth.email_change",
                "auth.email_confirm", "auth.sso_session_ended")


def auth_event_record(*, action: str, request: HttpRequest | None, user: AbstractBaseUser | None = None,
                      username: str = "", details: dict[str, str] | None = None) -> None:
    """Audit a sign-in, a failed sign-in, a sign-out or a change to one's own account (password
    changed, set or reset through the mailed link; e-mail address added, removed, made primary
    or confirmed) on the platform chain, in its own transaction: the user (or, for a failure,
    the username tried), the request id, the client's address, its user agent cut short, and
    ``details`` (the e-mail addresses concerned). Never a password."""
    if action not in AUTH_ACTIONS:
        raise ValueError(f"not an authentication action: {action}")
    meta = getattr(request, "META", {})
    username = (user.get_username() if user is not None else username or "")[:150]
    after = {"username": username, "user_agent": meta.get("HTTP_USER_AGENT", "")[:200], **(details or {})}
    with transaction.atomic():
        audit_record(access=None, action=action, actor=user, actor_label=None if user is not None else "anonymous",
                     target=user if user is not None else AuditTarget("user", ""), after=after,
                     request_id=getattr(request, "request_id", None))
