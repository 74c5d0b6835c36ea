"""The audit log: written by services inside the transaction of the change it records."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import connection
from django.utils import timezone

from controlroom.access import Access
from controlroom.models import AuditEvent, Workspace
from controlroom.request_id import get_client_ip, get_request_id

GENESIS = "0" * 64


def _chain_lock(workspace_id: int | None) -> None:
    # Serialise appends to one workspace's chain. SQLite already serialises writers
    # (IMMEDIATE transactions); PostgreSQL needs a transaction-scoped advisory lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [7301, workspace_id or 0])


def _digest(prev_hash: str, fields: dict[str, Any]) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _hashed_fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "workspace": event.workspace_id,
        "actor": event.actor_user_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "before": event.before,
        "after": event.after,
        "request_id": event.request_id,
        "ip": event.ip,
        "created_at": event.created_at.isoformat(),
    }


def audit_record(
    *,
    access: Access | None,
    action: str,
    target: Any,
    workspace: Workspace | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Append one audit event. Must run inside the transaction that makes the change."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must be called inside transaction.atomic()")
    workspace = workspace or (access.workspace if access else None)
    workspace_id = workspace.pk if workspace else None
    _chain_lock(workspace_id)
    last = AuditEvent.objects.filter(workspace_id=workspace_id).order_by("-id").values_list("hash", "seq").first()
    user = access.user if access else None
    event = AuditEvent(
        workspace=workspace,
        seq=(last[1] if last else 0) + 1,
        actor_user_id=user.pk if user is not None and user.pk else None,
        actor_label=access.label if access else "system",
        action=action,
        target_type=type(target).__name__.lower(),
        target_id=str(getattr(target, "pk", target)),
        before=before,
        after=after,
        request_id=request_id or get_request_id() or "",
        ip=get_client_ip(),
        created_at=timezone.now(),
        prev_hash=last[0] if last else GENESIS,
    )
    event.hash = _digest(event.prev_hash, _hashed_fields(event))
    event.save(force_insert=True)
    return event


def audit_verify_chain(*, workspace: Workspace | None) -> int | None:
    """Return the id of the first event whose hash does not verify, or None if intact."""
    prev = GENESIS
    events = AuditEvent.objects.filter(workspace=workspace).order_by("id")
    for event in events.iterator(chunk_size=500):
        if event.prev_hash != prev or event.hash != _digest(prev, _hashed_fields(event)):
            return event.pk
        prev = event.hash
    return None
