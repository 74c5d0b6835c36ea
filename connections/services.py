"""Connection lookup and secret resolution (values only at the moment of use)."""

from __future__ import annotations

import logging
import os
import stat

from django.db import transaction
from django.db.models import Q

from connections.models import Connection, SecretRef
from connections.secret_rules import SecretRuleError, secret_locator_check
from connections.vault import VaultError, vault_read
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.masking import secret_seen
from controlroom.models import Environment, Role, Workspace
from controlroom.services import ServiceError

log = logging.getLogger(__name__)
MAX_SECRET_BYTES = 64 * 1024


class ConnectionMissing(LookupError):
    pass


class SecretUnavailable(LookupError):
    """A secret cannot be read. ``str()`` is the public sentence, fit for any member; ``detail``
    (the variable name or the path, and why) goes to the log and to admins only."""

    def __init__(self, ref: SecretRef, detail: str) -> None:
        super().__init__(f"Secret '{ref.name}' cannot be read; ask a workspace admin.")
        self.detail = detail


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


def connections_serving(*, workspace_id: int, environment_id: int | None, kind: str) -> list[Connection]:
    """The workspace's connections of ``kind`` an environment sees, by the rule of
    ``connection_resolve``: one per name, the environment's own before the shared one; oldest first."""
    scope = Q(environment__isnull=True) | Q(environment_id=environment_id) if environment_id else \
        Q(environment__isnull=True)
    found: dict[str, Connection] = {}
    for conn in Connection.objects.filter(scope, workspace_id=workspace_id, kind=kind).order_by("pk"):
        if conn.name not in found or conn.environment_id is not None:
            found[conn.name] = conn
    return sorted(found.values(), key=lambda c: c.pk)


def connections_for(*, workspace: Workspace) -> list[Connection]:
    """The workspace's connections the SQL editor can run statements on (``Connection.SQL_KINDS``),
    the workspace's chosen default first (the editor opens on the first), then by name."""
    return list(Connection.objects.filter(workspace=workspace, kind__in=Connection.SQL_KINDS)
                .select_related("environment").order_by("-is_default", "name", "id"))


def connection_set_default(*, access: Access, connection: Connection | None) -> None:
    """Make ``connection`` the SQL editor's default in its workspace (None: no default, so the
    first by name). Admins only; audited."""
    access.require(Role.ADMIN)
    if connection is not None and (connection.workspace_id != access.workspace.pk
                                   or connection.kind not in Connection.SQL_KINDS):
        raise ServiceError("That is not a SQL connection of this workspace.", code="not_found")
    with transaction.atomic():
        previous = Connection.objects.select_for_update().filter(workspace=access.workspace, is_default=True).first()
        if previous == connection:
            return
        if previous is not None:
            Connection.objects.filter(pk=previous.pk).update(is_default=False)
        if connection is not None:
            Connection.objects.filter(pk=connection.pk).update(is_default=True)
        audit_record(access=access, action="connection.set_default", target=connection or previous,
                     before={"default": previous.name if previous else None},
                     after={"default": connection.name if connection else None})


def secret_resolve(ref: SecretRef, *, workspace_id: int) -> str:
    """Read a secret's value for a user of workspace ``workspace_id``; raise SecretUnavailable
    (never echoing the value) when the reference belongs to another workspace, breaks the
    reference rules (checked again now: settings and files change) or cannot be read. The value
    is masked from then on wherever this process stores or logs text (controlroom.masking)."""
    try:
        if ref.workspace_id != workspace_id:
            raise SecretRuleError(f"the reference belongs to workspace {ref.workspace_id}, not {workspace_id}")
        value = _read(ref)
    except SecretRuleError as exc:
        log.warning("secret %s (id %s) cannot be read: %s", ref.name, ref.pk, exc,
                    extra={"workspace_id": workspace_id})
        raise SecretUnavailable(ref, str(exc)) from None
    secret_seen(ref.workspace_id, value)
    return value


def secret_value(ref: SecretRef) -> str | None:
    """The reference's value, or None when it cannot be read (quietly: for masking only)."""
    try:
        return _read(ref)
    except SecretRuleError:
        return None


def _read(ref: SecretRef) -> str:
    slug = ref.workspace.slug if ref.source == SecretRef.Source.VAULT else ""  # only vault paths need it
    target = secret_locator_check(source=ref.source, locator=ref.locator, workspace_slug=slug)
    if isinstance(target, tuple):  # vault: (path, key)
        try:
            return vault_read(*target)
        except VaultError as exc:
            raise SecretRuleError(str(exc)) from None
    if ref.source == SecretRef.Source.ENV:
        value = os.environ.get(str(target))
        if value is None:
            raise SecretRuleError(f"environment variable {target} is not set")
        return value
    return _read_secret_file(str(target))


def _read_secret_file(path: str) -> str:
    # The path is already resolved; O_NOFOLLOW refuses a symbolic link swapped in since.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise SecretRuleError(f"file {path} cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # not a FIFO, a device or a folder
            raise SecretRuleError(f"{path} is not a regular file")
        data = handle.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretRuleError(f"file {path} is larger than {MAX_SECRET_BYTES // 1024} KiB")
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise SecretRuleError(f"file {path} is not UTF-8 text") from None
