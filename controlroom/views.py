"""Platform pages: home and the API token page of a workspace (probes: controlroom/health.py)."""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from controlroom.access import Access
from controlroom.ids import id_parse
from controlroom.models import ApiToken, Role
from controlroom.selectors import workspace_access, workspaces_for_user
from controlroom.services import ServiceError, api_token_create, api_token_revoke

EXPIRY_CHOICES = (7, 30, 90, 365)  # days offered by the token form; a date may name another


@login_required
def home(request: HttpRequest) -> HttpResponse:
    workspaces = list(workspaces_for_user(user=request.user))
    if len(workspaces) == 1:
        return redirect("runs:overview", workspace=workspaces[0].slug)
    return render(request, "controlroom/home.html", {"workspaces": workspaces,
                                                     "sso_groups": request.session.get("sso_groups")})


def _token_expiry(data: QueryDict) -> dt.datetime | int | None:
    """The posted expiry: a date (valid through that day, UTC), a number of days, or none."""
    on, days = data.get("expires_on", "").strip(), data.get("expires_in", "").strip()
    if on:
        try:
            day = dt.date.fromisoformat(on)
            return dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
        except (ValueError, OverflowError):  # 9999-12-31 has no next day
            raise ServiceError("The expiry date must be YYYY-MM-DD, at most two years from now.") from None
    if days:
        if id_parse(days) is None:
            raise ServiceError("Choose a valid expiry.")
        return int(days)
    return None


def _token_revoke(request: HttpRequest, access: Access) -> None:
    token_id = id_parse(request.POST.get("revoke"))
    token = ApiToken.objects.filter(workspace=access.workspace, pk=token_id).first() if token_id else None
    if token is None:
        messages.error(request, "That token does not exist in this workspace.")
        return
    try:
        api_token_revoke(access=access, token=token)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Token {token.name} revoked.")


# The token form's scopes: (value, what it allows, checked by default: a CI token's).
SCOPE_CHOICES = (
    ("runs:read", "read jobs, runs, events and tables", True),
    ("runs:write", "create jobs, trigger, cancel and rerun runs", True),
    ("executor", "act as an executor: claim phases, heartbeat, send events and artifacts, complete", False),
    ("sql:read", "read its SQL history and results, and tables", False),
    ("sql:write", "run SQL", False),
    ("admin", "act with the admin role (without it an admin token acts as an operator)", False),
    ("compute:sql", "IDE API: run SQL (/api/v1/compute/sql) and read those executions", False),
    ("compute:job", "IDE API: trigger jobs and pipelines (/api/v1/compute/job, /api/v1/pipelines/run)", False),
)


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    new_value = None
    if request.method == "POST":
        if "revoke" in request.POST:
            _token_revoke(request, access)
            return redirect("token_list", workspace=workspace)
        try:
            _, new_value = api_token_create(
                access=access, name=request.POST.get("name", ""), role=request.POST.get("role", Role.OPERATOR),
                expires_at=_token_expiry(request.POST), scopes=request.POST.getlist("scopes"),
            )
        except (ServiceError, ValueError) as exc:
            messages.error(request, str(exc) if isinstance(exc, ServiceError) else "Choose a valid role.")
    tokens = ApiToken.objects.filter(workspace=access.workspace).order_by("-id")[:200]
    response = render(request, "controlroom/tokens.html", {
        "access": access, "workspace": access.workspace, "tokens": tokens, "new_value": new_value,
        "roles": Role.choices, "expiry_days": EXPIRY_CHOICES, "now": timezone.now(), "section": "tokens",
        "scopes": SCOPE_CHOICES,
    })
    if new_value:
        add_never_cache_headers(response)  # the token's value is on this page, once
    return response
