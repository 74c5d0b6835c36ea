"""Reads of a workspace's connections and secret references, each starting from the access's workspace."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import Http404

from connections.models import Connection, SecretRef
from connections.services import SecretUnavailable, secret_resolve
from controlroom.access import Access
from controlroom.models import Role


@dataclass(frozen=True)
class SecretStatus:
    """Whether a reference resolves now: ``ok``, else ``reason`` (one sentence; never the value)."""

    ok: bool
    reason: str = ""


def connections_of(*, access: Access) -> QuerySet[Connection]:
    """The workspace's connections (every kind) with their environment and password reference."""
    access.require(Role.ADMIN)
    return (Connection.objects.filter(workspace=access.workspace).select_related("environment", "password_ref")
            .order_by("name", "environment__name", "pk"))


def connection_get(*, access: Access, connection_id: int | None) -> Connection:
    """One connection of the access's workspace; 404 for any other id (another workspace's too)."""
    found = connections_of(access=access).filter(pk=connection_id).first() if connection_id else None
    if found is None:
        raise Http404("No such connection in this workspace.")
    return found


def secret_refs_of(*, access: Access) -> QuerySet[SecretRef]:
    """The workspace's secret references, by name."""
    access.require(Role.ADMIN)
    return SecretRef.objects.filter(workspace=access.workspace).select_related("workspace").order_by("name", "pk")


def secret_ref_get(*, access: Access, secret_id: int | None) -> SecretRef:
    """One secret reference of the access's workspace; 404 for any other id."""
    found = secret_refs_of(access=access).filter(pk=secret_id).first() if secret_id else None
    if found is None:
        raise Http404("No such secret reference in this workspace.")
    return found


def secret_status(ref: SecretRef) -> SecretStatus:
    """Resolve ``ref`` now and keep only whether that worked. The value is read and dropped here,
    so no caller can put it on a page; the reason is the resolver's detail (which variable or
    file, and why), meant for admins."""
    try:
        secret_resolve(ref, workspace_id=ref.workspace_id)
    except SecretUnavailable as exc:
        reason = exc.detail.rstrip(".")
        return SecretStatus(ok=False, reason=reason[:1].upper() + reason[1:] + ".")
    return SecretStatus(ok=True)


def secret_statuses(refs: list[SecretRef]) -> dict[int, SecretStatus]:
    """``secret_status`` of each reference, by id (each resolved once)."""
    return {ref.pk: secret_status(ref) for ref in refs}


def secret_users(*, access: Access) -> dict[int, list[str]]:
    """For each secret reference id of the workspace, the connections that use it (as their
    password, or by name as a catalog's S3 secret key or Superset's Trino password), e.g.
    ``["trino (password)"]``."""
    refs = {ref.name: ref.pk for ref in secret_refs_of(access=access)}
    users: dict[int, list[str]] = {}
    for conn in connections_of(access=access):
        if conn.password_ref_id:
            users.setdefault(conn.password_ref_id, []).append(f"{conn.name} (password)")
        for use, name in conn.secrets_named():
            if name in refs:
                users.setdefault(refs[name], []).append(f"{conn.name} ({use})")
    return users
