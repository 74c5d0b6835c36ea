"""Database ids that arrive as text (form fields, query strings), parsed one way everywhere.

``str.isdigit`` is true for "²" and other non-ASCII digits that ``int`` then refuses, and a
number past the database's integer range names nothing; both used to reach the database as a
500. A view asks ``id_parse`` and treats None as "no such object"."""

from __future__ import annotations

from controlroom.models import MAX_DB_ID


def id_parse(raw: object, *, minimum: int = 1) -> int | None:
    """The integer in ``raw`` when it is ASCII digits from ``minimum`` up to the largest id a
    database integer holds; None for anything else (absent, empty, signs, spaces, "abc", "²")."""
    if not isinstance(raw, str) or not raw or len(raw) > 19 or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if minimum <= value <= MAX_DB_ID else None
