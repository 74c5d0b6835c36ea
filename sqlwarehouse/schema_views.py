"""The schema browser: a connection's catalogs and schemas (page), one schema's tables and columns
(htmx fragment, filtered and capped), the editor's completion JSON, and a refresh.

All of it needs the analyst role: reading the engine takes an identity that may run queries.
Pages render from the stored snapshot; only a refresh (or a connection never read) reaches the engine.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control
from django.views.decorators.http import require_GET, require_POST

from connections.models import Connection
from connections.services import connections_for
from controlroom.access import Access
from controlroom.models import Environment, Role
from controlroom.request_id import get_request_id
from controlroom.selectors import workspace_access
from sqlwarehouse.engines import EngineError
from sqlwarehouse.engines.base import EngineUnreachable
from sqlwarehouse.models import SchemaSnapshot
from sqlwarehouse.schema import (
    completion_json,
    failed_catalogs,
    schema_fetch,
    schema_get,
    schema_tree,
    snapshot_environment,
)
from sqlwarehouse.schema import schema_tables as tables_of

log = logging.getLogger(__name__)

TABLE_LIMIT = 500  # tables per fragment: a schema of 10,000 asks for a filter instead
SCHEMA_LIMIT = 500  # schemas listed per catalog


def _connection(access: Access, connection_id: int | str) -> Connection:
    connection = Connection.objects.filter(workspace=access.workspace, pk=connection_id,
                                           kind__in=Connection.SQL_KINDS).first()
    if connection is None:
        raise Http404("No such connection in this workspace.")
    return connection


def _environment(access: Access, request: HttpRequest) -> Environment | None:
    """The environment asked for (``environment=`` in the query or form; default dev)."""
    name = request.GET.get("environment") or request.POST.get("environment") or Environment.Name.DEV
    return access.workspace.environments.filter(name=name).first()


def _failure(connection: Connection, exc: EngineError) -> str:
    """Log the engine's detail; return the one sentence the user sees."""
    log.warning("reading the schema of connection %s failed: %s", connection.pk, exc,
                extra={"connection_id": connection.pk})
    request_id = get_request_id()
    reason = f": {exc}" if isinstance(exc, EngineUnreachable) else ";"  # other engine errors may name paths
    return (f"The schema of connection “{connection.name}” could not be read{reason} "
            f"The server log has the details{f' (request {request_id})' if request_id else ''}.")


def _browser_context(access: Access, connection: Connection | None, snapshot: SchemaSnapshot | None,
                     error: str = "", environment: Environment | None = None) -> dict:
    return {
        "access": access, "workspace": access.workspace, "connection": connection, "snapshot": snapshot,
        "environment": environment.name if environment else Environment.Name.DEV,
        "environments": Environment.Name.values,
        "just_read": snapshot is not None and timezone.now() - snapshot.fetched_at < timedelta(minutes=1),
        "tree": schema_tree(snapshot, schema_limit=SCHEMA_LIMIT), "failed": failed_catalogs(snapshot),
        "error": error,
    }


@login_required
@require_GET
def schema_browser(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    connections = connections_for(workspace=access.workspace)
    raw = request.GET.get("connection", "")
    connection = next((c for c in connections if str(c.pk) == raw), None)
    if raw and connection is None:
        raise Http404("No such connection in this workspace.")
    connection = connection or (connections[0] if connections else None)
    snapshot, error, environment = None, "", _environment(access, request)
    if connection is not None:
        try:
            snapshot = schema_get(connection=connection, user=request.user, environment=environment)
        except EngineError as exc:
            error = _failure(connection, exc)
    context = {**_browser_context(access, connection, snapshot, error, environment), "connections": connections}
    partial = request.htmx and not request.htmx.history_restore_request
    return render(request, "sqlwarehouse/schema.html#browser" if partial else "sqlwarehouse/schema.html", context)


@login_required
@require_GET
def schema_tables(request: HttpRequest, workspace: str, connection_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    connection = _connection(access, connection_id)
    catalog, schema = request.GET.get("catalog", ""), request.GET.get("schema", "")
    q = request.GET.get("q", "").strip()[:200]
    environment = _environment(access, request)
    context = {"access": access, "workspace": access.workspace, "connection": connection, "catalog": catalog,
               "environment": environment.name if environment else Environment.Name.DEV,
               "schema": schema, "q": q, "limit": TABLE_LIMIT, "tables": [], "matched": 0, "missing": False,
               "error": ""}
    try:
        snapshot = schema_get(connection=connection, user=request.user, environment=environment)
    except EngineError as exc:
        context["error"] = _failure(connection, exc)
        snapshot = None
    found = tables_of(snapshot, catalog=catalog, schema=schema, q=q, limit=TABLE_LIMIT) if snapshot else None
    if found is None:
        context["missing"] = not context["error"]
    else:
        context["tables"], context["matched"] = found
    if not request.htmx:
        return render(request, "sqlwarehouse/schema_tables.html", context, status=404 if context["missing"] else 200)
    # The filter box swaps only the list under it; opening a schema loads box and list.
    part = "list" if request.GET.get("part") == "list" else "schema"
    return render(request, f"sqlwarehouse/schema_tables.html#{part}", context)


@login_required
@require_GET
def schema_completion(request: HttpRequest, workspace: str, connection_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    connection = _connection(access, connection_id)
    # The editor loads this on every page: answer "not modified" without loading the namespace.
    environment = snapshot_environment(connection, _environment(access, request))
    stored = SchemaSnapshot.objects.filter(connection=connection, environment=environment).values_list(
        "pk", "fetched_at").first()
    if stored is not None:
        etag = f'"schema-{stored[0]}-{stored[1].timestamp():.6f}"'
        if (not_modified := get_conditional_response(request, etag=etag)) is not None:
            return not_modified
    try:
        snapshot = schema_get(connection=connection, user=request.user, environment=environment)
    except EngineError as exc:
        return JsonResponse({"error": _failure(connection, exc)}, status=502)
    response = JsonResponse(completion_json(snapshot))
    response["ETag"] = f'"schema-{snapshot.pk}-{snapshot.fetched_at.timestamp():.6f}"'
    patch_cache_control(response, private=True, no_cache=True)
    return response


@login_required
@require_POST
def schema_refresh(request: HttpRequest, workspace: str, connection_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ANALYST)
    connection = _connection(access, connection_id)
    error = ""
    environment = snapshot_environment(connection, _environment(access, request))
    try:
        snapshot = schema_fetch(connection=connection, user=request.user, environment=environment)
    except EngineError as exc:
        error = _failure(connection, exc)
        snapshot = SchemaSnapshot.objects.filter(connection=connection, environment=environment).first()
    if request.htmx:
        return render(request, "sqlwarehouse/schema.html#browser",
                      _browser_context(access, connection, snapshot, error, _environment(access, request)))
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Read the schema of “{connection.name}”: {snapshot.tables} tables.")
    return redirect(f"{reverse('sqlwarehouse:schema', args=[workspace])}?connection={connection.pk}")
