"""The audit log: written by services inside the transaction of the change it records.

Events form chains: one per workspace ("ws:<id>") and the platform's ("platform", events with
no workspace, such as logins and changes to users). Each event's hash covers its content and
the previous event's hash, so an edited or removed row breaks the links after it. The chain's
end is kept in an ``AuditHead`` sealed with an HMAC whose key is not in the database
(``AUDIT_KEY``): rows cut from the end, or a chain recomputed after an edit, no longer match a
head that only the key could have made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from controlroom.access import Access
from controlroom.models import AuditEvent, AuditHead, Workspace
from controlroom.request_id import get_client_ip, get_request_id

GENESIS = "0" * 64
PLATFORM_CHAIN = "platform"
logger = logging.getLogger("controlroom.audit")


@dataclass(frozen=True)
class AuditTarget:
    """What an event is about when that is not a live model instance: a row about to be deleted
    (its pk is gone afterwards) or a name, such as the username of a failed login."""

    type: str
    id: str

    @classmethod
    def of(cls, obj: Any) -> AuditTarget:
        return cls(type(obj).__name__.lower(), str(obj.pk))


def chain_name(workspace_id: int | None) -> str:
    """The chain a workspace's events belong to; None is the platform's chain."""
    return PLATFORM_CHAIN if workspace_id is None else f"ws:{workspace_id}"


def chain_workspace_id(chain: str) -> int | None:
    """The workspace id a chain name stands for (None for the platform's); ValueError if none."""
    if chain == PLATFORM_CHAIN:
        return None
    if chain.startswith("ws:") and chain[3:].isdigit():
        return int(chain[3:])
    raise ValueError(f"not an audit chain name: {chain!r}")


def _derived_keys() -> list[bytes]:
    # From SECRET_KEY and its fallbacks, so rotating SECRET_KEY keeps old heads verifiable. The
    # salt keeps this key apart from every other use of SECRET_KEY.
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [salted_hmac("controlroom.audit.head", "key", secret=s, algorithm="sha256").digest() for s in secrets]


def _audit_keys() -> list[bytes]:
    # The first key seals new heads; the others only verify heads sealed before a rotation.
    if not settings.AUDIT_KEY:
        return _derived_keys()
    keys = [settings.AUDIT_KEY.encode()]
    for fallback in settings.AUDIT_KEY_FALLBACKS:
        keys.extend(_derived_keys() if fallback == "derived" else [fallback.encode()])
    return keys


def head_mac(chain: str, seq: int, hash_: str, *, key: bytes | None = None) -> str:
    """HMAC-SHA256 of a chain's head (chain, seq, hash) under the audit key."""
    key = key if key is not None else _audit_keys()[0]
    return hmac.new(key, f"{chain}\n{seq}\n{hash_}".encode(), hashlib.sha256).hexdigest()


def head_mac_valid(chain: str, seq: int, hash_: str, mac: str) -> bool:
    """Whether ``mac`` seals (chain, seq, hash) under the audit key or one of its fallbacks."""
    return any(hmac.compare_digest(head_mac(chain, seq, hash_, key=key), mac) for key in _audit_keys())


def _chain_lock(workspace_id: int | None) -> None:
    # Serialise appends to one chain. SQLite already serialises writers (IMMEDIATE
    # transactions); PostgreSQL needs a transaction-scoped advisory lock.
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


def _chain_end(chain: str, workspace_id: int | None, head: AuditHead | None) -> tuple[int, str, bool]:
    """(seq, hash) to append after, and whether the head may be sealed again afterwards."""
    if head is not None and head_mac_valid(chain, head.seq, head.hash, head.mac):
        # The sealed head, not the newest row, is the predecessor: if rows were cut from the
        # end, the next event leaves a visible gap instead of papering over the cut.
        return head.seq, head.hash, True
    last = (AuditEvent.objects.filter(workspace_id=workspace_id).order_by("-id")
            .values_list("seq", "hash").first())
    if head is None and last is None:
        return 0, GENESIS, True  # a new chain
    # A missing or forged head over existing events is tampering. Sealing now would launder
    # it, so the event is chained to the newest row and the head is left for audit_verify.
    logger.error("audit chain %s has %s head; appending without sealing it", chain,
                 "no" if head is None else "an invalid", extra={"chain": chain})
    seq, hash_ = last if last is not None else (0, GENESIS)
    return seq, hash_, False


def _head_seal(chain: str, head: AuditHead | None, event: AuditEvent) -> None:
    mac = head_mac(chain, event.seq, event.hash)
    values = {"seq": event.seq, "hash": event.hash, "mac": mac, "updated_at": event.created_at}
    if head is None:
        AuditHead.objects.create(chain=chain, **values)
    else:
        AuditHead.objects.filter(pk=head.pk).update(**values)
    # A copy outside the database (the JSON log, shipped elsewhere) shows a later rollback to an
    # older, still validly sealed head. Only committed heads are worth a line.
    line = {"chain": chain, "seq": event.seq, "hash": event.hash, "mac": mac}
    transaction.on_commit(lambda: logger.info("audit head", extra=line))


def audit_record(
    *,
    access: Access | None,
    action: str,
    target: Any,
    workspace: Workspace | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    request_id: str | None = None,
    actor: AbstractBaseUser | None = None,
    actor_label: str | None = None,
) -> AuditEvent:
    """Append one audit event and seal its chain's head. Must run inside the transaction that
    makes the change.

    ``actor`` names the acting user when there is no workspace ``access`` (the admin site, a
    login); ``actor_label`` overrides the recorded label. ``target`` is a model instance or an
    ``AuditTarget``. The chain is ``workspace``'s (default: the access's), else the platform's."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must be called inside transaction.atomic()")
    workspace = workspace or (access.workspace if access else None)
    workspace_id = workspace.pk if workspace else None
    user = actor if actor is not None else (access.user if access else None)
    if actor_label is None:
        actor_label = actor.get_username() if actor is not None else (access.label if access else "system")
    if isinstance(target, AuditTarget):
        target_type, target_id = target.type, target.id
    else:
        target_type, target_id = type(target).__name__.lower(), str(getattr(target, "pk", target))
    chain = chain_name(workspace_id)
    _chain_lock(workspace_id)
    head = AuditHead.objects.filter(chain=chain).first()
    prev_seq, prev_hash, seal = _chain_end(chain, workspace_id, head)
    event = AuditEvent(
        workspace=workspace,
        seq=prev_seq + 1,
        actor_user_id=user.pk if user is not None and user.pk else None,
        actor_label=actor_label[:200],
        action=action[:64],
        target_type=target_type[:64],
        target_id=target_id[:64],
        before=before,
        after=after,
        request_id=request_id or get_request_id() or "",
        ip=get_client_ip(),
        created_at=timezone.now(),
        prev_hash=prev_hash,
    )
    event.hash = _digest(event.prev_hash, _hashed_fields(event))
    event.save(force_insert=True)
    if seal:
        _head_seal(chain, head, event)
    return event


@dataclass(frozen=True)
class AuditVerdict:
    """What verifying one chain found: ``reason`` is empty when it is intact."""

    chain: str
    events: int
    first_bad_id: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def _verify(workspace_id: int | None) -> AuditVerdict:
    chain = chain_name(workspace_id)
    prev, count, last_id = GENESIS, 0, None
    events = AuditEvent.objects.filter(workspace_id=workspace_id).order_by("id")
    for event in events.iterator(chunk_size=500):
        count += 1
        if event.hash != _digest(event.prev_hash, _hashed_fields(event)):
            return AuditVerdict(chain, count, event.pk, f"event {event.pk} was edited: its hash does not match it")
        if event.seq != count or event.prev_hash != prev:
            return AuditVerdict(chain, count, event.pk,
                                f"event {event.pk} (position {event.seq}) does not follow the event before it "
                                f"(position {count - 1}): events were deleted or reordered")
        prev, last_id = event.hash, event.pk
    head = AuditHead.objects.filter(chain=chain).first()
    if head is None:
        if count:
            return AuditVerdict(chain, count, last_id, f"the head is missing while {count} events exist")
        return AuditVerdict(chain, 0)
    if not head_mac_valid(chain, head.seq, head.hash, head.mac):
        return AuditVerdict(chain, count, last_id, "the head's seal does not verify: the head was forged")
    if head.seq > count:
        return AuditVerdict(chain, count, last_id,
                            f"the head was sealed at position {head.seq} but the chain ends at {count}: "
                            "the newest events were deleted")
    if head.seq != count or head.hash != prev:
        return AuditVerdict(chain, count, last_id,
                            f"the chain ends at position {count} with a hash the head (position {head.seq}) "
                            "does not seal: events were added or rewritten without the key")
    return AuditVerdict(chain, count)


def audit_verify(*, workspace: Workspace | None) -> AuditVerdict:
    """Verify one chain (a workspace's, or the platform's for None): every row's hash and link,
    positions without gaps, and the sealed head against the newest row."""
    return _verify(workspace.pk if workspace else None)


def audit_verify_all() -> list[AuditVerdict]:
    """Verify every chain that has events or a head (a head whose events are all gone counts)."""
    ids: set[int | None] = set(AuditEvent.objects.order_by().values_list("workspace_id", flat=True).distinct())
    verdicts = []
    for chain in AuditHead.objects.values_list("chain", flat=True):
        try:
            ids.add(chain_workspace_id(chain))
        except ValueError:
            verdicts.append(AuditVerdict(chain, 0, None, "a head names no chain this log can have"))
    ordered = sorted(ids, key=lambda i: (i is not None, i or 0))
    return [_verify(workspace_id) for workspace_id in ordered] + verdicts


def audit_verify_chain(*, workspace: Workspace | None) -> int | None:
    """Compatible form of ``audit_verify``: None when the chain verifies, else the first bad
    event's id. When only the head disagrees (newest events deleted, head missing or forged),
    the newest remaining event's id, or 0 when none remain."""
    verdict = audit_verify(workspace=workspace)
    if verdict.ok:
        return None
    return verdict.first_bad_id if verdict.first_bad_id is not None else 0
