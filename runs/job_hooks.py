"""The inbound job webhook, ``POST /hooks/jobs/<public_id>`` (runs/services/job_hooks.py has the
rules): no session, no token; the hook's secret signs the timestamp and the raw body, checked
before the body is read. Answers 202 with the run it started; errors use the API's JSON shape:
404 unknown or revoked hook, 401 missing or wrong signature, 400 a stale timestamp, a body that
is not a JSON object or parameters that do not fit the job (each named), 409 a replay."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from controlroom.api import api_error, json_body
from controlroom.services import ServiceError
from runs.models import JobHook
from runs.services.job_hooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HookRefused,
    hook_parameters,
    hook_verify,
    job_hook_deliver,
)

log = logging.getLogger(__name__)
PUBLIC_ID_MAX = 32


@csrf_exempt
def job_hook_receive(request: HttpRequest, public_id: str) -> JsonResponse:
    """Verify the signature and window, map the body to the job's parameters, start the run."""
    if request.method != "POST":
        return api_error(405, "method_not_allowed", "Use POST.")
    hook = JobHook.objects.select_related("workspace", "job__current_version", "environment").filter(
        public_id=public_id[:PUBLIC_ID_MAX], revoked_at__isnull=True).first() if public_id.isascii() else None
    if hook is None:
        return api_error(404, "not_found", "No such job hook (it may have been revoked).")
    try:
        body = request.body
    except RequestDataTooBig:
        return api_error(413, "too_large", "The hook's payload is too large.")
    signature = request.headers.get(SIGNATURE_HEADER)
    try:
        signed_at = hook_verify(hook=hook, timestamp=request.headers.get(TIMESTAMP_HEADER), signature=signature,
                                body=body)
        try:
            payload = json_body(request) if body.strip() else {}
        except ServiceError as exc:
            raise HookRefused(400, "invalid", str(exc)) from None
        parameters = hook_parameters(hook.job, payload)
        run = job_hook_deliver(hook=hook, signature=signature or "", signed_at=signed_at, parameters=parameters)
    except HookRefused as exc:
        if exc.status == 401:
            log.warning("job hook with a missing or wrong signature", extra={"hook": hook.pk})
        extra = {"errors": exc.errors} if exc.errors else {}
        return api_error(exc.status, exc.code, str(exc), **extra)
    except ServiceError as exc:  # a secret no key decrypts; a job with no version
        return api_error(409 if exc.code == "conflict" else 503, exc.code, str(exc))
    except PermissionDenied as exc:  # the workspace no longer lets the hook's role run in prod
        return api_error(403, "forbidden", str(exc) or "The hook's role may not start runs here.")
    console = request.build_absolute_uri(reverse("runs:run_detail", args=[hook.workspace.slug, run.pk]))
    return JsonResponse({"run": run.pk, "status": run.status, "job": hook.job.slug,
                         "environment": hook.environment.name, "parameters": run.parameters,
                         "console_url": console}, status=202)
