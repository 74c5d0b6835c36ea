"""The IDE API's SQL: ``POST /api/v1/compute/sql`` and ``GET /api/v1/compute/sql/<id>`` (also under
``/v1/``; the token names the workspace). Scope ``compute:sql`` (or the SQL
API's ``sql:write`` to submit, ``sql:read`` to read).

A statement goes through the editor's own path: ``query_submit`` (the read-only check for
analysts and for prod, the audit, the token's identity ``token-<id>`` in the engines), run in this
process when an inline slot is free (``sqlwarehouse.inline``) else by a worker, with the
workspace's row cap and timeout. The request then waits up to ``wait_ms`` (at most
WAIT_MS_MAX, through ``execution_wait``'s bounded slots) and answers 200 with the first page of
rows when it ended, else 202 with the execution to poll. A token may have at most
ACTIVE_PER_CALLER executions queued or running at once (429 past that). Rows are read a page at
a time (``offset``, ``limit`` up to PAGE_MAX), never the whole result."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from connections.models import Connection
from connections.services import connections_for
from controlroom.access import Access
from controlroom.api import api_error, api_view, json_body
from controlroom.models import Environment, Role
from controlroom.services import ServiceError
from sqlwarehouse.engines import dialect_of
from sqlwarehouse.execution import MAX_SQL_CHARS, execution_wait, query_submit
from sqlwarehouse.inline import inline_reserve
from sqlwarehouse.models import QueryExecution
from sqlwarehouse.results import read_page
from sqlwarehouse.workbench import limited

WAIT_MS_DEFAULT = 2_000
WAIT_MS_MAX = 10_000  # execution_wait waits 10 s at most
PAGE_DEFAULT, PAGE_MAX = 100, 1_000
ACTIVE_PER_CALLER = settings.IDE_SQL_ACTIVE_PER_CALLER
SUBMIT_SCOPES = ("compute:sql", "sql:write")
READ_SCOPES = ("compute:sql", "sql:read")


class FieldError(ServiceError):
    """A request field that is missing or wrong: the answer names it in ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _whole(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FieldError(key, f"'{key}' must be a whole number from {low:,} to {high:,}.")
    return value


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise FieldError(key, f"'{key}' must be {'non-empty ' if required else ''}text.")
    return value


def _environment(access: Access, name: str | None) -> Environment:
    environment = access.workspace.environments.filter(name=name or Environment.Name.DEV).first()
    if environment is None:
        raise FieldError("environment", "'environment' must be dev, stage or prod.")
    return environment


def _connection(access: Access, name: str | None, environment: Environment) -> Connection:
    """The named SQL connection (the environment's own before a shared one), else the default."""
    if name is None:
        found = connections_for(workspace=access.workspace)
        if not found:
            raise FieldError("connection", "This workspace has no SQL connection; an admin adds one in Settings.")
        return found[0]
    candidates = Connection.objects.filter(Q(environment__isnull=True) | Q(environment=environment),
                                           workspace=access.workspace, name=name, kind__in=Connection.SQL_KINDS)
    found = sorted(candidates, key=lambda c: c.environment_id is None)
    if not found:
        raise ServiceError(f"No SQL connection named {name!r} in this workspace.", code="not_found")
    return found[0]


def _active(access: Access) -> int:
    # Older than the workspace's timeout (and a margin), a queued or running row no longer holds a slot.
    since = timezone.now() - dt.timedelta(seconds=access.workspace.sql_timeout_s + 60)
    caller = Q(api_token=access.token) if access.token is not None else Q(user=access.user)
    return QueryExecution.objects.filter(caller, workspace=access.workspace, started_at__gte=since,
                                         status__in=(QueryExecution.Status.QUEUED,
                                                     QueryExecution.Status.RUNNING)).count()


def _submit(access: Access, body: dict[str, Any]) -> QueryExecution:
    sql = _text(body, "sql", required=True)
    environment = _environment(access, _text(body, "environment"))
    connection = _connection(access, _text(body, "connection"), environment)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise FieldError("parameters", "'parameters' must be an object of names to values.")
    limit = _whole(body, "limit", 0, 1, access.workspace.sql_row_cap)
    if len(sql) > MAX_SQL_CHARS:
        raise FieldError("sql", f"'sql' is {len(sql):,} characters long; at most {MAX_SQL_CHARS:,} run.")
    row_limit = None
    if limit:
        sql, row_limit = limited(sql, dialect_of(connection), limit)
    run = inline_reserve()  # this process runs it when it may, as the editor's Run does
    try:
        execution = query_submit(access=access, connection=connection, sql=sql, parameters=parameters,
                                 environment=environment, queue=run is None, row_limit=row_limit)
    except BaseException:
        if run is not None:
            run.release()
        raise
    if run is not None:
        if execution.status == QueryExecution.Status.QUEUED:
            run.start(execution)
        else:
            run.release()  # refused SQL: recorded as failed, nothing to run
    return execution


def _visible(access: Access) -> QuerySet[QueryExecution]:
    """The token's own executions; an admin token (with the admin scope) sees the workspace's."""
    found = QueryExecution.objects.filter(workspace=access.workspace).select_related("connection", "result")
    return found if access.can(Role.ADMIN) else found.filter(api_token=access.token)


def execution_json(request: HttpRequest, execution: QueryExecution, *, offset: int = 0,
                   limit: int = PAGE_DEFAULT) -> dict[str, Any]:
    """State, and when it succeeded its columns and rows ``offset``..``offset+limit``."""
    found: dict[str, Any] = {
        "id": execution.pk, "status": execution.status, "error": execution.error, "engine": execution.engine,
        "connection": execution.connection.name if execution.connection else None,
        "environment": execution.environment.name if execution.environment else None,
        "read_only": execution.read_only, "row_count": execution.row_count, "truncated": execution.truncated,
        "submitted_at": execution.started_at.isoformat(),
        "finished_at": execution.finished_at.isoformat() if execution.finished_at else None,
        "duration_ms": execution.duration_ms, "progress": execution.progress,
        "status_url": request.build_absolute_uri(_status_path(request, execution.pk)),
    }
    if execution.status == QueryExecution.Status.SUCCEEDED:
        preview = execution.rows
        if offset + limit <= len(preview) or execution.result_id is None or execution.row_count <= len(preview):
            rows = preview[offset:offset + limit]
        else:
            rows = read_page(execution.result, offset=offset, limit=limit)
        following = offset + len(rows)
        found.update(columns=execution.columns, rows=rows, offset=offset,
                     next_offset=following if following < execution.row_count else None)
    return found


def _status_path(request: HttpRequest, execution_id: int) -> str:
    path = request.path.rstrip("/")
    base = path.rsplit("/", 1)[0] if path.rsplit("/", 1)[-1].isdigit() else path
    return f"{base}/{execution_id}"


@api_view(("POST",), Role.ANALYST, SUBMIT_SCOPES)
def compute_sql(request: HttpRequest, access: Access) -> JsonResponse:
    """``{"sql", "connection"?, "environment"?, "parameters"?, "wait_ms"?, "limit"?}``."""
    try:
        body = json_body(request)
        wait_ms = _whole(body, "wait_ms", WAIT_MS_DEFAULT, 0, WAIT_MS_MAX)
        if _active(access) >= ACTIVE_PER_CALLER:
            return api_error(429, "too_many_executions", f"This token already has {ACTIVE_PER_CALLER} SQL "
                             "executions queued or running; wait for one to end.")
        execution = _submit(access, body)
    except FieldError as exc:
        return api_error(400, "invalid", str(exc), field=exc.field)
    if not execution.is_terminal and wait_ms:
        execution_wait(execution_id=execution.pk, timeout_s=wait_ms / 1000)
        execution.refresh_from_db()
    answer = execution_json(request, execution)
    if not execution.is_terminal:
        response = JsonResponse(answer, status=202)
        response["Location"] = answer["status_url"]
        return response
    return JsonResponse(answer)


@api_view(("GET",), Role.VIEWER, READ_SCOPES)
def compute_sql_status(request: HttpRequest, access: Access, execution_id: int) -> JsonResponse:
    """The execution's state; when it succeeded, a page of rows (``?offset=&limit=``)."""
    execution = _visible(access).filter(pk=execution_id).first()
    if execution is None:
        raise ServiceError("No such execution for this token.", code="not_found")
    try:
        query = request.GET
        offset = _whole({"offset": _number(query.get("offset"))}, "offset", 0, 0, max(execution.row_count, 0))
        limit = _whole({"limit": _number(query.get("limit"))}, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    except FieldError as exc:
        return api_error(400, "invalid", str(exc), field=exc.field)
    return JsonResponse(execution_json(request, execution, offset=offset, limit=limit))


def _number(raw: str | None) -> int | str | None:
    if raw is None or raw == "":
        return None
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else raw
