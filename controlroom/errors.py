"""Error pages that speak JSON where the caller does: under /api/ (and /hooks/) every answer is
the API's JSON error shape, including paths that match no URL and ids that are not numbers;
everywhere else Django's own pages answer."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.views import defaults

from controlroom.api import api_error

log = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/hooks/")


def _json(request: HttpRequest) -> bool:
    return request.path.startswith(JSON_PREFIXES) or request.path in ("/api", "/hooks")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _json(request):
        return api_error(404, "not_found", "There is no such API path or object; see /api/v1/ops/openapi.json.")
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _json(request):
        return api_error(400, "invalid", "The request could not be read.")
    return defaults.bad_request(request, exception)


def forbidden(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _json(request):
        return api_error(403, "forbidden", str(exception) or "Your role does not allow this.")
    return defaults.permission_denied(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _json(request):
        return api_error(500, "internal", "Something went wrong on our side; the request id names it.")
    return defaults.server_error(request)
