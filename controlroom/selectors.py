"""Reads of the platform core, always scoped to the user's memberships."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from controlroom.access import Access
from controlroom.models import Environment, Membership, Role, Workspace


def workspaces_for_user(*, user: AbstractBaseUser) -> QuerySet[Workspace]:
    if not user.is_authenticated:
        return Workspace.objects.none()
    return Workspace.objects.filter(memberships__user=user).order_by("name")


def workspace_access(*, user: AbstractBaseUser, slug: str, minimum: str = Role.VIEWER) -> Access:
    """The user's access to workspace ``slug``: 404 for non-members, 403 below ``minimum``."""
    membership = (
        Membership.objects.select_related("workspace").filter(workspace__slug=slug, user=user).first()
        if user.is_authenticated
        else None
    )
    if membership is None:
        raise Http404("No such workspace.")
    access = Access(workspace=membership.workspace, role=membership.role, user=user)
    access.require(minimum)
    return access


def environment_get(*, access: Access, name: str) -> Environment:
    env = Environment.objects.filter(workspace=access.workspace, name=name).first()
    if env is None:
        raise Http404(f"No environment named '{name}'.")
    return env
