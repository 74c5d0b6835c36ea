"""The audit log: written by services inside the transaction of the change it records.

Events form chains: one per workspace ("ws:<id>") and the platform's ("platform", events with
no workspace, such as logins and changes to users). Each event's hash covers its content and
the previous event's hash, so an edited or removed row breaks the links after it. The chain's
end is kept in an ``AuditHead`` sealed with an HMAC whose key is not in the database
(``AUDIT_KEY``): rows cut from the end, or a chain recomputed after an edit, no longer match a
head that only the key could have made. Whole chains are accounted for too: every workspace
has one, starting with its creation, and the platform's exists once anyone has signed in.

What is hashed is what the database gives back (``stored_json``, ``stored_ip``): a value that
PostgreSQL would store differently (1e40 in jsonb, an IPv6 scope in inet) is normalised first,
so that verifying later does not mistake the database's rewrite for tampering.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.ipv6 import clean_ipv6_address

from controlroom.access import Access
from controlroom.masking import mask_value
from controlroom.models import AuditEvent, AuditHead, Workspace
from controlroom.request_id import get_client_ip, get_request_id

GENESIS = "0" * 64
PLATFORM_CHAIN = "platform"
# The events a workspace's chain may start with: its creation by the service or in the admin.
CHAIN_STARTS = ("workspace.create", "admin.add")
logger = logging.getLogger("controlroom.audit")


@dataclass(frozen=True)
class AuditTarget:
    """What an event is about when that is not a live model instance: a row about to be deleted
    (its pk is gone afterwards) or a name, such as the username of a failed login."""

    type: str
    id: str

    @classmethod
    def of(cls, obj: Any) -> AuditTarget:
        return cls(obj.__class__.__name__.lower(), str(obj.pk))


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


def _stored_number(text: str) -> float | int:
    # jsonb keeps a number's decimal value and writes it back without an exponent: "1e+40" comes
    # back as 1 and 40 zeros (read as an int), "-0.0" as 0.0. A float whose text has a positive
    # exponent is always integral (it is at least 1e16); a negative exponent comes back as
    # 0.0000001, which reads as the same float.
    number = float(text)
    if number == 0:
        return 0.0
    if "e" in text.lower() and number.is_integer():
        return int(Decimal(text))
    return number


def stored_json(value: Any) -> Any:
    """``value`` as a JSON column gives it back on SQLite and PostgreSQL alike: tuples as lists,
    keys as strings, other objects as their str() (as the hash has always read them), and
    floats as jsonb rewrites them."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str), parse_float=_stored_number)


def stored_ip(value: str | None) -> str | None:
    """``value`` as the event's ``ip`` column gives it back: an IPv6 address compressed and
    without its scope (fe80::1%eth0 is stored as fe80::1), None for anything that is not an
    address (PostgreSQL's inet would refuse it)."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    address = ipaddress.IPv6Address(int(address))  # the scope goes, as the field drops it
    packed = address.packed
    if connection.vendor == "postgresql" and packed[:12] == bytes(12) and packed[12:14] != bytes(2):
        # inet writes the deprecated IPv4-compatible form ::a.b.c.d where Python writes ::a0b:c0d.
        return f"::{ipaddress.IPv4Address(packed[12:])}"
    return clean_ipv6_address(str(address))


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
        # __class__, not type(): request.user is a lazy object that names the model it wraps.
        target_type, target_id = target.__class__.__name__.lower(), str(getattr(target, "pk", target))
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
        before=stored_json(mask_value(workspace_id, before)),
        after=stored_json(mask_value(workspace_id, after)),
        request_id=(request_id or get_request_id() or "")[:64],
        ip=stored_ip(get_client_ip()),
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


def _is_chain_start(event: AuditEvent, workspace_id: int) -> bool:
    return (event.action in CHAIN_STARTS and event.target_type == "workspace"
            and event.target_id == str(workspace_id))


def _someone_signed_in() -> bool:
    return get_user_model()._default_manager.filter(last_login__isnull=False).exists()


def _missing_chain(workspace_id: int | None) -> str:
    # Every workspace is created with an event ("workspace.create", or "admin.add" in the admin),
    # and every sign-in is recorded on the platform's chain: no events and no head there means
    # the whole chain, head included, was deleted.
    if workspace_id is None:
        return "" if not _someone_signed_in() else (
            "the platform chain is missing although users have signed in: its events and head were deleted")
    if Workspace.objects.filter(pk=workspace_id).exists():
        return "the workspace has no audit events and no head: its whole chain was deleted"
    return ""


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
        if count == 1 and workspace_id is not None and not _is_chain_start(event, workspace_id):
            return AuditVerdict(chain, count, event.pk,
                                f"the chain starts with event {event.pk} ({event.action}), not with the workspace's "
                                "creation: its earlier events and head were deleted and the chain restarted")
        prev, last_id = event.hash, event.pk
    head = AuditHead.objects.filter(chain=chain).first()
    if head is None:
        if count:
            return AuditVerdict(chain, count, last_id, f"the head is missing while {count} events exist")
        return AuditVerdict(chain, 0, None, _missing_chain(workspace_id))
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
    positions without gaps, the sealed head against the newest row, and that the chain exists
    and starts where it must (a workspace's with its creation)."""
    return _verify(workspace.pk if workspace else None)


def audit_verify_all() -> list[AuditVerdict]:
    """Verify every chain there must be or is: each workspace's, the platform's once it has
    events or anyone has signed in, and any chain with events or a head (a head whose events
    are all gone counts)."""
    ids: set[int | None] = set(AuditEvent.objects.order_by().values_list("workspace_id", flat=True).distinct())
    ids.update(Workspace.objects.values_list("pk", flat=True))
    if _someone_signed_in():
        ids.add(None)
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
