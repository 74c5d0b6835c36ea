"""The SQL API for tokens (``/api/v1/workspaces/<ws>/sql/executions``): submit a statement
(scope ``sql:write``), read the history and one execution with its first rows (``sql:read``).

A token's query runs in the engines as ``token-<id>`` (read-only unless the token's role may
write in that environment, as in the editor). A token sees the executions it submitted; a token
with the admin role and scope sees the workspace's. Results are read as the editor's (the first
rows here; CSV and Parquet through the execution's export links for members)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from connections.models import Connection
from controlroom.access import Access
from controlroom.api import api_view, cursor_param, json_body
from controlroom.models import Role
from controlroom.services import ServiceError
from sqlwarehouse.execution import query_submit
from sqlwarehouse.models import QueryExecution

PAGE = 50
ROWS = 100  # the first rows an execution's JSON carries


def _visible(access: Access):
    qs = QueryExecution.objects.filter(workspace=access.workspace).select_related("connection")
    return qs if access.can(Role.ADMIN) else qs.filter(api_token=access.token)


def _json(execution: QueryExecution, *, rows: bool = False) -> dict[str, Any]:
    found = {"id": execution.pk, "status": execution.status, "connection": execution.connection.name
             if execution.connection else None, "engine": execution.engine, "sql": execution.sql,
             "read_only": execution.read_only, "error": execution.error, "row_count": execution.row_count,
             "truncated": execution.truncated, "submitted_at": execution.started_at.isoformat(),
             "finished_at": execution.finished_at.isoformat() if execution.finished_at else None,
             "duration_ms": execution.duration_ms}
    if rows:
        found.update(columns=execution.columns, rows=execution.rows[:ROWS], statements=execution.statements)
    return found


@api_view(("GET", "POST"), Role.VIEWER, {"GET": "sql:read", "POST": "sql:write"})
def executions(request: HttpRequest, access: Access) -> JsonResponse:
    """GET: the history, newest first (``?before=<id>`` pages on). POST ``{"connection": name,
    "sql", "parameters"?: {}, "environment"?: "dev"}``: submit; 202 with the queued execution."""
    if request.method == "POST":
        access.require(Role.ANALYST)
        body = json_body(request)
        sql, name = body.get("sql"), body.get("connection")
        if not isinstance(sql, str) or not isinstance(name, str):
            raise ServiceError("Send 'connection' (its name) and 'sql' as strings.")
        connection = Connection.objects.filter(workspace=access.workspace, name=name,
                                               kind__in=Connection.SQL_KINDS).order_by("environment_id").first()
        if connection is None:
            raise ServiceError(f"No SQL connection named {name!r} in this workspace.", code="not_found")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ServiceError("'parameters' must be an object of names to values.")
        environment = access.workspace.environments.filter(name=body.get("environment") or "dev").first()
        if environment is None:
            raise ServiceError("'environment' must be dev, stage or prod.")
        execution = query_submit(access=access, connection=connection, sql=sql, parameters=parameters,
                                 environment=environment)
        return JsonResponse(_json(execution), status=202)
    qs = _visible(access).defer("rows", "columns", "manifest").order_by("-id")
    before = cursor_param(request, "before")
    if before is not None:
        qs = qs.filter(pk__lt=before)
    page = list(qs[:PAGE + 1])
    return JsonResponse({"executions": [_json(e) for e in page[:PAGE]],
                         "next_before": page[PAGE - 1].pk if len(page) > PAGE else None})


@api_view(("GET",), Role.VIEWER, "sql:read")
def execution(request: HttpRequest, access: Access, execution_id: int) -> JsonResponse:
    """One execution with its columns, first rows and statement outcomes."""
    found = _visible(access).filter(pk=execution_id).first()
    if found is None:
        raise ServiceError("No such execution for this token.", code="not_found")
    return JsonResponse(_json(found, rows=True))
