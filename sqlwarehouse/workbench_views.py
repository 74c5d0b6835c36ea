"""The one-page editor's endpoints: run (JSON: the execution to show, or the writes to confirm
first) and Format SQL. The results panel itself is the execution view with ``embed=1``."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from controlroom.access import Access
from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from sqlwarehouse import params
from sqlwarehouse.engines import dialect_of
from sqlwarehouse.execution import query_submit
from sqlwarehouse.inline import InlineRun, inline_reserve
from sqlwarehouse.models import QueryExecution
from sqlwarehouse.views import _connection, _saved, _values, result_context
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
    row_limit = None
    if data.get("explain"):
        sql = f"EXPLAIN {sql.strip().rstrip(';')}"
    else:
        sql, row_limit = limited(sql, dialect, parse_limit(data.get("limit")))
    if data.get("confirmed") != "1" and (kinds := write_kinds(sql, dialect)):
        return JsonResponse({"confirm": kinds})
    environment = access.workspace.environments.filter(name=data.get("environment") or "dev").first()
    used = params.names(sql, dialect)  # the page shows a field for each (a tab's SQL may have new ones)
    run = inline_reserve()  # this process runs it and answers with its first rows, when it may
    try:
        saved = _saved(access, data.get("saved"))
        execution = query_submit(access=access, connection=connection, sql=sql, saved_query=saved,
                                 parameters=_values(request, used), environment=environment, queue=run is None,
                                 row_limit=row_limit)
    except BaseException as exc:
        if run is not None:
            run.release()
        if isinstance(exc, (ServiceError, PermissionDenied)):
            return JsonResponse({"error": str(exc), "parameters": used}, status=400)
        raise
    if run is not None and not _started(run, execution):
        run.release()  # refused SQL: recorded as failed, nothing to run
    results = reverse("sqlwarehouse:execution", args=[workspace, execution.pk])
    answer = {"execution": execution.pk, "results_url": f"{results}?embed=1", "parameters": used,
              "page_url": f"{reverse('sqlwarehouse:editor', args=[workspace])}?execution={execution.pk}"}
    if run is not None and run.execution_id is not None:
        try:
            if run.wait():
                answer["panel"] = inline_panel(request, access, run, execution)
        finally:
            run.answered()
    return JsonResponse(answer)


def _started(run: InlineRun, execution: QueryExecution) -> bool:
    """Start the inline run of a queued execution; False when there is nothing to run (refused)."""
    if execution.status != QueryExecution.Status.QUEUED:
        return False
    run.start(execution, answers=True)
    return True


def inline_panel(request: HttpRequest, access: Access, run: InlineRun, submitted: QueryExecution) -> str:
    """The results panel once the inline run has its first page: the stored result if it has
    already ended, else those rows (on the submitted, unsaved copy of the execution), marked as
    being stored, and asking for the stored result."""
    provisional = not run.finished and run.first_page is not None
    if provisional:
        execution, page = submitted, run.first_page
        execution.status = QueryExecution.Status.RUNNING
        execution.columns, execution.rows, execution.row_count = page.columns, page.rows, len(page.rows)
    else:  # a finished run has saved its final state
        execution = QueryExecution.objects.select_related("connection", "saved_query", "result").get(
            pk=run.execution_id)
    context = result_context(request, access, execution, embedded=True)
    context.update(waited=provisional, provisional=provisional)
    return render_to_string("sqlwarehouse/_results_panel.html", context, request=request)


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
