"""Error pages that speak JSON where the caller does: under /api/ (and /hooks/) every answer is
the API's JSON error shape, including paths that match no URL and ids that are not numbers;
everywhere else Django's own pages answer."""

from __future__ import annotations

import logging
import re

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import defaults

from controlroom.api import api_error

log = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/hooks/", "/v1/")
WORKSPACE_PATH = re.compile(r"^/w/([-a-zA-Z0-9_]+)/")


def _json(request: HttpRequest) -> bool:
    return request.path.startswith(JSON_PREFIXES) or request.path in ("/api", "/hooks", "/v1")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _json(request):
        return api_error(404, "not_found", "There is no such API path or object; see /api/v1/ops/openapi.json.")
    return _page(request, "404.html", 404, exception, "There is nothing here, or you may not see it.")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _json(request):
        return api_error(400, "invalid", "The request could not be read.")
    return defaults.bad_request(request, exception)


def forbidden(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _json(request):
        return api_error(403, "forbidden", str(exception) or "Your role does not allow this.")
    return _page(request, "403.html", 403, exception, "Your role does not allow this.")


def server_error(request: HttpRequest) -> HttpResponse:
    if _json(request):
        return api_error(500, "internal", "Something went wrong on our side; the request id names it.")
    return defaults.server_error(request)


def _page(request: HttpRequest, template: str, status: int, exception: Exception, default: str) -> HttpResponse:
    """The error inside the console's frame: the navigation of the workspace in the path stays,
    for a member of it (an outsider gets the bare frame, so a 404 says nothing of the workspace)."""
    context = {"message": _message(exception) or default}
    context.update(_workspace_context(request))
    try:
        return render(request, template, context, status=status)
    except Exception:  # the error page must never fail in turn
        log.exception("could not render the %s page", status)
        view = defaults.page_not_found if status == 404 else defaults.permission_denied
        return view(request, exception)


def _message(exception: Exception) -> str:
    """Our own 404/403 messages are written for users; Django's resolver detail is not."""
    if exception is None or not exception.args or not isinstance(exception.args[0], str):
        return ""
    return exception.args[0][:300]


def _workspace_context(request: HttpRequest) -> dict:
    from controlroom.access import Access
    from controlroom.models import Membership

    match = WORKSPACE_PATH.match(request.path)
    user = getattr(request, "user", None)
    if match is None or user is None or not user.is_authenticated:
        return {}
    membership = Membership.objects.select_related("workspace").filter(
        workspace__slug=match.group(1), user=user).first()
    if membership is None:
        return {}
    return {"workspace": membership.workspace,
            "access": Access(workspace=membership.workspace, role=membership.role, user=user)}
