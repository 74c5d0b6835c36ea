"""Git push webhooks: GitHub (HMAC-SHA256 signature) and GitLab (shared token) shapes.

No session and no CSRF token: the only credential is the workspace's webhook secret, checked
over the raw body before anything in it is read. A verified delivery is recorded and answered
at once (202); the sync runs on a worker; a replayed delivery id answers 200 "duplicate" and
does nothing. Errors use the API's JSON error shape."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connections.services import SecretUnavailable, secret_resolve
from controlroom.api import api_error
from controlroom.limits import text_problem
from runs.models import GitSource
from runs.services.gitdeliveries import git_delivery_receive
from runs.services.gitsync import SHA_RE

log = logging.getLogger(__name__)
ZERO_SHA = "0" * 40
_DELIVERY_RE = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, fits GitDelivery.delivery_id


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
    except (ValueError, UnicodeDecodeError, RecursionError):
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("ref"), str):
        return "the payload names no ref"
    ref = payload["ref"]
    if len(ref) > 255 or not ref.isprintable() or text_problem(ref) is not None:
        return "the ref is not a printable branch name"
    sha = payload.get("after" if shape == "github" else "checkout_sha") or ""
    if not isinstance(sha, str) or (sha and not SHA_RE.fullmatch(sha)):
        return "the pushed commit id is not 40 hex digits"
    return payload["ref"], sha.lower()


def _delivery_id(request: HttpRequest, body: bytes) -> str:
    """The sender's delivery id (GitHub, GitLab), else the body's sha256: a replay repeats both."""
    raw = request.headers.get("X-GitHub-Delivery") or request.headers.get("X-Gitlab-Event-UUID") or ""
    raw = raw.strip()
    return raw if _DELIVERY_RE.fullmatch(raw) else hashlib.sha256(body).hexdigest()


def _ignored_reason(push: tuple[str, str] | str, branch: str) -> str:
    if isinstance(push, str):
        return push
    ref, sha = push
    if ref != f"refs/heads/{branch}":
        return f"push to {ref}, not to refs/heads/{branch}"
    if sha == ZERO_SHA:
        return f"branch {branch} was deleted"
    return ""


@csrf_exempt
def git_push(request: HttpRequest, workspace: str) -> JsonResponse:
    """Verify, record the delivery and answer at once (202); a worker syncs (runs/git_tasks.py)."""
    if request.method != "POST":
        return api_error(405, "method_not_allowed", "Use POST.")
    source = _source_for(workspace)
    if source is None:
        return api_error(404, "not_found", "No git webhook is configured for this workspace.")
    try:
        secret = secret_resolve(source.webhook_secret, workspace_id=source.workspace_id)
    except SecretUnavailable:  # secret_resolve logged the detail
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
    ignored = _ignored_reason(push, source.branch)
    delivery_id = _delivery_id(request, body)
    delivery, created = git_delivery_receive(source=source, delivery_id=delivery_id,
                                             sha="" if ignored else push[1], ignored=ignored,
                                             body_sha256=hashlib.sha256(body).hexdigest())
    if not created:
        return JsonResponse({"delivery": delivery_id, "status": "duplicate"}, status=200)
    answer = {"delivery": delivery_id, "status": delivery.status}
    if ignored:
        answer["ignored"] = ignored
    return JsonResponse(answer, status=202)
