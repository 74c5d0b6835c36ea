"""Inbound job webhooks: a signed URL per job and environment that starts a run (for n8n, Zapier
and similar tools that cannot hold an API token's scopes and roles).

A request is signed Slack/Stripe style: ``X-Controlroom-Timestamp: <unix seconds>`` and
``X-Controlroom-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``. The
timestamp must be within REPLAY_WINDOW_S of now, and each signature is accepted once (a
``JobHookDelivery`` row, kept until the window has passed). The secret is made here, shown once,
and kept encrypted with a key derived from SECRET_KEY (its fallbacks still decrypt after a
rotation of SECRET_KEY). Making, rotating and revoking a hook follow who may start runs in its
environment (``run_trigger_check``) and are audited; so is each accepted delivery.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Environment, Role
from controlroom.services import ServiceError
from runs.models import Job, JobHook, JobHookDelivery, Run
from runs.services.runs import run_create, run_trigger_check
from runs.spec import SpecError, resolve_parameters

REPLAY_WINDOW_S = 300
TIMESTAMP_HEADER = "X-Controlroom-Timestamp"
SIGNATURE_HEADER = "X-Controlroom-Signature"
SIGNATURE_VERSION = "v1"
HOOKS_PER_JOB = 3  # one per environment


class HookRefused(Exception):
    """A delivery that starts nothing: ``status`` and ``code`` for the JSON error, and for a
    payload that does not fit the job's parameters, ``errors`` naming each one."""

    def __init__(self, status: int, code: str, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.errors = status, code, errors or []


@dataclass(frozen=True)
class HookAccess(Access):
    """The access a hook's runs start with: its role, and a label that names the hook."""

    hook_label: str = "hook"

    @property
    def label(self) -> str:
        return self.hook_label


def _fernet() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"runs.job_hook:" + k.encode()).digest()))
                        for k in keys])


def job_hook_secret(hook: JobHook) -> str:
    """The hook's signing secret; ServiceError when no current or former SECRET_KEY decrypts it."""
    try:
        return _fernet().decrypt(hook.secret_encrypted.encode()).decode()
    except InvalidToken:
        raise ServiceError("The hook's secret cannot be decrypted (SECRET_KEY changed without keeping the old "
                           "one in SECRET_KEY_FALLBACKS); rotate the hook's secret.") from None


def _new_secret() -> tuple[str, str]:
    value = "crh_" + secrets.token_urlsafe(32)
    return value, _fernet().encrypt(value.encode()).decode()


def _require_manage(access: Access, environment: Environment) -> None:
    # Whoever may start runs in the environment may make a URL that starts them there, and no one else.
    access.require(Role.OPERATOR)
    run_trigger_check(access=access, environment=environment)


def job_hooks_of(*, access: Access, job: Job) -> list[JobHook]:
    """The job's live hooks (operators and admins see them; no secret in them)."""
    if job.workspace_id != access.workspace.pk or not access.can(Role.OPERATOR):
        return []
    return list(JobHook.objects.filter(job=job, revoked_at__isnull=True).select_related("environment")
                .order_by("environment_id")[:HOOKS_PER_JOB])


def job_hook_get(*, access: Access, job: Job, hook_id: int) -> JobHook:
    """One live hook of ``job`` in the access's workspace, or ServiceError ``not_found``."""
    hook = JobHook.objects.select_related("environment", "job").filter(
        pk=hook_id, job=job, workspace=access.workspace, revoked_at__isnull=True).first()
    if hook is None:
        raise ServiceError("No such hook for this job.", code="not_found")
    return hook


def job_hook_create(*, access: Access, job: Job, environment: str) -> tuple[JobHook, str]:
    """Make the job's hook for ``environment``; returns it with its secret (shown once, never again)."""
    if job.workspace_id != access.workspace.pk:
        raise ServiceError("No such job in this workspace.", code="not_found")
    env = Environment.objects.filter(workspace=access.workspace, name=environment).first()
    if env is None:
        raise ServiceError(f"Unknown environment {environment!r}; use dev, stage or prod.")
    _require_manage(access, env)
    secret, encrypted = _new_secret()
    try:
        with transaction.atomic():
            hook = JobHook.objects.create(
                workspace=access.workspace, job=job, environment=env, public_id=secrets.token_urlsafe(18),
                secret_encrypted=encrypted, role=Role.ADMIN if access.can(Role.ADMIN) else Role.OPERATOR,
                created_by=access.user if access.user is not None and access.user.pk else None)
            audit_record(access=access, action="job_hook.create", target=hook,
                         after={"job": job.slug, "environment": env.name, "role": hook.role})
    except IntegrityError:
        raise ServiceError(f"{job.slug} already has a hook in {env.name}; rotate its secret or revoke it first.",
                           code="conflict") from None
    return hook, secret


def job_hook_rotate(*, access: Access, hook: JobHook) -> tuple[JobHook, str]:
    """A new secret for the hook (same URL); the old one stops working at once. Returns the new one."""
    _require_manage(access, hook.environment)
    secret, encrypted = _new_secret()
    with transaction.atomic():
        if not JobHook.objects.filter(pk=hook.pk, workspace=access.workspace, revoked_at__isnull=True).update(
                secret_encrypted=encrypted, rotated_at=timezone.now()):
            raise ServiceError("This hook was revoked.", code="conflict")
        hook.refresh_from_db()
        audit_record(access=access, action="job_hook.rotate", target=hook,
                     after={"job": hook.job.slug, "environment": hook.environment.name})
    return hook, secret


def job_hook_revoke(*, access: Access, hook: JobHook) -> None:
    """Revoke the hook: its URL answers 404 from now on."""
    _require_manage(access, hook.environment)
    with transaction.atomic():
        if not JobHook.objects.filter(pk=hook.pk, workspace=access.workspace, revoked_at__isnull=True).update(
                revoked_at=timezone.now()):
            raise ServiceError("This hook is already revoked.", code="conflict")
        audit_record(access=access, action="job_hook.revoke", target=hook,
                     before={"job": hook.job.slug, "environment": hook.environment.name})


def hook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (what a sender computes)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def hook_verify(*, hook: JobHook, timestamp: str | None, signature: str | None, body: bytes,
                now: dt.datetime | None = None) -> dt.datetime:
    """Check the signature over ``<timestamp>.<body>``, then the timestamp's window; returns the
    signed time. The signature is checked first, so the answer says nothing of a forged one's time."""
    if not timestamp or not signature:
        raise HookRefused(401, "bad_signature", f"Sign the request: send {TIMESTAMP_HEADER} (unix seconds) and "
                          f"{SIGNATURE_HEADER} ({SIGNATURE_VERSION}=<hex HMAC-SHA256 of '<timestamp>.<body>'>).")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise HookRefused(401, "bad_signature", f"{TIMESTAMP_HEADER} must be unix seconds.")
    expected = hook_signature(job_hook_secret(hook), timestamp, body)
    offered = [part.strip() for part in signature.split(",")]  # several during a sender's own rotation
    if not any(hmac.compare_digest(part.encode(), expected.encode()) for part in offered if part.isascii()):
        raise HookRefused(401, "bad_signature", "The signature does not match this hook's secret.")
    signed_at = dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)
    now = now or timezone.now()
    if abs((now - signed_at).total_seconds()) > REPLAY_WINDOW_S:
        raise HookRefused(400, "stale_timestamp", f"The signed timestamp is more than {REPLAY_WINDOW_S} s away "
                          "from the server's clock: sign each request when it is sent (and check the clock).")
    return signed_at


def hook_parameters(job: Job, payload: Any) -> dict[str, Any]:
    """The JSON body as the job's typed parameters: an object whose keys are parameter names;
    HookRefused (400) naming each unknown key and each value of the wrong type."""
    if not isinstance(payload, dict):
        raise HookRefused(400, "invalid", "The body must be a JSON object of the job's parameters.")
    version = job.current_version
    if version is None:
        raise HookRefused(409, "conflict", "This job has no version to run.")
    declared = version.spec.get("parameters") or {}
    unknown = sorted(set(payload) - set(declared))
    errors = [f"unknown parameter '{name}'" for name in unknown[:20]]
    try:
        resolved = resolve_parameters(version.spec, {k: v for k, v in payload.items() if k in declared})
    except SpecError as exc:
        errors += exc.errors
        resolved = {}
    if errors:
        takes = ", ".join(f"{name} ({p['type']})" for name, p in sorted(declared.items())) or "no parameters"
        raise HookRefused(400, "invalid_parameters", f"{'; '.join(errors)}. {job.slug} takes {takes}.", errors)
    return resolved


def job_hook_deliver(*, hook: JobHook, signature: str, signed_at: dt.datetime, parameters: dict[str, Any]) -> Run:
    """Start the run of a verified delivery, once per signature (HookRefused 409 for a replay),
    as the hook's role, and audit the delivery beside the run's own ``run.create``."""
    access = HookAccess(workspace=hook.workspace, role=hook.role, hook_label=f"hook:{hook.public_id[:8]}")
    now = timezone.now()
    digest = hashlib.sha256(signature.encode()).hexdigest()
    JobHookDelivery.objects.filter(hook=hook, expires_at__lt=now).delete()  # past the window: a replay is stale
    try:
        with transaction.atomic():
            delivery = JobHookDelivery.objects.create(
                hook=hook, signature_sha256=digest, received_at=now,
                expires_at=signed_at + dt.timedelta(seconds=REPLAY_WINDOW_S + 1))
            run = run_create(access=access, job=hook.job, environment=hook.environment.name, parameters=parameters,
                             trigger=Run.Trigger.API)
            JobHookDelivery.objects.filter(pk=delivery.pk).update(run=run)
            JobHook.objects.filter(pk=hook.pk).update(last_used_at=now)
            audit_record(access=access, action="job_hook.deliver", target=hook,
                         after={"job": hook.job.slug, "environment": hook.environment.name, "run": run.pk,
                                "parameters": parameters})
    except IntegrityError:
        if JobHookDelivery.objects.filter(hook=hook, signature_sha256=digest).exists():
            raise HookRefused(409, "replayed", "This signed request was already accepted; sign each delivery "
                              "anew (a new timestamp).") from None
        raise
    return run
