"""Limits enforced at the edge, the same on every database: PostgreSQL refuses an over-long
text with an error (a 500 if it got that far) and SQLite silently stores it, so text that a model
field bounds is measured before anything is written, and numbers that a column cannot hold are
refused before they reach it."""

from __future__ import annotations

from typing import Any

from django.db import models

from controlroom.services import ServiceError

BIGINT_MAX = 2**63 - 1


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text on every database, or None: PostgreSQL refuses NUL,
    and a lone surrogate (JSON's "\\ud800") is not Unicode any database can encode."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (a lone surrogate such as \\ud800 is not)"
    return None


def require_text(model: type[models.Model], field: str, value: Any, *, label: str | None = None,
                 required: bool = False) -> str:
    """``value`` as text that fits ``model.field`` (its max_length), without NUL characters."""
    label = label or field
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ServiceError(f"'{label}' must be text.")
    if required and not value.strip():
        raise ServiceError(f"'{label}' is required.")
    limit = model._meta.get_field(field).max_length
    if limit is not None and len(value) > limit:
        raise ServiceError(f"'{label}' is {len(value):,} characters long; the limit is {limit:,}.")
    if (problem := text_problem(value)) is not None:
        raise ServiceError(f"'{label}' {problem}.")
    return value


def require_count(value: Any, *, label: str, maximum: int = BIGINT_MAX) -> int:
    """A whole number 0..maximum, from an int or its decimal text (booleans are not numbers)."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 20:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ServiceError(f"'{label}' must be a whole number between 0 and {maximum:,}.")
    return value
