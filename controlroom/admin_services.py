"""Writes made through the admin site: each one saves or deletes and audits in one transaction,
with the admin user as actor, on the chain of the object's workspace (or the platform's).

``controlroom.admin_audit.AuditedAdminMixin`` routes every ModelAdmin write here; before and
after are field snapshots with secrets (password hashes, token hashes, lease tokens) redacted and
URLs recorded without their credentials (a git token typed into a source's URL)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import FieldDoesNotExist
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, router, transaction
from django.db.models.deletion import Collector

from controlroom.audit import AuditTarget, audit_record
from controlroom.models import Workspace
from controlroom.redact import json_url_credentials_removed

T = TypeVar("T")
REDACTED = "[redacted]"
REDACTED_CHANGED = "[redacted, changed]"
# Fields whose value is a secret or stands in for one, whatever model holds them.
SECRET_FIELDS = frozenset({"password", "token_hash", "lease_token"})
MAX_TEXT = 2000  # an event keeps this much of a long value: an audit row stays small
MAX_RELATED = 1000  # ids kept of one many-to-many field
_OWNER_FIELDS = ("workspace", "environment", "run", "job", "source")


class _SnapshotEncoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        try:
            return super().default(o)
        except TypeError:  # bytes, files, anything else: its repr is enough to see a change
            return repr(o)


def _bounded(value: Any) -> Any:
    # A long value keeps its start, its length and its digest: a change past the cut still shows.
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) <= MAX_TEXT or not isinstance(value, (str, dict, list)):
        return value
    return {"truncated": text[:MAX_TEXT], "length": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _recorded(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    # Credentials go before the cut, so neither the kept start nor the digest covers them.
    if snapshot is None:
        return None
    return {name: _bounded(json_url_credentials_removed(value)) for name, value in snapshot.items()}


def object_snapshot(obj: models.Model) -> dict[str, Any]:
    """An object's concrete fields (foreign keys as ids) and many-to-many ids, JSON-safe, whole
    (compared to find a change) and secrets not yet redacted (see ``_as_recorded``)."""
    values = {field.name: field.value_from_object(obj) for field in obj._meta.concrete_fields}
    data = json.loads(json.dumps(values, cls=_SnapshotEncoder))
    if obj.pk is not None and not obj._state.adding:
        for field in obj._meta.many_to_many:
            data[field.name] = list(getattr(obj, field.name).order_by("pk").values_list("pk", flat=True)[:MAX_RELATED])
    return data


def _as_recorded(before: dict | None, after: dict | None,
                 secret_fields: Iterable[str]) -> tuple[dict | None, dict | None]:
    # What is recorded: URLs without credentials, long values cut, and secrets said to have
    # changed without either value.
    before, after = _recorded(before), _recorded(after)
    for name in SECRET_FIELDS.union(secret_fields):
        old = before.get(name) if before else None
        if before and name in before:
            before[name] = REDACTED
        if after and name in after:
            after[name] = REDACTED_CHANGED if before is not None and after[name] != old else REDACTED
    return before, after


def workspace_of(obj: models.Model, _depth: int = 0) -> Workspace | None:
    """The workspace whose chain records a change to ``obj``: the workspace itself, or the one it
    belongs to through its workspace, environment, run, job or git source; None (the platform's
    chain) for platform-level objects such as users."""
    if isinstance(obj, Workspace):
        return obj
    if _depth > 3:
        return None
    for name in _OWNER_FIELDS:
        try:
            field = obj._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        if field.is_relation and field.concrete and (field.many_to_one or field.one_to_one):
            owner = getattr(obj, name, None)
            if owner is not None:
                return workspace_of(owner, _depth + 1)
    return None


def _cascade_counts(obj: models.Model) -> dict[str, int]:
    # What deleting ``obj`` takes along (memberships of a deleted user, a run's phases), counted
    # before it goes, so the one event says so.
    collector = Collector(using=router.db_for_write(type(obj)), origin=obj)
    collector.collect([obj])
    counts: dict[str, int] = {}
    for model, instances in collector.data.items():
        counts[model._meta.label] = counts.get(model._meta.label, 0) + len(instances)
    for batch in collector.fast_deletes:  # querysets, or lists of instances
        is_queryset = isinstance(batch, models.QuerySet)
        label = (batch.model if is_queryset else type(batch[0]))._meta.label
        counts[label] = counts.get(label, 0) + (batch.count() if is_queryset else len(batch))
    counts[type(obj)._meta.label] = counts.get(type(obj)._meta.label, 1) - 1
    return {label: n for label, n in sorted(counts.items()) if n}


def _stored(obj: models.Model) -> models.Model | None:
    if obj.pk is None or obj._state.adding:
        return None
    return type(obj)._base_manager.filter(pk=obj.pk).first()


def admin_object_save(
    *, actor: AbstractBaseUser, obj: models.Model, write: Callable[[], T] | None = None,
    action: str | None = None, secret_fields: Iterable[str] = (),
) -> T | None:
    """Save ``obj`` the way the admin does (``write``; by default ``obj.save()``) and audit what
    changed as "admin.add" or "admin.change" (or ``action``), in one transaction. Returns what
    ``write`` returned. Nothing is recorded when the stored object did not change (a form
    saved untouched, a password form that did not validate)."""
    model = type(obj)
    with transaction.atomic(using=router.db_for_write(model)):
        stored = _stored(obj)
        before = object_snapshot(stored) if stored is not None else None
        old_workspace = workspace_of(stored) if stored is not None else None
        result = write() if write is not None else obj.save()
        fresh = model._base_manager.filter(pk=obj.pk).first()
        if fresh is None:  # the write removed it (an admin may do anything in save_model)
            return result
        after = object_snapshot(fresh)
        if before == after:
            return result
        action = action or ("admin.add" if before is None else "admin.change")
        redacted_before, redacted_after = _as_recorded(before, after, secret_fields)
        workspace = workspace_of(fresh)
        # An object moved to another workspace leaves a trace in the chain it left as well.
        chains = [workspace] if stored is None or old_workspace == workspace else [old_workspace, workspace]
        for chain_workspace in chains:
            audit_record(access=None, actor=actor, action=action, target=fresh, workspace=chain_workspace,
                         before=redacted_before, after=redacted_after)
    return result


def admin_objects_delete(
    *, actor: AbstractBaseUser, objects: Iterable[models.Model], write: Callable[[], Any] | None = None,
    secret_fields: Iterable[str] = (),
) -> None:
    """Delete ``objects`` (``write`` deletes them all; by default each is deleted in turn) and
    audit each as "admin.delete" with its last state and what was deleted with it, in one
    transaction."""
    objects = list(objects)
    if not objects:
        return
    with transaction.atomic(using=router.db_for_write(type(objects[0]))):
        records = []
        for obj in objects:
            stored = _stored(obj) or obj
            before, _ = _as_recorded(object_snapshot(stored), None, secret_fields)
            cascade = _cascade_counts(stored)
            records.append((AuditTarget.of(obj), workspace_of(stored), before,
                            {"deleted_with": cascade} if cascade else None))
        if write is not None:
            write()
        else:
            for obj in objects:
                obj.delete()
        for target, workspace, before, after in records:
            audit_record(access=None, actor=actor, action="admin.delete", target=target, workspace=workspace,
                         before=before, after=after)


def admin_object_delete(*, actor: AbstractBaseUser, obj: models.Model, write: Callable[[], Any] | None = None,
                        secret_fields: Iterable[str] = ()) -> None:
    """Delete one object (``write``, by default ``obj.delete()``) and audit it; see
    ``admin_objects_delete``."""
    admin_objects_delete(actor=actor, objects=[obj], write=write, secret_fields=secret_fields)


def admin_action_run(
    *, actor: AbstractBaseUser, name: str, queryset: models.QuerySet, run: Callable[[], T],
    secret_fields: Iterable[str] = (),
) -> T:
    """Run an admin action over ``queryset`` and audit it as "admin.action.<name>", in one
    transaction: one event per object it changed or removed, or, when it changed no row but
    finished (returned no page of its own, such as "run selected tasks"), one per object."""
    model = queryset.model
    with transaction.atomic(using=router.db_for_write(model)):
        selected = list(queryset.all())
        before = {obj.pk: object_snapshot(obj) for obj in selected}
        result = run()
        fresh = {obj.pk: obj for obj in model._base_manager.filter(pk__in=list(before))}
        after = {pk: object_snapshot(obj) for pk, obj in fresh.items()}
        changed = [obj for obj in selected if after.get(obj.pk) != before[obj.pk]]
        if not changed and result is None:
            changed = selected
        for obj in changed:
            redacted_before, redacted_after = _as_recorded(before[obj.pk], after.get(obj.pk), secret_fields)
            current = fresh.get(obj.pk, obj)
            audit_record(access=None, actor=actor, action=f"admin.action.{name}", target=AuditTarget.of(obj),
                         workspace=workspace_of(current), before=redacted_before, after=redacted_after)
    return result


def admin_formset_save(*, actor: AbstractBaseUser, formset: Any, secret_fields: Iterable[str] = ()) -> None:
    """Save an inline formset object by object, auditing each added, changed and deleted row."""
    with transaction.atomic():
        instances = formset.save(commit=False)
        admin_objects_delete(actor=actor, objects=formset.deleted_objects, secret_fields=secret_fields)
        for obj in instances:
            admin_object_save(actor=actor, obj=obj, secret_fields=secret_fields)
        formset.save_m2m()
