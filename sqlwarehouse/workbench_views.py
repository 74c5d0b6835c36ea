"""The one-page editor's endpoints: run (JSON: the execution to show, or the writes to confirm
first) and Format SQL. The results panel itself is the execution view with ``embed=1``."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from sqlwarehouse import params
from sqlwarehouse.engines import dialect_of
from sqlwarehouse.execution import query_submit
from sqlwarehouse.views import _connection, _saved, _values
from sqlwarehouse.workbench import format_sql, limited, parse_limit, write_kinds


@login_required
@require_POST
def editor_run(request: HttpRequest, workspace: str) -> JsonResponse:
    """Submit the editor's SQL. Statements that write answer ``{"confirm": [kinds]}`` until the
    form says ``confirmed=1``; a submitted run answers ``{"execution", "results_url", "page_url"}``."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    data = request.POST
    connection = _connection(access, data.get("connection"))
    dialect = dialect_of(connection)
    sql = data.get("sql", "")
    if data.get("explain"):
        sql = f"EXPLAIN {sql.strip().rstrip(';')}"
    else:
        sql = limited(sql, dialect, parse_limit(data.get("limit")))
    if data.get("confirmed") != "1" and (kinds := write_kinds(sql, dialect)):
        return JsonResponse({"confirm": kinds})
    environment = access.workspace.environments.filter(name=data.get("environment") or "dev").first()
    used = params.names(sql, dialect)  # the page shows a field for each (a tab's SQL may have new ones)
    try:
        saved = _saved(access, data.get("saved"))
        execution = query_submit(access=access, connection=connection, sql=sql, saved_query=saved,
                                 parameters=_values(request, used), environment=environment)
    except (ServiceError, PermissionDenied) as exc:
        return JsonResponse({"error": str(exc), "parameters": used}, status=400)
    results = reverse("sqlwarehouse:execution", args=[workspace, execution.pk])
    return JsonResponse({"execution": execution.pk, "results_url": f"{results}?embed=1", "parameters": used,
                         "page_url": f"{reverse('sqlwarehouse:editor', args=[workspace])}?execution={execution.pk}"})


@login_required
@require_POST
def sql_format(request: HttpRequest, workspace: str) -> JsonResponse:
    """``{"sql": formatted}``, or ``{"error": sentence}`` with HTTP 400."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    dialect = dialect_of(_connection(access, request.POST.get("connection")))
    try:
        return JsonResponse({"sql": format_sql(request.POST.get("sql", ""), dialect)})
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
