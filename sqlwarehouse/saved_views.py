"""Saved queries: the list, one query with its versions and last result, a version's diff, and
saving a chart spec (JSON, for static/sqlwarehouse/chart.js)."""

from __future__ import annotations

import difflib
import json
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection as db
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from lakehouse.superset_views import superset_panel
from sqlwarehouse import params
from sqlwarehouse.engines import dialect_of
from sqlwarehouse.models import QueryExecution
from sqlwarehouse.services import (
    format_parameter_spec,
    saved_queries_visible,
    saved_query_can_edit,
    saved_query_chart_save,
    saved_query_get,
)

LIST_PAGE = 50
VERSIONS_SHOWN = 50
# The list shows only a last run's summary; never load its preview rows or stored SQL.
_LAST_RUN_HEAVY = ("rows", "columns", "sql", "progress", "manifest", "parameters", "error")


def _json_text(value: str) -> str:
    """``value`` as it appears inside the database's text form of a JSON string (no quotes).

    SQLite keeps Django's ``json.dumps`` output (non-ASCII escaped); PostgreSQL's jsonb renders
    non-ASCII characters as they are."""
    return json.dumps(value, ensure_ascii=db.vendor != "postgresql")[1:-1]


@login_required
@require_GET
def saved_list(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.VIEWER)
    qs = saved_queries_visible(access).select_related("owner", "last_execution").defer(
        *(f"last_execution__{name}" for name in _LAST_RUN_HEAVY))
    q = request.GET.get("q", "").strip()
    tag = request.GET.get("tag", "").strip()
    mine = request.GET.get("mine") == "1"
    if q:
        qs = qs.filter(Q(title__icontains=q) | Q(description__icontains=q) | Q(sql__icontains=q)
                       | Q(tags__icontains=_json_text(q)))
    if tag:
        # The quotes make it a whole-tag match against the JSON list's text.
        qs = qs.filter(tags__icontains=f'"{_json_text(tag)}"')
    if mine:
        qs = qs.filter(owner=request.user)
    page = Paginator(qs, LIST_PAGE).get_page(request.GET.get("page"))
    filters = {key: value for key, value in (("q", q), ("tag", tag), ("mine", "1" if mine else "")) if value}
    return render(request, "sqlwarehouse/saved_list.html", {
        "access": access, "workspace": access.workspace, "page": page, "q": q, "tag": tag, "mine": mine,
        "query": urlencode(filters), "can_run": access.can(Role.ANALYST),
    })


def _parameters_shown(saved) -> list[dict]:
    """Declared parameters, then any the SQL uses without declaring them (text, no default)."""
    declared = list(saved.parameters or [])
    known = {p.get("name") for p in declared}
    used = params.names(saved.sql, dialect_of(saved.connection))
    return declared + [{"name": name, "type": "text", "default": None, "undeclared": True}
                       for name in used if name not in known]


@login_required
@require_GET
def saved_detail(request: HttpRequest, workspace: str, saved_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.VIEWER)
    saved = saved_query_get(access=access, saved_id=saved_id)
    last = (QueryExecution.objects.filter(workspace=access.workspace, pk=saved.last_execution_id)
            .select_related("connection").defer("manifest", "progress").first()
            if saved.last_execution_id else None)
    can_edit = saved_query_can_edit(access, saved)
    versions = list(saved.versions.select_related("created_by")[: VERSIONS_SHOWN + 1])
    return render(request, "sqlwarehouse/saved_detail.html", {
        "access": access, "workspace": access.workspace, "saved": saved, "last": last,
        "versions": versions[:VERSIONS_SHOWN], "more_versions": len(versions) > VERSIONS_SHOWN,
        "parameters": _parameters_shown(saved), "parameters_spec": format_parameter_spec(saved.parameters),
        "chart_json": json.dumps(saved.chart or {}),
        "chart_save_url": reverse("sqlwarehouse:saved_chart", args=[workspace, saved.pk]) if can_edit else "",
        "show_chart": last is not None and last.status == QueryExecution.Status.SUCCEEDED and bool(last.columns),
        "can_edit": can_edit, "can_run": access.can(Role.ANALYST),
        "superset": superset_panel(access, saved_query=saved),
    })


@login_required
@require_GET
def saved_version(request: HttpRequest, workspace: str, saved_id: int, number: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.VIEWER)
    saved = saved_query_get(access=access, saved_id=saved_id)
    version = saved.versions.select_related("created_by").filter(number=number).first()
    if version is None:
        raise Http404(f"“{saved.title}” has no version {number}.")
    previous = saved.versions.filter(number__lt=number).order_by("-number").first()
    diff = difflib.unified_diff(
        (previous.sql if previous else "").splitlines(), version.sql.splitlines(),
        f"v{previous.number}" if previous else "(none)", f"v{version.number}", lineterm="")
    changes = []
    if previous is not None:
        if previous.title != version.title:
            changes.append(("Title", previous.title, version.title))
        if previous.description != version.description:
            changes.append(("Description", previous.description or "—", version.description or "—"))
        if previous.parameters != version.parameters:
            changes.append(("Parameters", format_parameter_spec(previous.parameters) or "—",
                            format_parameter_spec(version.parameters) or "—"))
    return render(request, "sqlwarehouse/saved_version.html", {
        "access": access, "workspace": access.workspace, "saved": saved, "version": version,
        "previous": previous, "diff": list(diff)[2:], "changes": changes,
        "parameters_spec": format_parameter_spec(version.parameters),
    })


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@login_required
@require_POST
def saved_chart(request: HttpRequest, workspace: str, saved_id: int) -> JsonResponse:
    """Form field ``spec``: the chart as JSON. Answers {"ok": true, "chart": {...}} or an error."""
    try:
        access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
        saved = saved_query_get(access=access, saved_id=saved_id)
        try:
            spec = json.loads(request.POST.get("spec") or "")
        except ValueError:
            return _error(400, "invalid", "The chart spec is not valid JSON.")
        saved = saved_query_chart_save(access=access, saved_query=saved, spec=spec)
    except Http404 as exc:
        return _error(404, "not_found", str(exc) or "No such saved query.")
    except PermissionDenied as exc:
        return _error(403, "forbidden", str(exc) or "You may not change this query.")
    except ServiceError as exc:
        return _error(400, exc.code, str(exc))
    return JsonResponse({"ok": True, "chart": saved.chart})
