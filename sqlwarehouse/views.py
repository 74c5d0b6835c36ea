"""The SQL editor, its results, history and saved queries."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from connections.models import Connection
from connections.services import connections_for
from controlroom.access import Access
from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from sqlwarehouse.models import QueryExecution, SavedQuery
from sqlwarehouse.services import query_run, saved_query_save

RESULT_PAGE = 100


def _connection(access: Access, raw: str | None) -> Connection | None:
    return Connection.objects.filter(workspace=access.workspace, pk=raw).first() if raw and raw.isdigit() else None


def _saved(access: Access, raw: str | None) -> SavedQuery | None:
    if not raw:
        return None
    saved = SavedQuery.objects.filter(workspace=access.workspace, pk=raw).first() if raw.isdigit() else None
    if saved is None:
        raise Http404("No such saved query.")
    return saved


@login_required
@require_http_methods(["GET", "POST"])
def editor(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    data = request.POST if request.method == "POST" else request.GET
    saved = _saved(access, data.get("saved"))
    sql = data.get("sql", saved.sql if saved else "")
    connection = _connection(access, data.get("connection")) or (saved.connection if saved else None)
    if request.method == "POST":
        try:
            if "save" in request.POST:
                saved = saved_query_save(access=access, title=request.POST.get("title", ""), sql=sql,
                                         connection=connection, saved_query=saved)
                messages.success(request, f"Saved “{saved.title}”.")
                return redirect(f"{request.path}?saved={saved.pk}")
            execution = query_run(access=access, connection=connection, sql=sql, saved_query=saved)
            return redirect("sqlwarehouse:execution", workspace=workspace, execution_id=execution.pk)
        except ServiceError as exc:
            messages.error(request, str(exc))
    connections = connections_for(workspace=access.workspace)
    return render(request, "sqlwarehouse/editor.html", {
        "access": access, "workspace": access.workspace, "sql": sql, "saved": saved, "connections": connections,
        "connection_id": (connection or (connections[0] if connections else None)) and
        (connection or connections[0]).pk,
    })


@login_required
def execution(request: HttpRequest, workspace: str, execution_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    obj = QueryExecution.objects.filter(workspace=access.workspace, user=request.user, pk=execution_id).first()
    if obj is None:
        raise Http404("No such query execution in your history.")
    page = Paginator(obj.rows, RESULT_PAGE).get_page(request.GET.get("page"))
    return render(request, "sqlwarehouse/execution.html", {
        "access": access, "workspace": access.workspace, "execution": obj, "page": page,
    })


@login_required
def history(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    qs = QueryExecution.objects.filter(workspace=access.workspace, user=request.user).select_related("connection")
    q = request.GET.get("q", "").strip()
    if q:
        qs = qs.filter(sql__icontains=q)
    page = Paginator(qs.defer("rows", "columns"), 50).get_page(request.GET.get("page"))
    return render(request, "sqlwarehouse/history.html", {
        "access": access, "workspace": access.workspace, "page": page, "q": q,
    })


@login_required
def saved_list(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    qs = SavedQuery.objects.filter(workspace=access.workspace).select_related("owner", "connection")
    q = request.GET.get("q", "").strip()
    if q:
        qs = qs.filter(Q(title__icontains=q) | Q(sql__icontains=q))
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "sqlwarehouse/saved_list.html", {
        "access": access, "workspace": access.workspace, "page": page, "q": q,
        "can_run": access.can(Role.ANALYST),
    })
