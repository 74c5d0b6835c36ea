"""Connection lookup and secret resolution (values only at the moment of use)."""

from __future__ import annotations

import os
from pathlib import Path

from django.db.models import Q

from connections.models import Connection, SecretRef
from controlroom.models import Environment, Workspace


class ConnectionMissing(LookupError):
    pass


class SecretUnavailable(LookupError):
    pass


def connection_resolve(*, workspace: Workspace, environment: Environment | None, name: str) -> Connection:
    """The environment-specific connection ``name`` if there is one, else the shared one."""
    scope = Q(environment__isnull=True)
    if environment is not None:
        scope |= Q(environment=environment)
    candidates = sorted(
        Connection.objects.filter(scope, workspace=workspace, name=name),
        key=lambda c: c.environment_id is None,
    )
    if not candidates:
        where = f"{workspace.slug}/{environment.name}" if environment else workspace.slug
        raise ConnectionMissing(f"No connection named '{name}' in {where}.")
    return candidates[0]


def connections_for(*, workspace: Workspace) -> list[Connection]:
    return list(Connection.objects.filter(workspace=workspace).select_related("environment"))


def secret_resolve(ref: SecretRef) -> str:
    """Read a secret's value; raise SecretUnavailable without ever echoing the value."""
    if ref.source == SecretRef.Source.ENV:
        value = os.environ.get(ref.locator)
        if value is None:
            raise SecretUnavailable(f"Secret '{ref.name}': environment variable {ref.locator} is not set.")
        return value
    try:
        return Path(ref.locator).read_text().strip()
    except OSError:
        raise SecretUnavailable(f"Secret '{ref.name}': file {ref.locator} cannot be read.") from None
