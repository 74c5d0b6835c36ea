"""The ``notifications:`` section of a job spec: its JSON Schema and the checks a schema cannot say.

    notifications:
      events: [failure, recovery, long_run]  # default: [failure, recovery]
      email: [oncall@example.com]
      webhook: {url: https://hooks.example.com/x, secret_ref: hook-secret}
      duration_threshold_s: 600             # required with long_run

The list is ``events``, not ``on``: YAML 1.1 reads an unquoted ``on:`` key as the boolean true.

Imported by ``runs.spec`` before Django may be set up: no models here.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

EVENTS = ("failure", "recovery", "long_run")
DEFAULT_EVENTS = ("failure", "recovery")
MAX_EMAILS = 20
MAX_URL_CHARS = 500  # Notification.target
MAX_THRESHOLD_S = 7 * 86_400
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}\Z")  # SecretRef.name

NOTIFICATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "events": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(EVENTS)}},
        "email": {"type": "array", "minItems": 1, "maxItems": MAX_EMAILS, "uniqueItems": True,
                  "items": {"type": "string"}},
        "webhook": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url", "secret_ref"],
            "properties": {"url": {"type": "string"}, "secret_ref": {"type": "string"}},
        },
        "duration_threshold_s": {"type": "integer", "minimum": 1, "maximum": MAX_THRESHOLD_S},
    },
}


def webhook_url_problem(url: str) -> str | None:
    """Why a webhook URL is refused (one sentence), or None: http(s) with a host, no spaces."""
    if len(url) > MAX_URL_CHARS:
        return f"the webhook URL is longer than {MAX_URL_CHARS} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "the webhook URL must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return "the webhook URL is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the webhook URL must be http:// or https:// with a host"
    return None


def notifications_errors(section: dict[str, Any]) -> list[tuple[list[str | int], str]]:
    """What is wrong with a schema-valid section, as (path inside it, message) pairs."""
    errors: list[tuple[list[str | int], str]] = []
    if "email" not in section and "webhook" not in section:
        errors.append(([], "name at least one channel: email (a list of addresses) or webhook"))
    for index, address in enumerate(section.get("email") or []):
        try:
            validate_email(address)
        except ValidationError:
            errors.append((["email", index], f"{address!r} is not an e-mail address"))
    webhook = section.get("webhook")
    if webhook is not None:
        if problem := webhook_url_problem(webhook["url"]):
            errors.append((["webhook", "url"], problem))
        if not _SLUG.match(webhook["secret_ref"]):
            errors.append((["webhook", "secret_ref"], "secret_ref must be the name of one of the workspace's "
                                                      "secret references (letters, digits, - and _)"))
    events = section.get("events", DEFAULT_EVENTS)
    if "long_run" in events and "duration_threshold_s" not in section:
        errors.append((["events"], "long_run needs duration_threshold_s (seconds a run may take before it is "
                               "reported)"))
    if "duration_threshold_s" in section and "long_run" not in events:
        errors.append((["duration_threshold_s"], "duration_threshold_s is used only with long_run in events"))
    return errors


def notifications_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A validated spec's notification settings with defaults applied, or None without any."""
    section = spec.get("notifications")
    if not section:
        return None
    return {
        "events": tuple(section.get("events", DEFAULT_EVENTS)),
        "email": list(section.get("email") or []),
        "webhook": section.get("webhook"),
        "duration_threshold_s": section.get("duration_threshold_s"),
    }
