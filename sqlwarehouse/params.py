"""Typed query parameters. The SQL names them ``:name``; each becomes a ``?`` placeholder and its
value travels separately to the engine (never pasted into the SQL text).

The scanner skips string literals, quoted identifiers, comments and ``::`` casts, so ``':x'`` or
``a::date`` are left alone.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any

TYPES = ("text", "integer", "number", "date", "boolean")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ParameterError(ValueError):
    """A parameter is missing, undeclared or not of its type; the message says which."""


def _placeholders(sql: str, dialect: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of every ``:name`` outside literals and comments."""
    found, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:  # doubled quote
                        end += 2
                        continue
                    break
                end += 1
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "$" and dialect == "duckdb" and (m := re.match(r"\$([A-Za-z_]\w*)?\$", sql[i:])):
            end = sql.find(m.group(0), i + len(m.group(0)))  # dollar-quoted string
            i = n if end < 0 else end + len(m.group(0))
        elif c == ":" and sql.startswith("::", i):
            i += 2
        elif c == ":" and (m := NAME.match(sql, i + 1)) and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            found.append((i, m.end(), m.group(0)))
            i = m.end()
        else:
            i += 1
    return found


def names(sql: str, dialect: str) -> list[str]:
    """The parameter names the SQL uses, in order of first use."""
    return list(dict.fromkeys(name for _, _, name in _placeholders(sql, dialect)))


def coerce(value: Any, kind: str, name: str) -> Any:
    """``value`` (usually text from a form) as a ``kind`` value."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return decimal.Decimal(text) if text not in ("NaN", "Infinity", "-Infinity") else float(text)
        if kind == "date":
            return dt.date.fromisoformat(text)
        if kind == "boolean":
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
    except (ValueError, decimal.InvalidOperation):
        raise ParameterError(f"Parameter :{name} must be a {kind}; {text!r} is not.") from None
    return str(value)


def declared_types(declared: list[dict[str, Any]] | None) -> dict[str, tuple[str, Any]]:
    out = {}
    for item in declared or []:
        kind = item.get("type", "text")
        if kind not in TYPES:
            raise ParameterError(f"Parameter :{item.get('name')} has unknown type {kind!r}; use {', '.join(TYPES)}.")
        out[str(item.get("name"))] = (kind, item.get("default"))
    return out


def bind(sql: str, values: dict[str, Any], *, dialect: str,
         declared: list[dict[str, Any]] | None = None) -> tuple[str, list[Any]]:
    """``sql`` with ``?`` for each ``:name``, and the values in placeholder order."""
    spots = _placeholders(sql, dialect)
    types = declared_types(declared)
    pieces, ordered, last = [], [], 0
    for start, end, name in spots:
        kind, default = types.get(name, ("text", None))
        raw = values.get(name, default)
        if raw is None or raw == "":
            raise ParameterError(f"Parameter :{name} needs a value.")
        ordered.append(coerce(raw, kind, name))
        pieces += [sql[last:start], "?"]
        last = end
    pieces.append(sql[last:])
    return "".join(pieces), ordered
