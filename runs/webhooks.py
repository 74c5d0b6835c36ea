"""Git push webhooks: GitHub (HMAC-SHA256 signature) and GitLab (shared token) shapes.

No session and no CSRF token: the only credential is the workspace's webhook secret, checked
over the raw body before anything in it is read. Errors use the API's JSON error shape."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connections.services import SecretUnavailable, secret_resolve
from controlroom.access import system_access
from controlroom.api import api_error
from controlroom.services import ServiceError
from runs.models import GitSource
from runs.services.gitsync import PushResult, git_push_receive

log = logging.getLogger(__name__)
ZERO_SHA = "0" * 40
_SYNC_STATUS = {"git_failed": 502}


def _source_for(workspace: str) -> GitSource | None:
    source = GitSource.objects.select_related("workspace", "webhook_secret").filter(workspace__slug=workspace).first()
    if source is None or source.webhook_secret is None or source.webhook_secret.workspace_id != source.workspace_id:
        return None
    return source


def _verified(request: HttpRequest, body: bytes, secret: str) -> str | None:
    """The sender's shape ("github" or "gitlab") if its credential matches, else None."""
    token = request.headers.get("X-Gitlab-Token")
    if token is not None:
        return "gitlab" if hmac.compare_digest(token.encode(), secret.encode()) else None
    signature = request.headers.get("X-Hub-Signature-256", "")
    if signature.startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return "github" if hmac.compare_digest(signature[7:].strip().lower().encode(), expected.encode()) else None
    return None


def _push_of(shape: str, request: HttpRequest, body: bytes) -> tuple[str, str] | str:
    """(ref, sha) of a push, or the reason the delivery is ignored."""
    event = request.headers.get("X-GitHub-Event" if shape == "github" else "X-Gitlab-Event", "")
    if event != ("push" if shape == "github" else "Push Hook"):
        return f"event '{event}' is not a push"
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("ref"), str):
        return "the payload names no ref"
    sha = payload.get("after" if shape == "github" else "checkout_sha") or ""
    return payload["ref"], sha if isinstance(sha, str) else ""


def _push_json(push: PushResult, pushed_sha: str) -> dict[str, Any]:
    sync = push.sync
    return {
        "sha": sync.sha, "pushed_sha": pushed_sha, "stale": sync.stale,
        "jobs": [{"job": j.slug, "path": j.path, "version": j.version, "outcome": j.outcome} for j in sync.jobs],
        "errors": [{"file": e.path, "errors": e.errors} for e in sync.errors],
        "runs": push.run_ids, "run_errors": push.run_errors,
    }


@csrf_exempt
def git_push(request: HttpRequest, workspace: str) -> JsonResponse:
    if request.method != "POST":
        return api_error(405, "method_not_allowed", "Use POST.")
    source = _source_for(workspace)
    if source is None:
        return api_error(404, "not_found", "No git webhook is configured for this workspace.")
    try:
        secret = secret_resolve(source.webhook_secret)
    except SecretUnavailable as exc:
        log.error("git webhook secret unavailable: %s", exc, extra={"workspace": workspace})
        secret = ""
    if not secret:  # an empty secret would make an empty GitLab token "match"
        return api_error(503, "unavailable", "The webhook secret cannot be read; ask a workspace admin to fix it.")
    try:
        body = request.body
    except RequestDataTooBig:
        return api_error(413, "too_large", "The webhook payload is too large.")
    shape = _verified(request, body, secret)
    if shape is None:
        log.warning("git webhook with a missing or wrong signature", extra={"workspace": workspace})
        return api_error(401, "bad_signature", "The webhook signature is missing or does not match the secret.")
    push = _push_of(shape, request, body)
    if isinstance(push, str):
        return JsonResponse({"ignored": push}, status=202)
    ref, pushed_sha = push
    if ref != f"refs/heads/{source.branch}":
        return JsonResponse({"ignored": f"push to {ref}, not to refs/heads/{source.branch}"}, status=202)
    if pushed_sha == ZERO_SHA:
        return JsonResponse({"ignored": f"branch {source.branch} was deleted"}, status=202)
    try:
        result = git_push_receive(access=system_access(source.workspace), source=source, sha=pushed_sha or None)
    except ServiceError as exc:
        return api_error(_SYNC_STATUS.get(exc.code, 422), "sync_failed", str(exc))
    except PermissionDenied as exc:
        return api_error(403, "forbidden", str(exc))
    except Exception:
        log.exception("git webhook sync failed", extra={"workspace": workspace})
        return api_error(500, "internal", "Something went wrong on our side; the request id names it.")
    return JsonResponse(_push_json(result, pushed_sha))
