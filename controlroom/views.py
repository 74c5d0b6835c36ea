"""Platform pages: home, health, and the API token page of a workspace."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from controlroom.models import ApiToken, Role
from controlroom.selectors import workspace_access, workspaces_for_user
from controlroom.services import ServiceError, api_token_create, api_token_revoke


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@login_required
def home(request: HttpRequest) -> HttpResponse:
    workspaces = list(workspaces_for_user(user=request.user))
    if len(workspaces) == 1:
        return redirect("runs:job_list", workspace=workspaces[0].slug)
    return render(request, "controlroom/home.html", {"workspaces": workspaces})


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    new_value = None
    if request.method == "POST":
        if "revoke" in request.POST:
            token = get_object_or_404(ApiToken, workspace=access.workspace, pk=request.POST["revoke"])
            api_token_revoke(access=access, token=token)
            messages.success(request, f"Token {token.name} revoked.")
            return redirect("token_list", workspace=workspace)
        try:
            _, new_value = api_token_create(
                access=access, name=request.POST.get("name", ""), role=request.POST.get("role", Role.OPERATOR)
            )
        except (ServiceError, ValueError) as exc:
            messages.error(request, str(exc) if isinstance(exc, ServiceError) else "Choose a valid role.")
    tokens = ApiToken.objects.filter(workspace=access.workspace).order_by("-id")[:200]
    return render(request, "controlroom/tokens.html", {
        "access": access, "workspace": access.workspace, "tokens": tokens, "new_value": new_value,
        "roles": Role.choices,
    })
