"""The SQL editor, execution pages (live status, cancel, stored result pages, export) and history."""

from __future__ import annotations

import json
import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from connections.models import Connection
from connections.services import connections_for
from controlroom.access import Access
from controlroom.ids import id_parse
from controlroom.models import Environment, Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from sqlwarehouse import params
from sqlwarehouse.engines import dialect_of
from sqlwarehouse.execution import execution_wait, query_cancel, query_submit
from sqlwarehouse.models import QueryExecution, SavedQuery
from sqlwarehouse.result_display import chartable, display_rows, grid_rows_html, header_cells, is_explain_sql, plan_text
from sqlwarehouse.results import read_page, result_open
from sqlwarehouse.services import format_parameter_spec, parse_parameter_spec, saved_query_get, saved_query_save
from sqlwarehouse.workbench import DEFAULT_LIMIT, unwrap_limit, workbench_context

RESULT_PAGE = 100
STATUS_WAIT_S = 2.0  # how long the editor's results panel request waits for its execution to end
ROWS_JSON_LIMIT = 5_000  # the chart reads at most this many rows


def _connection(access: Access, raw: str | None) -> Connection | None:
    pk = id_parse(raw)
    if pk is None:
        return None
    # With what a run reads before its query starts (sqlwarehouse.inline runs on this object).
    return Connection.objects.filter(workspace=access.workspace, pk=pk, kind__in=Connection.SQL_KINDS).select_related(
        "password_ref", "environment").first()


def _saved(access: Access, raw: str | None) -> SavedQuery | None:
    return saved_query_get(access=access, saved_id=raw) if raw else None


def _values(request: HttpRequest, names: list[str]) -> dict[str, str]:
    return {name: request.POST.get(f"param.{name}", "") for name in names}


def _table_version_sql(access: Access, version_id: str) -> str:
    """DuckDB SQL reading one version of one of this workspace's tables (404 for any other)."""
    from lakehouse.editor_sql import duckdb_sql
    from lakehouse.models import TableVersion

    wanted = id_parse(version_id)
    version = (TableVersion.objects.filter(pk=wanted, table__workspace=access.workspace)
               .select_related("table__workspace", "table__environment").first() if wanted is not None else None)
    if version is None:
        raise Http404("No such table version in this workspace.")
    return duckdb_sql(version.table, version)


@login_required
@require_http_methods(["GET", "POST"])
def editor(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    data = request.POST if request.method == "POST" else request.GET
    saved = _saved(access, data.get("saved"))
    shown = None  # ?execution=ID: the editor opens on that result (404 for one you may not see)
    if request.method == "GET" and id_parse(data.get("execution")) is not None:
        shown = _execution_for(request, workspace, id_parse(data["execution"]))[1]
        saved = saved or shown.saved_query
    sql = data.get("sql", shown.sql if shown else saved.sql if saved else "")
    if request.method == "GET" and "table_version" in data and "sql" not in data:
        sql = _table_version_sql(access, data["table_version"])  # the tables page's "Open in SQL editor"
    limit = DEFAULT_LIMIT
    if request.method == "GET":
        # A run of the LIMIT selector opens as written, with its limit.
        sql, wrapped = unwrap_limit(sql, shown.row_limit if shown is not None else None)
        if shown is not None:
            limit = wrapped
    connections = connections_for(workspace=access.workspace)
    if request.method == "POST" or "connection" in data:  # a foreign or unknown id is refused on submit
        connection = _connection(access, data.get("connection"))
    else:
        connection = (shown.connection if shown else None) or (saved.connection if saved else None) or (
            connections[0] if connections else None)
    spec_text = data.get("parameters", format_parameter_spec(saved.parameters) if saved else "")
    environment = access.workspace.environments.filter(name=data.get("environment") or "dev").first()
    if request.method == "POST":
        try:
            declared = parse_parameter_spec(spec_text)
            if "save" in request.POST:
                saved = saved_query_save(
                    access=access, title=request.POST.get("title", ""), sql=sql, connection=connection,
                    saved_query=saved, description=request.POST.get("description", ""),
                    tags=request.POST.get("tags", ""), visibility=request.POST.get("visibility", "workspace"),
                    parameters=declared)
                messages.success(request, f"Saved “{saved.title}” (version {saved.version}).")
                return redirect(f"{request.path}?saved={saved.pk}")
            if "explain" in request.POST:
                sql = f"EXPLAIN {sql.strip().rstrip(';')}"
            used = params.names(sql, dialect_of(connection))
            execution = query_submit(access=access, connection=connection, sql=sql, saved_query=saved,
                                     parameters=_values(request, used), environment=environment)
            return redirect("sqlwarehouse:execution", workspace=workspace, execution_id=execution.pk)
        except ServiceError as exc:
            messages.error(request, str(exc))
        except PermissionDenied as exc:
            messages.error(request, str(exc))
    dialect = dialect_of(connection)
    declared_defaults = {p["name"]: p.get("default") for p in (saved.parameters if saved else [])}
    if shown:  # the values it ran with
        declared_defaults.update({k: str(v) for k, v in (shown.parameters or {}).items() if v is not None})
    return render(request, "sqlwarehouse/editor.html", {
        "access": access, "workspace": access.workspace, "sql": sql, "saved": saved, "connections": connections,
        "connection_id": connection.pk if connection else None, "dialect": dialect,
        "parameters_spec": spec_text, "environments": Environment.Name.values,
        "environment": environment.name if environment else "dev",
        "param_fields": [(n, data.get(f"param.{n}", declared_defaults.get(n) or ""))
                         for n in params.names(sql, dialect)],
        "draft_key": f"{access.workspace.slug}:{f'saved:{saved.pk}' if saved else 'new'}",
        "schema_url": reverse("sqlwarehouse:schema_completion", args=[workspace, connection.pk])
        + f"?environment={environment.name if environment else 'dev'}" if connection else "",
        "visibilities": SavedQuery.Visibility.choices,
        **workbench_context(request, access, connection, environment, limit=limit),
        "shown_execution": shown.pk if shown else "",
        "shown_html": render_to_string("sqlwarehouse/_results_panel.html",
                                       result_context(request, access, shown, embedded=True), request)
        if shown else "",
    })


def _execution_for(request: HttpRequest, workspace: str, execution_id: int) -> tuple[Access, QueryExecution]:
    """Your own executions (admins: everyone's); and, for anyone who can see the saved query,
    its last result."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.VIEWER)
    obj = QueryExecution.objects.select_related("connection", "result", "saved_query").filter(
        workspace=access.workspace, pk=execution_id).first()
    if obj is None:
        raise Http404("No such query execution.")
    if (obj.user_id == request.user.pk and access.can(Role.ANALYST)) or access.can(Role.ADMIN):
        return access, obj
    shared = SavedQuery.objects.filter(Q(visibility=SavedQuery.Visibility.WORKSPACE) | Q(owner=request.user),
                                       workspace=access.workspace, last_execution=obj).exists()
    if not shared:
        raise Http404("No such query execution in your history.")
    return access, obj


def _sort(request: HttpRequest, execution: QueryExecution) -> tuple[str | None, bool]:
    sort = request.GET.get("sort") or None
    if sort and sort not in [c["name"] for c in execution.columns]:
        sort = None
    return sort, request.GET.get("dir") == "desc"


def result_context(request: HttpRequest, access: Access, obj: QueryExecution, *, embedded: bool) -> dict:
    """What the result templates need (``_result.html``): one page of rows as display cells,
    the plan of an EXPLAIN, whether a chart can show anything, and the cancel right."""
    workspace = access.workspace.slug
    sort, descending = _sort(request, obj)
    pages = max(1, math.ceil(obj.row_count / RESULT_PAGE))
    try:
        number = min(max(1, int(request.GET.get("page", 1))), pages)
    except ValueError:
        number = 1
    rows = obj.rows[:RESULT_PAGE] if number == 1 and not sort else []
    if obj.result_id and obj.status == QueryExecution.Status.SUCCEEDED and (sort or number > 1 or
                                                                            obj.row_count > len(obj.rows)):
        rows = read_page(obj.result, offset=(number - 1) * RESULT_PAGE, limit=RESULT_PAGE, sort=sort,
                         descending=descending)
    saved = obj.saved_query
    can_chart = saved is not None and (saved.owner_id == request.user.pk or access.can(Role.ADMIN))
    explain = is_explain_sql(obj.sql)
    base = reverse("sqlwarehouse:execution", args=[workspace, obj.pk])
    return {
        "access": access, "workspace": access.workspace, "execution": obj, "rows": rows, "number": number,
        "grid_rows": grid_rows_html(display_rows(obj.columns, rows), (number - 1) * RESULT_PAGE),
        "headers": header_cells(obj.columns),
        "explain": explain, "plan": plan_text(rows) if explain else "",
        "chartable": obj.status == QueryExecution.Status.SUCCEEDED and chartable(
            obj.columns, obj.row_count, explain=explain),
        "pages": pages, "sort": sort, "descending": descending, "first_row": (number - 1) * RESULT_PAGE,
        "chart_json": json.dumps(saved.chart) if saved and saved.chart else "",
        "chart_save_url": reverse("sqlwarehouse:saved_chart", args=[workspace, saved.pk]) if can_chart else "",
        "can_cancel": not obj.is_terminal and (obj.user_id == request.user.pk or access.can(Role.ADMIN)),
        "embedded": embedded, "link_base": base if embedded else "",
        "share_url": request.build_absolute_uri(
            reverse("sqlwarehouse:editor", args=[workspace]) + f"?execution={obj.pk}"),
    }


@login_required
def execution(request: HttpRequest, workspace: str, execution_id: int) -> HttpResponse:
    """The stored result page; with ``embed=1`` the editor's results panel (polls until it ends)."""
    access, obj = _execution_for(request, workspace, execution_id)
    embedded = request.GET.get("embed") == "1"
    waited = False
    if embedded and not obj.is_terminal:  # a long poll: answer when it ends (or after STATUS_WAIT_S)
        waited = execution_wait(execution_id=obj.pk, timeout_s=STATUS_WAIT_S)
        if waited:
            access, obj = _execution_for(request, workspace, execution_id)
    context = result_context(request, access, obj, embedded=embedded)
    context["waited"] = waited
    return render(request, "sqlwarehouse/_results_panel.html" if embedded else "sqlwarehouse/execution.html",
                  context)


@login_required
def execution_status(request: HttpRequest, workspace: str, execution_id: int) -> HttpResponse:
    """The live status fragment; HTTP 286 (htmx: stop polling) once the execution has ended,
    with a redirect header so the page reloads into the result."""
    access, obj = _execution_for(request, workspace, execution_id)
    response = render(request, "sqlwarehouse/_execution_status.html", {
        "workspace": access.workspace, "execution": obj,
        "can_cancel": not obj.is_terminal and (obj.user_id == request.user.pk or access.can(Role.ADMIN)),
    })
    if obj.is_terminal:
        response.status_code = 286
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def execution_cancel(request: HttpRequest, workspace: str, execution_id: int) -> HttpResponse:
    access, obj = _execution_for(request, workspace, execution_id)
    try:
        obj = query_cancel(access=access, execution=obj)
    except (ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc))
    if request.GET.get("embed") == "1":  # the editor's results panel, in place
        return render(request, "sqlwarehouse/_results_panel.html", result_context(request, access, obj, embedded=True))
    return redirect("sqlwarehouse:execution", workspace=workspace, execution_id=execution_id)


@login_required
def execution_rows(request: HttpRequest, workspace: str, execution_id: int) -> JsonResponse:
    """The first rows of a stored result as JSON (for charts), read from the result file."""
    _, obj = _execution_for(request, workspace, execution_id)
    rows = obj.rows
    if obj.result_id and obj.row_count > len(rows):
        rows = read_page(obj.result, offset=0, limit=ROWS_JSON_LIMIT)
    return JsonResponse({"columns": obj.columns, "rows": rows, "row_count": obj.row_count,
                         "truncated": obj.truncated or obj.row_count > len(rows)})


@login_required
def execution_export(request: HttpRequest, workspace: str, execution_id: int, fmt: str) -> HttpResponse:
    """CSV or Parquet of the stored result, streamed (flat memory whatever the size)."""
    from sqlwarehouse.results import csv_chunks

    _, obj = _execution_for(request, workspace, execution_id)
    if obj.result_id is None:
        raise Http404("This execution has no stored result.")
    name = f"query-{obj.pk}"
    if fmt == "parquet":
        response = FileResponse(result_open(obj.result), as_attachment=True, filename=f"{name}.parquet",
                                content_type="application/vnd.apache.parquet")
        response.block_size = 1 << 20  # streamed from the store: flat memory
        response["Content-Length"] = obj.result.size
        return response
    if fmt == "csv":
        response = StreamingHttpResponse(csv_chunks(obj.result), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response
    raise Http404("Export as csv or parquet.")


@login_required
def history(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    # Your own executions; admins may look at everyone's (the audit log has them too).
    everyone = access.can(Role.ADMIN) and request.GET.get("all") == "1"
    qs = QueryExecution.objects.filter(workspace=access.workspace).select_related("connection", "user")
    if not everyone:
        qs = qs.filter(user=request.user)
    q = request.GET.get("q", "").strip()
    if q:
        qs = qs.filter(sql__icontains=q)
    status = request.GET.get("status", "")
    if status in QueryExecution.Status.values:
        qs = qs.filter(status=status)
    engine = request.GET.get("engine", "")
    if engine in Connection.Kind.values:
        qs = qs.filter(engine=engine)
    page = Paginator(qs.defer("rows", "columns", "manifest"), 50).get_page(request.GET.get("page"))
    return render(request, "sqlwarehouse/history.html", {
        "access": access, "workspace": access.workspace, "page": page, "q": q, "status": status,
        "engine": engine, "statuses": QueryExecution.Status.choices, "engines": Connection.Kind.choices,
        "everyone": everyone, "can_see_everyone": access.can(Role.ADMIN),
    })
