"""The JSON API's shared plumbing: bearer-token auth and one error shape.

Every error is {"error": {"code": ..., "message": ...}} with a 4xx status; unexpected
failures are logged with the request id and answer a 500 in the same shape."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import DataError, IntegrityError
from django.http import Http404, HttpRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from controlroom.ids import id_parse
from controlroom.limits import text_problem
from controlroom.models import MAX_DB_ID
from controlroom.services import ServiceError, api_token_authenticate

log = logging.getLogger(__name__)
_STATUS = {"invalid": 400, "conflict": 409, "stale_lease": 409, "not_found": 404, "too_large": 413,
           "idempotency_key_reused": 422}


def api_error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def cursor_param(request: HttpRequest, name: str) -> int | None:
    """A non-negative integer query parameter (a pagination cursor), or None when absent."""
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    value = id_parse(raw, minimum=0)
    if value is None:
        raise ServiceError(f"'{name}' must be a whole number up to {MAX_DB_ID}.")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity; no database stores that in JSON
        raise ServiceError(f"The number {text[:40]} is too large.")
    return value


def _no_constant(name: str) -> None:
    raise ServiceError(f"{name} is not a JSON number; send a finite number or null.")


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The body as a JSON object: strict JSON (no NaN or Infinity, finite numbers), no NUL in any
    text, or a ServiceError that says what is wrong."""
    if not request.body:
        return {}
    try:
        body = json.loads(request.body, parse_float=_finite, parse_constant=_no_constant)
        if not isinstance(body, dict):
            raise ServiceError("The request body must be a JSON object.")
        _refuse_unstorable_text(body)
    except (ValueError, UnicodeDecodeError):
        raise ServiceError("The request body is not valid JSON.") from None
    except RecursionError:
        raise ServiceError("The request body is nested too deeply.") from None
    return body


def _refuse_unstorable_text(value: Any) -> None:
    # Text no database stores (NUL, lone surrogates) is refused at the edge, not by the database.
    if isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            raise ServiceError(f"Text {problem}.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_unstorable_text(key)
            _refuse_unstorable_text(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_unstorable_text(item)


Scope = str | tuple[str, ...]


def api_view(methods: tuple[str, ...], minimum: str, scope: Scope | dict[str, Scope]) -> Callable:
    """Authenticate the bearer token, check the workspace, role and scope, map errors to JSON.

    Under /api/v1/workspaces/<slug>/ the slug must be the token's workspace; under
    /api/v1/ops/ the token alone names the workspace. ``scope``: the token scope a request
    needs (a tuple: any one of them), or one per method."""

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
            needed = scope[request.method] if isinstance(scope, dict) else scope
            needed = (needed,) if isinstance(needed, str) else needed
            if access.token is not None and not set(needed) & set(access.token.scopes or ()):
                return api_error(403, "insufficient_scope", f"This token lacks the '{needed[0]}' scope"
                                 + (f" (or {', '.join(repr(n) for n in needed[1:])})" if needed[1:] else "") + ".")
            if any(isinstance(v, int) and not 0 < v <= MAX_DB_ID for v in kwargs.values()):
                return api_error(404, "not_found", "Not found.")
            try:
                # Query strings were checked by controlroom.request_guard; multipart bodies are left
                # unread here (an upload's view checks its lease and size before the body is read,
                # and checks each field it takes).
                access.require(minimum)
                return view(request, access, *args, **kwargs)
            except RequestDataTooBig:
                return api_error(413, "too_large", f"The request body is larger than "
                                 f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.")
            except (TooManyFieldsSent, TooManyFilesSent, SuspiciousOperation, MultiPartParserError) as exc:
                return api_error(400, "invalid", f"The request could not be read: {exc}")
            except SpecError as exc:
                return api_error(400, "invalid_spec", str(exc), errors=exc.errors)
            except ServiceError as exc:
                return api_error(_STATUS.get(exc.code, 400), exc.code, str(exc))
            except PermissionDenied as exc:
                return api_error(403, "forbidden", str(exc) or "Your role does not allow this.")
            except Http404 as exc:
                return api_error(404, "not_found", str(exc) or "Not found.")
            except IntegrityError:
                # A concurrent request changed the same thing first: the client may retry.
                log.warning("API request lost a race", exc_info=True, extra={"path": request.path})
                return api_error(409, "conflict", "A concurrent request changed this first; try again.")
            except DataError:
                # A value the database cannot hold that no check above caught: still the client's input.
                log.warning("API request with a value the database refused", exc_info=True,
                            extra={"path": request.path})
                return api_error(400, "invalid", "A value in the request is too large or malformed for the "
                                 "database; the request id names the details in the server log.")
            except Exception:
                log.exception("API request failed", extra={"path": request.path})
                return api_error(500, "internal", "Something went wrong on our side; the request id names it.")

        return wrapper

    return decorate
