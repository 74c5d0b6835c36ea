"""The executor contract over HTTP, under /api/v1/ops/ (the token names the workspace).

Celery workers call the same services in-process; outside agents (CI, scripts, the
standalone executor) use these endpoints. A stale lease token answers 409 and writes nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from artifacts.uploads import StagingUploadHandler
from controlroom.access import Access
from controlroom.api import api_error, api_view, json_body
from controlroom.models import MAX_DB_ID, Role
from controlroom.services import ServiceError, api_token_live
from runs import selectors
from runs.api import events_page, idempotency_key, run_json, runs_page
from runs.models import Phase, Run
from runs.openapi import document
from runs.services.events import events_append_batch
from runs.services.leases import phase_claim_next, phase_heartbeat, phase_require_live
from runs.services.outputs import phase_artifact_add
from runs.services.phases import phase_complete
from runs.services.reruns import run_rerun
from runs.services.runs import run_cancel, run_create
from runs.spec import typed_parameters

MAX_WAIT_S = 30
POLL_S = 0.25
# Long polls hold a web thread for their whole wait: at most this many at once per process, so
# idle executors (or one token sending many) cannot take every thread; the others answer at once.
_LONG_POLLS = threading.BoundedSemaphore(max(1, settings.CLAIM_LONG_POLLS_PER_PROCESS))


def openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(document(request.build_absolute_uri("/api/v1/ops")))


def _int(body: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:  # absent or null: the default
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DB_ID:
        raise ServiceError(f"'{key}' must be a whole number.")
    return value


def _phase(access: Access, phase_id: int) -> Phase:
    return get_object_or_404(Phase.objects.select_related("run"), pk=phase_id, run__workspace=access.workspace)


def _token(body: dict[str, Any]) -> str:
    token = body.get("lease_token")
    if not isinstance(token, str) or not token:
        raise ServiceError("'lease_token' is required.")
    return token


def runs_create(request: HttpRequest, access: Access) -> JsonResponse:
    access.require(Role.OPERATOR)
    body = json_body(request)
    slug = body.get("job") or body.get("spec_slug")
    if not isinstance(slug, str):
        raise ServiceError("Name the job to run in 'job' (or 'spec_slug').")
    job = selectors.job_get(access=access, slug=slug)
    git_sha = body.get("git_sha")
    if git_sha and (job.current_version is None or not job.current_version.git_sha.startswith(str(git_sha).lower())):
        raise ServiceError(f"The current version of {slug} is not at git sha {git_sha}.", code="conflict")
    for key in ("parameters", "input_manifest"):
        if not isinstance(body.get(key) or {}, dict):
            raise ServiceError(f"'{key}' must be a JSON object.")
    run = run_create(access=access, job=job, environment=str(body.get("environment") or "dev"),
                     parameters=body.get("parameters") or {}, trigger=Run.Trigger.API,
                     idempotency_key=idempotency_key(request), input_manifest=body.get("input_manifest") or {})
    return JsonResponse(run_json(run), status=200 if run.replayed else 201)


@api_view(("POST",), Role.OPERATOR, "executor")
def claim(request: HttpRequest, access: Access) -> HttpResponse:
    body = json_body(request)
    executor, kinds = body.get("executor"), body.get("kinds")
    if not isinstance(executor, str) or not executor.strip():
        raise ServiceError("'executor' must name this executor.")
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise ServiceError("'kinds' must list the phase kinds this executor runs.")
    run_id, wait = _int(body, "run"), _int(body, "wait", 0)
    if not 0 <= wait <= MAX_WAIT_S:
        raise ServiceError(f"'wait' must be between 0 and {MAX_WAIT_S} seconds.")
    got = phase_claim_next(workspace=access.workspace, worker=executor.strip(), kinds=kinds, run_id=run_id)
    if got is None and wait and _LONG_POLLS.acquire(blocking=False):
        try:
            deadline = time.monotonic() + wait
            while got is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
                if access.token is not None and not api_token_live(access.token):  # revoked or expired meanwhile
                    return api_error(401, "unauthenticated", "The API token was revoked or expired.")
                got = phase_claim_next(workspace=access.workspace, worker=executor.strip(), kinds=kinds,
                                       run_id=run_id)
        finally:
            _LONG_POLLS.release()
    if got is None:
        return HttpResponse(status=204)
    phase, token = got
    return JsonResponse({
        "phase": {"id": phase.pk, "name": phase.name, "kind": phase.kind, "config": phase.config,
                  "attempt": phase.attempt, "max_attempts": phase.max_attempts, "timeout_s": phase.timeout_s},
        "run": {"id": phase.run_id, "git_sha": phase.run.git_sha,
                "parameters": typed_parameters(phase.run.job_version.spec, phase.run.parameters),
                "input_manifest": phase.run.input_manifest, "environment": phase.run.environment.name},
        "lease_token": token, "lease_expires_at": phase.lease_expires_at.isoformat(),
        "lease_ttl_s": settings.PHASE_LEASE_TTL_S,
    })


@api_view(("POST",), Role.OPERATOR, "executor")
def heartbeat(request: HttpRequest, access: Access, phase_id: int) -> JsonResponse:
    phase = _phase(access, phase_id)
    cancel = phase_heartbeat(phase_id=phase.pk, lease_token=_token(json_body(request)))
    phase.refresh_from_db(fields=["lease_expires_at"])
    return JsonResponse({"cancel_requested": cancel, "lease_expires_at": phase.lease_expires_at.isoformat(),
                         "lease_ttl_s": settings.PHASE_LEASE_TTL_S})


@api_view(("GET", "POST"), Role.VIEWER, {"GET": ("runs:read", "executor"), "POST": "executor"})
def events_dispatch(request: HttpRequest, access: Access, run_id: int) -> JsonResponse:
    """GET reads the run's events after a cursor; POST appends an executor's batch."""
    if request.method == "GET":
        return events_page(request, access, run_id)
    access.require(Role.OPERATOR)
    run = selectors.run_get(access=access, run_id=run_id)
    result = events_append_batch(run=run, events=json_body(request).get("events"))
    run.refresh_from_db(fields=["last_seq"])
    return JsonResponse({**result, "last_seq": run.last_seq})


LEASE_HEADER = "X-Lease-Token"


def _upload_body(request: HttpRequest, phase_id: int) -> tuple[dict[str, Any], str, StagingUploadHandler]:
    """The fields of a multipart upload, its lease token and the handler holding the staged bytes.
    The lease (from the header) and the announced length are checked before the body is read."""
    token = request.headers.get(LEASE_HEADER, "")
    if not token:
        raise ServiceError(f"Send the lease token in the {LEASE_HEADER} header with an upload: it is checked "
                           "before the body is read.")
    limit = settings.ARTIFACT_UPLOAD_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ServiceError("The Content-Length header is not a number.") from None
    if length > limit:
        raise ServiceError(f"The upload is {length:,} bytes; the limit is {limit:,} (ARTIFACT_UPLOAD_MAX_BYTES).",
                           code="too_large")
    phase_require_live(phase_id=phase_id, lease_token=token)
    handler = StagingUploadHandler(request, max_bytes=limit)
    request.upload_handlers = [handler]
    try:
        body = request.POST.dict()
        if handler.too_large:
            raise ServiceError(f"The upload is larger than {limit:,} bytes (ARTIFACT_UPLOAD_MAX_BYTES).",
                               code="too_large")
        if body.get("lease_token", token) != token:
            raise ServiceError(f"The lease_token field and the {LEASE_HEADER} header differ.")
    except BaseException:
        handler.discard()
        raise
    return body, token, handler


@api_view(("POST",), Role.OPERATOR, "executor")
def artifacts(request: HttpRequest, access: Access, phase_id: int) -> JsonResponse:
    """JSON {lease_token, name, sha256, size, media_type, location?} registers by hash or location;
    a multipart upload sends the same fields with the bytes in 'file' and the lease token in the
    X-Lease-Token header. Either way the lease is checked again inside the write's transaction."""
    phase = _phase(access, phase_id)
    staged = None
    if request.content_type == "multipart/form-data":
        body, token, handler = _upload_body(request, phase.pk)
        staged = handler.staged
    else:
        body = json_body(request)
        token = _token(body)
    artifact = phase_artifact_add(
        access=access, phase_id=phase.pk, lease_token=token, name=body.get("name"),
        media_type=body.get("media_type") or "", sha256=body.get("sha256"), size=body.get("size"),
        location=body.get("location") or "", staged=staged,
    )
    return JsonResponse({"id": artifact.pk, "name": artifact.name, "sha256": artifact.sha256,
                         "size": artifact.size, "location": artifact.location}, status=201)


@api_view(("POST",), Role.OPERATOR, "executor")
def complete(request: HttpRequest, access: Access, phase_id: int) -> JsonResponse:
    phase = _phase(access, phase_id)
    body = json_body(request)
    outcome, output = body.get("outcome"), body.get("output") or {}
    if outcome not in ("succeeded", "failed", "cancelled"):
        raise ServiceError("'outcome' must be succeeded, failed or cancelled.")
    if not isinstance(output, dict):
        raise ServiceError("'output' must be a JSON object.")
    done = phase_complete(phase=phase, lease_token=_token(body), succeeded=outcome == "succeeded",
                          cancelled=outcome == "cancelled", error=str(body.get("error") or ""), output=output)
    run = Run.objects.get(pk=done.run_id)
    return JsonResponse({"phase": {"id": done.pk, "state": done.state, "attempt": done.attempt},
                         "run": {"id": run.pk, "status": run.status}})


@api_view(("POST",), Role.OPERATOR, "runs:write")
def cancel(request: HttpRequest, access: Access, run_id: int) -> JsonResponse:
    run = run_cancel(access=access, run=selectors.run_get(access=access, run_id=run_id))
    return JsonResponse(run_json(run))


@api_view(("POST",), Role.OPERATOR, "runs:write")
def rerun(request: HttpRequest, access: Access, run_id: int) -> JsonResponse:
    """{"mode": "retry"} re-runs failed and skipped phases; {"mode": "repair", "phases": [...]} the
    named phases and their downstream; {"mode": "rebuild"} runs all again."""
    original = selectors.run_get(access=access, run_id=run_id)
    body = json_body(request)
    phases = body.get("phases") or []
    if not isinstance(phases, list) or not all(isinstance(p, str) for p in phases):
        raise ServiceError("phases must be a list of phase names.")
    new = run_rerun(access=access, run=original, mode=str(body.get("mode") or ""), phases=phases[:500])
    return JsonResponse(run_json(new), status=201)


@api_view(("GET",), Role.VIEWER, ("runs:read", "executor"))  # executors poll it for a cancel
def run_detail(request: HttpRequest, access: Access, run_id: int) -> JsonResponse:
    return JsonResponse(run_json(selectors.run_get(access=access, run_id=run_id)))


@api_view(("GET", "POST"), Role.VIEWER, {"GET": "runs:read", "POST": "runs:write"})
def runs_collection(request: HttpRequest, access: Access) -> JsonResponse:
    return runs_create(request, access) if request.method == "POST" else runs_page(request, access)
