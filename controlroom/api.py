"""The JSON API's shared plumbing: bearer-token auth and one error shape.

Every error is {"error": {"code": ..., "message": ...}} with a 4xx status; unexpected
failures are logged with the request id and answer a 500 in the same shape."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from controlroom.models import MAX_DB_ID
from controlroom.services import ServiceError, api_token_authenticate

log = logging.getLogger(__name__)
_STATUS = {"invalid": 400, "conflict": 409, "stale_lease": 409, "not_found": 404}


def api_error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def cursor_param(request: HttpRequest, name: str) -> int | None:
    """A non-negative integer query parameter (a pagination cursor), or None when absent."""
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > MAX_DB_ID:
        raise ServiceError(f"'{name}' must be a whole number up to {MAX_DB_ID}.")
    return int(raw)


def json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise ServiceError("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ServiceError("The request body must be a JSON object.")
    _refuse_nul(body)
    return body


def _refuse_nul(value: Any) -> None:
    # PostgreSQL text cannot hold NUL; refuse it at the edge rather than fail in the database.
    if isinstance(value, str):
        if "\x00" in value:
            raise ServiceError("Text must not contain NUL (\\u0000) characters.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key)
            _refuse_nul(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_nul(item)


def api_view(methods: tuple[str, ...], minimum: str) -> Callable:
    """Authenticate the bearer token, check the workspace and role, map errors to JSON.

    Under /api/v1/workspaces/<slug>/ the slug must be the token's workspace; under
    /api/v1/ops/ the token alone names the workspace."""

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, workspace: str | None = None, **kwargs: Any) -> JsonResponse:
            from runs.spec import SpecError

            if request.method not in methods:
                return api_error(405, "method_not_allowed", f"Use {' or '.join(methods)}.")
            header = request.headers.get("Authorization", "")
            access = api_token_authenticate(header[7:].strip()) if header.startswith("Bearer ") else None
            if access is None:
                return api_error(401, "unauthenticated", "Send a valid API token as 'Authorization: Bearer …'.")
            if workspace is not None and access.workspace.slug != workspace:
                return api_error(404, "not_found", "No such workspace.")
            if any(isinstance(v, int) and not 0 < v <= MAX_DB_ID for v in kwargs.values()):
                return api_error(404, "not_found", "Not found.")
            try:
                _refuse_nul(dict(request.GET.items()))
                if request.content_type == "multipart/form-data":
                    _refuse_nul(dict(request.POST.items()))
                access.require(minimum)
                return view(request, access, *args, **kwargs)
            except SpecError as exc:
                return api_error(400, "invalid_spec", str(exc), errors=exc.errors)
            except ServiceError as exc:
                return api_error(_STATUS.get(exc.code, 400), exc.code, str(exc))
            except PermissionDenied as exc:
                return api_error(403, "forbidden", str(exc) or "Your role does not allow this.")
            except Http404 as exc:
                return api_error(404, "not_found", str(exc) or "Not found.")
            except Exception:
                log.exception("API request failed", extra={"path": request.path})
                return api_error(500, "internal", "Something went wrong on our side; the request id names it.")

        return wrapper

    return decorate
