"""Writes of the workspace admin pages: members and the workspace's settings. Each service
checks the admin role, locks what it decides on, and audits inside its own transaction."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Membership, Role, Workspace
from controlroom.services import ServiceError

# The settings' sane ranges: a row cap past 50 million rows or a statement longer than a day is
# a typo, not a wish, and 1,000 concurrent runs is far beyond what one deployment schedules.
SQL_ROW_CAP_MAX = 50_000_000
SQL_TIMEOUT_MAX_S = 86_400
CONCURRENT_RUNS_MAX = 1_000
LAST_ADMIN = "A workspace needs at least one admin: make another member admin first."


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ServiceError("Choose a valid role.") from None


def _admins_locked(workspace: Workspace) -> int:
    """The workspace's admin count, with its row locked so that two admins demoting each other
    at once cannot both pass the last-admin check (SQLite serialises writers already)."""
    Workspace.objects.select_for_update().filter(pk=workspace.pk).values_list("pk", flat=True).first()
    return Membership.objects.filter(workspace=workspace, role=Role.ADMIN).count()


def _membership_locked(access: Access, membership_id: int) -> Membership:
    membership = (Membership.objects.select_for_update(of=("self",)).select_related("user")
                  .filter(workspace=access.workspace, pk=membership_id).first())
    if membership is None:
        raise ServiceError("No such member in this workspace.", code="not_found")
    return membership


def _new_username(username: str) -> str:
    User = get_user_model()
    username = (username or "").strip()
    field = User._meta.get_field(User.USERNAME_FIELD)
    if not username:
        raise ServiceError("A new user needs a username.")
    if len(username) > field.max_length:
        raise ServiceError(f"A username has at most {field.max_length} characters.")
    try:
        User.username_validator(username)
    except ValidationError:
        raise ServiceError("A username may contain only letters, digits and @ . + - _") from None
    # Sign-in matches usernames without regard to case, so "Bob" beside "bob" would be a trap.
    if User._default_manager.filter(**{f"{User.USERNAME_FIELD}__iexact": username}).exists():
        raise ServiceError(f"A user named {username} already exists: add them as an existing user.",
                           code="conflict")
    return username


def _email(email: str) -> str:
    email = (email or "").strip()
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise ServiceError("Enter a valid e-mail address, or none.") from None
    return email


def member_invite(*, access: Access, username: str, email: str = "", role: str) -> tuple[Membership, str]:
    """Create a user and make them a member with ``role``; returns the membership and the
    generated password, which is stored only hashed and must be shown to the admin once.

    The user's creation is recorded on the platform chain (``user.create``), the membership on
    the workspace's (``membership.invite``); never the password."""
    access.require(Role.ADMIN)
    role = _role(role)
    email = _email(email)
    password = secrets.token_urlsafe(12)
    with transaction.atomic():
        username = _new_username(username)
        user = get_user_model().objects.create_user(username=username, email=email, password=password)
        membership = Membership.objects.create(workspace=access.workspace, user=user, role=role)
        audit_record(access=None, action="user.create", actor=access.user, target=user,
                     after={"username": username, "email": email, "by_workspace": access.workspace.slug})
        audit_record(access=access, action="membership.invite", target=membership,
                     after={"user": username, "email": email, "role": role})
    return membership, password


def member_add(*, access: Access, username: str, role: str) -> Membership:
    """Make the existing user ``username`` (matched without regard to case) a member with ``role``."""
    access.require(Role.ADMIN)
    role = _role(role)
    User = get_user_model()
    username = (username or "").strip()
    user = User._default_manager.filter(**{f"{User.USERNAME_FIELD}__iexact": username}).first() if username else None
    if user is None:
        raise ServiceError(f"There is no user named {username or '(empty)'}: invite them as a new user.",
                           code="not_found")
    with transaction.atomic():
        if Membership.objects.filter(workspace=access.workspace, user=user).exists():
            raise ServiceError(f"{user.get_username()} is already a member: change their role instead.",
                               code="conflict")
        membership = Membership.objects.create(workspace=access.workspace, user=user, role=role)
        audit_record(access=access, action="membership.add", target=membership,
                     after={"user": user.get_username(), "role": role})
    return membership


def member_role_change(*, access: Access, membership_id: int, role: str) -> Membership:
    """Give a member of the access's workspace another role. The last admin cannot be demoted."""
    access.require(Role.ADMIN)
    role = _role(role)
    with transaction.atomic():
        admins = _admins_locked(access.workspace)
        membership = _membership_locked(access, membership_id)
        before = membership.role
        if before == role:
            return membership
        if before == Role.ADMIN and admins <= 1:
            raise ServiceError(LAST_ADMIN, code="conflict")
        # A role set by hand is kept by single sign-on from now on (controlroom/sso.py).
        Membership.objects.filter(pk=membership.pk).update(role=role, source=Membership.Source.MANUAL)
        membership.role, membership.source = role, Membership.Source.MANUAL
        audit_record(access=access, action="membership.role_change", target=membership,
                     before={"user": membership.user.get_username(), "role": before},
                     after={"user": membership.user.get_username(), "role": role})
    return membership


def member_remove(*, access: Access, membership_id: int) -> AbstractBaseUser:
    """Remove a member from the access's workspace (the user stays); returns that user. The last
    admin cannot be removed."""
    access.require(Role.ADMIN)
    with transaction.atomic():
        admins = _admins_locked(access.workspace)
        membership = _membership_locked(access, membership_id)
        if membership.role == Role.ADMIN and admins <= 1:
            raise ServiceError(LAST_ADMIN, code="conflict")
        audit_record(access=access, action="membership.remove", target=membership,
                     before={"user": membership.user.get_username(), "role": membership.role})
        membership.delete()
    return membership.user


def _setting_range(name: str, value: Any, *, maximum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ServiceError(f"{name} must be a whole number from 1 to {maximum:,}.")
    return value


def workspace_settings_update(*, access: Access, sql_row_cap: int, sql_timeout_s: int,
                              max_concurrent_runs: int | None, operators_run_in_prod: bool) -> dict[str, Any]:
    """Save the workspace's limits and its prod rule; returns the fields that changed, as
    {name: (before, after)}, and audits them (``workspace.settings``) when any did.

    ``max_concurrent_runs`` None means no limit; ``operators_run_in_prod`` lets operators, not
    only admins, trigger runs in prod."""
    access.require(Role.ADMIN)
    values = {
        "sql_row_cap": _setting_range("The SQL row cap", sql_row_cap, maximum=SQL_ROW_CAP_MAX),
        "sql_timeout_s": _setting_range("The SQL timeout", sql_timeout_s, maximum=SQL_TIMEOUT_MAX_S),
        "max_concurrent_runs": _setting_range("Concurrent runs", max_concurrent_runs, maximum=CONCURRENT_RUNS_MAX,
                                              optional=True),
        "operators_run_in_prod": bool(operators_run_in_prod),
    }
    with transaction.atomic():
        workspace = Workspace.objects.select_for_update().get(pk=access.workspace.pk)
        changed = {name: (getattr(workspace, name), value) for name, value in values.items()
                   if getattr(workspace, name) != value}
        if changed:
            Workspace.objects.filter(pk=workspace.pk).update(**{name: new for name, (_, new) in changed.items()})
            audit_record(access=access, action="workspace.settings", target=workspace,
                         before={name: old for name, (old, _) in changed.items()},
                         after={name: new for name, (_, new) in changed.items()})
    for name, (_, new) in changed.items():
        setattr(access.workspace, name, new)
    return changed
