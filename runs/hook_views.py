"""The job page's webhook section: make, rotate and revoke a job's signed hook URLs (operators and
admins; in prod whoever may start runs there). A new secret is shown once, on a page that is
never cached; after that only its URL is shown."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from controlroom.ids import id_parse
from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from runs import selectors
from runs.services.job_hooks import (
    REPLAY_WINDOW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    job_hook_create,
    job_hook_get,
    job_hook_revoke,
    job_hook_rotate,
)


@login_required
@require_POST
def job_hook_action(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    """``action``: create (with ``environment``), rotate or revoke (with ``hook``)."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    obj = selectors.job_get(access=access, slug=job)
    action = request.POST.get("action", "")
    try:
        if action == "create":
            hook, secret = job_hook_create(access=access, job=obj, environment=request.POST.get("environment", ""))
        elif action in ("rotate", "revoke"):
            hook_id = id_parse(request.POST.get("hook"))
            if hook_id is None:
                raise ServiceError("Choose a hook.")
            hook = job_hook_get(access=access, job=obj, hook_id=hook_id)
            if action == "revoke":
                job_hook_revoke(access=access, hook=hook)
                messages.success(request, f"The {hook.environment.name} hook of {obj.slug} is revoked.")
                return redirect("runs:job_detail", workspace=workspace, job=obj.slug)
            hook, secret = job_hook_rotate(access=access, hook=hook)
        else:
            raise ServiceError("Choose create, rotate or revoke.")
    except (ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc) or "Your role does not allow this.")
        return redirect("runs:job_detail", workspace=workspace, job=obj.slug)
    response = render(request, "runs/job_hook_secret.html", {
        "access": access, "workspace": access.workspace, "job": obj, "hook": hook, "secret": secret,
        "url": request.build_absolute_uri(reverse("hook_job", args=[hook.public_id])),
        "timestamp_header": TIMESTAMP_HEADER, "signature_header": SIGNATURE_HEADER, "window_s": REPLAY_WINDOW_S,
        "parameters": (obj.current_version.spec.get("parameters") or {}) if obj.current_version else {},
        "rotated": action == "rotate",
    })
    add_never_cache_headers(response)  # the secret is on this page, once
    return response
