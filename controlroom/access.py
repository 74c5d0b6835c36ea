"""Who is acting, in which workspace, with which role: the one authorization path."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied

from controlroom.models import ApiToken, Role, Workspace, role_at_least


@dataclass(frozen=True)
class Access:
    """A resolved actor inside one workspace: a signed-in member or an API token."""

    workspace: Workspace
    role: str
    user: AbstractBaseUser | None = None
    token: ApiToken | None = None

    def can(self, minimum: str) -> bool:
        return role_at_least(self.role, minimum)

    def require(self, minimum: str) -> None:
        if not self.can(minimum):
            raise PermissionDenied(f"This needs the {Role(minimum).label.lower()} role or higher.")

    @property
    def label(self) -> str:
        if self.token is not None:
            return f"token:{self.token.name}"
        return getattr(self.user, "username", "system") if self.user else "system"


def system_access(workspace: Workspace) -> Access:
    """The platform itself acting (workers, seeding, schedules)."""
    return Access(workspace=workspace, role=Role.ADMIN)
