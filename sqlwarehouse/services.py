"""Saved queries: save (every change is a new immutable version), chart specs, who sees which.

Execution lives in ``sqlwarehouse.execution``. Every write here is audited in its transaction.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.http import Http404

from connections.models import Connection
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.ids import id_parse
from controlroom.models import Role
from controlroom.services import ServiceError
from sqlwarehouse import params
from sqlwarehouse.engines import dialect_of
from sqlwarehouse.models import SavedQuery, SavedQueryVersion

TITLE_MAX = 200
DESCRIPTION_MAX = 10_000
TAGS_MAX, TAG_MAX = 20, 40
PARAMETERS_MAX = 50
CHART_TYPES = ("bar", "line", "scatter")
CHART_Y_MAX = 10
CHART_COLUMN_MAX = 200
AUDIT_SQL_MAX = 10_000


# --- reads -----------------------------------------------------------------------------------

def saved_queries_visible(access: Access) -> QuerySet[SavedQuery]:
    """The workspace's shared queries plus the user's own private ones. Admins do not see other
    people's private queries: private means private."""
    shared = Q(visibility=SavedQuery.Visibility.WORKSPACE)
    mine = Q(owner=access.user) if access.user is not None and access.user.pk else Q(pk__in=[])
    return SavedQuery.objects.filter(shared | mine, workspace=access.workspace)


def saved_query_get(*, access: Access, saved_id: int | str) -> SavedQuery:
    """One saved query the user may see; 404 otherwise (also for other workspaces)."""
    pk = id_parse(str(saved_id))
    found = (saved_queries_visible(access).select_related("owner", "connection").filter(pk=pk).first()
             if pk is not None else None)
    if found is None:
        raise Http404("No such saved query.")
    return found


def saved_query_can_edit(access: Access, saved_query: SavedQuery) -> bool:
    """Analysts edit their own queries; admins edit any they can see."""
    if not access.can(Role.ANALYST):
        return False
    own = access.user is not None and access.user.pk is not None and saved_query.owner_id == access.user.pk
    return own or access.can(Role.ADMIN)


def _require_edit(access: Access, saved_query: SavedQuery) -> None:
    access.require(Role.ANALYST)
    if saved_query.workspace_id != access.workspace.pk:
        raise Http404("No such saved query.")
    if not saved_query_can_edit(access, saved_query):
        raise PermissionDenied("Only the query's owner or a workspace admin may change it.")


# --- parameters ------------------------------------------------------------------------------

def _canonical_default(value: Any, kind: str, name: str) -> str | None:
    """The default as text in one canonical spelling (None when there is none)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if kind == "text":
        return str(value)
    try:
        typed = params.coerce(value, kind, name)
    except params.ParameterError as exc:
        raise ServiceError(str(exc)) from None
    if isinstance(typed, bool):
        return "true" if typed else "false"
    if isinstance(typed, dt.date):
        return typed.isoformat()
    if isinstance(typed, decimal.Decimal):
        return str(typed)
    return str(typed)


def _clean_parameters(parameters: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if parameters is None:
        return []
    if not isinstance(parameters, list):
        raise ServiceError("Parameters must be a list of {name, type, default}.")
    if len(parameters) > PARAMETERS_MAX:
        raise ServiceError(f"A query may declare at most {PARAMETERS_MAX} parameters.")
    out, seen = [], set()
    for item in parameters:
        if not isinstance(item, dict):
            raise ServiceError("Each parameter must have a name, a type and optionally a default.")
        name = str(item.get("name") or "").strip().removeprefix(":")
        if not params.NAME.fullmatch(name):
            raise ServiceError(f"Parameter name {name!r} is not valid: use letters, digits and _, "
                               "not starting with a digit.")
        if name in seen:
            raise ServiceError(f"Parameter :{name} is declared twice.")
        seen.add(name)
        kind = str(item.get("type") or "text").strip().lower()
        if kind not in params.TYPES:
            raise ServiceError(f"Parameter :{name} has unknown type {kind!r}; use {', '.join(params.TYPES)}.")
        out.append({"name": name, "type": kind, "default": _canonical_default(item.get("default"), kind, name)})
    return out


def _split_spec(text: str) -> list[str]:
    """Split on commas that are outside double quotes."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ServiceError(f"Parameter spec part {''.join(current).strip()!r} has an unclosed quote.")
    parts.append("".join(current))
    return parts


def parse_parameter_spec(text: str) -> list[dict[str, Any]]:
    """``since:date=2024-01-01, top:integer=10, region:text`` as parameter dicts.

    The type defaults to text and the default is optional; a default holding a comma is written in
    double quotes (``region="EU, west"``). Errors name the part that is wrong."""
    if "\x00" in (text or ""):
        raise ServiceError("The parameter spec contains a NUL character.")
    out = []
    for part in _split_spec(text or ""):
        item = part.strip()
        if not item:
            continue
        head, has_default, default = item.partition("=")
        name, has_type, kind = head.strip().removeprefix(":").partition(":")
        name, kind = name.strip(), kind.strip().lower()
        if not params.NAME.fullmatch(name):
            raise ServiceError(f"Parameter spec part {item!r}: {name!r} is not a parameter name "
                               "(letters, digits and _, not starting with a digit).")
        if has_type and kind not in params.TYPES:
            raise ServiceError(f"Parameter spec part {item!r}: the type must be one of {', '.join(params.TYPES)}.")
        default = default.strip()
        if default.startswith('"'):
            try:
                default = json.loads(default)
            except ValueError:
                raise ServiceError(f"Parameter spec part {item!r}: the quoted default is not closed properly.") \
                    from None
            if not isinstance(default, str):
                raise ServiceError(f"Parameter spec part {item!r}: the quoted default is not closed properly.")
        out.append({"name": name, "type": kind or "text", "default": default if has_default else None})
    return _clean_parameters(out)


def format_parameter_spec(parameters: list[dict[str, Any]] | None) -> str:
    """The one-line spec for ``parameters``; ``parse_parameter_spec`` reads it back unchanged."""
    parts = []
    for item in parameters or []:
        text = f"{item['name']}:{item.get('type') or 'text'}"
        default = item.get("default")
        if default is not None and default != "":
            default = str(default)
            plain = default == default.strip() and not any(c in default for c in ',"\\')
            text += "=" + (default if plain else json.dumps(default, ensure_ascii=False))
        parts.append(text)
    return ", ".join(parts)


# --- saving ----------------------------------------------------------------------------------

def _clean_tags(tags: list[str] | str | None) -> list[str]:
    if tags is None:
        return []
    raw = tags.split(",") if isinstance(tags, str) else tags
    if not isinstance(raw, (list, tuple)):
        raise ServiceError("Tags must be a list or a comma-separated text.")
    out, seen = [], set()
    for tag in raw:
        if not isinstance(tag, str):
            raise ServiceError("Each tag must be text.")
        tag = " ".join(tag.split())
        if not tag:
            continue
        if "," in tag or "\x00" in tag:
            raise ServiceError(f"Tag {tag!r} must not contain commas or NUL characters.")
        if len(tag) > TAG_MAX:
            raise ServiceError(f"Tag {tag[:TAG_MAX]!r}… is longer than {TAG_MAX} characters.")
        if tag.casefold() not in seen:
            seen.add(tag.casefold())
            out.append(tag)
    if len(out) > TAGS_MAX:
        raise ServiceError(f"A query may have at most {TAGS_MAX} tags; this one has {len(out)}.")
    return out


def _clean_fields(*, access: Access, title: str, sql: str, connection: Connection | None, description: str,
                  tags: list[str] | str | None, visibility: str,
                  parameters: list[dict[str, Any]] | None) -> dict[str, Any]:
    title = (title or "").strip()
    if not title:
        raise ServiceError("Give the query a title.")
    if len(title) > TITLE_MAX:
        raise ServiceError(f"The title is {len(title)} characters long; the limit is {TITLE_MAX}.")
    if "\x00" in title:
        raise ServiceError("The title contains a NUL character; remove it.")
    if not (sql or "").strip():
        raise ServiceError("A saved query needs SQL.")
    if "\x00" in sql:
        raise ServiceError("The SQL contains a NUL character; remove it and save again.")
    description = (description or "").strip()
    if len(description) > DESCRIPTION_MAX:
        raise ServiceError(f"The description is longer than {DESCRIPTION_MAX} characters.")
    if "\x00" in description:
        raise ServiceError("The description contains a NUL character; remove it.")
    if visibility not in SavedQuery.Visibility.values:
        raise ServiceError(f"Visibility must be one of {', '.join(SavedQuery.Visibility.values)}.")
    if connection is not None and connection.workspace_id != access.workspace.pk:
        raise ServiceError("Choose a connection of this workspace.")
    cleaned = _clean_parameters(parameters)
    used = set(params.names(sql, dialect_of(connection)))
    unused = [p["name"] for p in cleaned if p["name"] not in used]
    if unused:
        raise ServiceError(f"Parameter :{unused[0]} is declared but the SQL does not use :{unused[0]}; "
                           "use it or remove it from the parameters.")
    return {"title": title, "sql": sql, "connection": connection, "description": description,
            "tags": _clean_tags(tags), "visibility": visibility, "parameters": cleaned}


def _snapshot(saved_query: SavedQuery) -> dict[str, Any]:
    return {"title": saved_query.title, "version": saved_query.version, "sql": saved_query.sql[:AUDIT_SQL_MAX],
            "description": saved_query.description, "tags": saved_query.tags, "visibility": saved_query.visibility,
            "parameters": saved_query.parameters, "connection": saved_query.connection_id}


def saved_query_save(
    *, access: Access, title: str, sql: str, connection: Connection | None, saved_query: SavedQuery | None = None,
    description: str = "", tags: list[str] | str | None = None, visibility: str = SavedQuery.Visibility.WORKSPACE,
    parameters: list[dict[str, Any]] | None = None,
) -> SavedQuery:
    """Create a saved query, or change one (owner or admin only). Each save that changes anything
    writes the next immutable SavedQueryVersion; a save that changes nothing writes nothing."""
    access.require(Role.ANALYST)
    if saved_query is not None:
        _require_edit(access, saved_query)
    fields = _clean_fields(access=access, title=title, sql=sql, connection=connection, description=description,
                           tags=tags, visibility=visibility, parameters=parameters)
    with transaction.atomic():
        if saved_query is None:
            saved_query = SavedQuery.objects.create(workspace=access.workspace, owner=access.user, version=1,
                                                    **fields)
            number, action, before = 1, "saved_query.create", None
        else:
            # Lock the row so two concurrent saves cannot take the same version number.
            current = SavedQuery.objects.select_for_update().get(pk=saved_query.pk)
            _require_edit(access, current)
            if all(getattr(current, key) == value for key, value in fields.items()):
                return current
            if (fields["visibility"] == SavedQuery.Visibility.PRIVATE
                    and (current.owner_id is None or current.owner_id != getattr(access.user, "pk", None))):
                # The admin would lose sight of it at once; only its owner may hide it.
                raise ServiceError("Only the query's owner may make it private.")
            before = _snapshot(current)
            latest = current.versions.aggregate(n=Max("number"))["n"] or 0
            number = max(latest, current.version) + 1
            for key, value in fields.items():
                setattr(current, key, value)
            current.version = number
            current.save()
            saved_query, action = current, "saved_query.update"
        SavedQueryVersion.objects.create(
            saved_query=saved_query, number=number, title=fields["title"], description=fields["description"],
            sql=fields["sql"], parameters=fields["parameters"],
            created_by=access.user if access.user is not None and access.user.pk else None,
        )
        audit_record(access=access, action=action, target=saved_query, before=before, after=_snapshot(saved_query))
    return saved_query


# --- charts ----------------------------------------------------------------------------------

def _clean_chart(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ServiceError("The chart spec must be an object with type, x and y.")
    kind = spec.get("type")
    if kind not in CHART_TYPES:
        raise ServiceError(f"Chart type must be one of {', '.join(CHART_TYPES)}.")
    x = spec.get("x")
    if not isinstance(x, str) or not x.strip() or len(x) > CHART_COLUMN_MAX or "\x00" in x:
        raise ServiceError("Chart x must name one column.")
    y = spec.get("y")
    if not isinstance(y, list) or not y:
        raise ServiceError("Chart y must be a non-empty list of column names.")
    if len(y) > CHART_Y_MAX:
        raise ServiceError(f"Chart y may name at most {CHART_Y_MAX} columns.")
    if not all(isinstance(c, str) and c.strip() and len(c) <= CHART_COLUMN_MAX and "\x00" not in c for c in y):
        raise ServiceError("Chart y must be a list of column names.")
    return {"type": kind, "x": x, "y": list(dict.fromkeys(y))}


def saved_query_chart_save(*, access: Access, saved_query: SavedQuery, spec: dict[str, Any]) -> SavedQuery:
    """Keep the chart spec ({"type", "x", "y"}) with the query; owner or admin only. Not versioned."""
    _require_edit(access, saved_query)
    chart = _clean_chart(spec)
    with transaction.atomic():
        current = SavedQuery.objects.select_for_update().get(pk=saved_query.pk)
        _require_edit(access, current)
        if current.chart == chart:
            return current
        before = current.chart or None
        current.chart = chart
        current.save(update_fields=["chart", "updated_at"])
        audit_record(access=access, action="saved_query.chart", target=current, before=before,
                     after={"title": current.title, "chart": chart})
    return current
