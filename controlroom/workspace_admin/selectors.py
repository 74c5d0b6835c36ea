"""Reads of the workspace admin pages, each starting from the access's workspace."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from controlroom.access import Access
from controlroom.models import AuditEvent, Membership, Role

AUDIT_PAGE_SIZE = 50
DIFF_VALUE_MAX = 300  # characters of one before/after value shown on the page; the CSV has all


def members_of(*, access: Access) -> QuerySet[Membership]:
    """The workspace's memberships with their users, by username."""
    access.require(Role.ADMIN)
    return (Membership.objects.filter(workspace=access.workspace).select_related("user")
            .order_by("user__username", "pk"))


def membership_get(*, access: Access, membership_id: int | None) -> Membership:
    """One membership of the access's workspace; 404 for any other id (another workspace's too)."""
    membership = members_of(access=access).filter(pk=membership_id).first() if membership_id else None
    if membership is None:
        raise Http404("No such member in this workspace.")
    return membership


@dataclass(frozen=True)
class AuditFilter:
    """What the audit log is narrowed to; empty fields do not narrow. ``action`` matches as a
    prefix ("membership." finds every membership event); the rest match exactly, the actor
    without regard to case; ``since`` is inclusive, ``until`` exclusive."""

    actor: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def audit_events(*, access: Access, filters: AuditFilter) -> QuerySet[AuditEvent]:
    """The workspace's audit events matching ``filters``, newest first (by id, the chain's order)."""
    access.require(Role.ADMIN)
    events = AuditEvent.objects.filter(workspace=access.workspace)
    if filters.actor:
        events = events.filter(actor_label__iexact=filters.actor)
    if filters.action:
        events = events.filter(action__startswith=filters.action)
    if filters.target_type:
        events = events.filter(target_type=filters.target_type)
    if filters.target_id:
        events = events.filter(target_id=filters.target_id)
    if filters.since:
        events = events.filter(created_at__gte=filters.since)
    if filters.until:
        events = events.filter(created_at__lt=filters.until)
    return events.order_by("-id")


def audit_page(*, access: Access, filters: AuditFilter, before_id: int | None,
               size: int = AUDIT_PAGE_SIZE) -> tuple[list[AuditEvent], int | None]:
    """One page of ``audit_events``: at most ``size`` events with ids below ``before_id`` (all
    when None), and the ``before_id`` of the next page, or None on the last. Keyset, not
    offset: a page costs the same however deep it is, and new events do not shift it."""
    events = audit_events(access=access, filters=filters)
    if before_id is not None:
        events = events.filter(id__lt=before_id)
    rows = list(events[: size + 1])
    return rows[:size], (rows[size - 1].pk if len(rows) > size else None)


@dataclass(frozen=True)
class Change:
    """One field of an event's before/after: ``kind`` is "added", "removed" or "changed"."""

    field: str
    kind: str
    old: str
    new: str


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= DIFF_VALUE_MAX else text[:DIFF_VALUE_MAX] + "…"


def audit_changes(event: AuditEvent) -> list[Change]:
    """``event``'s before and after as a diff by field: what it added, removed or changed. A
    field with the same value on both sides (such as the user a role change is about) is kept
    as "same" so that the diff says whose role it was."""
    before = event.before if isinstance(event.before, dict) else ({"value": event.before} if event.before else {})
    after = event.after if isinstance(event.after, dict) else ({"value": event.after} if event.after else {})
    changes = []
    for field in sorted(before.keys() | after.keys()):
        if field not in before:
            changes.append(Change(field, "added", "", _shown(after[field])))
        elif field not in after:
            changes.append(Change(field, "removed", _shown(before[field]), ""))
        elif before[field] != after[field]:
            changes.append(Change(field, "changed", _shown(before[field]), _shown(after[field])))
        else:
            changes.append(Change(field, "same", _shown(before[field]), _shown(after[field])))
    return changes
