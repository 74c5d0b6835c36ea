"""Asynchronous SQL execution: submit (returns at once), execute on the Celery ``sql`` queue,
cancel. The row is the truth; the Celery message only wakes a worker.

Who may write: analysts never; operators and admins in dev and stage; in prod only admins. A
connection whose data every environment shares (not split per environment) reaches prod, so
writing through it follows prod's rule whichever environment was chosen. Read-only is checked
twice: by the parser (sqlcheck) before anything runs, and by the engine,
which receives a read-only identity (Trino ``<user>~ro``, DuckDB opened read-only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from connections.models import Connection
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Environment, Role
from controlroom.services import ServiceError
from sqlwarehouse.engines import EngineError, dialect_of, open_engine, reaches_all_environments
from sqlwarehouse.models import QueryExecution, SavedQuery
from sqlwarehouse.params import ParameterError, bind
from sqlwarehouse.results import store_stream
from sqlwarehouse.sqlcheck import SqlCheckError, check_read_only, split_statements

log = logging.getLogger(__name__)
FirstPageHook = Callable[[list[dict[str, str]], list[list[Any]]], None]
WATCH_S = 0.25  # how often the worker looks for a cancel and saves progress
MAX_SQL_CHARS = 200_000  # checking a 900 KB statement took about 6 s
STALE_S = 60  # a running execution whose heartbeat is older than this lost its worker


def may_write(access: Access, environment: Environment | None, connection: Connection | None = None) -> bool:
    """Whether ``access`` may write through ``connection`` in ``environment``."""
    reaches_prod = (environment is not None and environment.name == Environment.Name.PROD) or (
        connection is not None and reaches_all_environments(connection))
    return access.can(Role.ADMIN) if reaches_prod else access.can(Role.OPERATOR)


def query_submit(
    *, access: Access, connection: Connection | None, sql: str, parameters: dict[str, Any] | None = None,
    saved_query: SavedQuery | None = None, environment: Environment | None = None, queue: bool = True,
    row_limit: int | None = None,
) -> QueryExecution:
    """Record the execution and queue it; refused SQL is recorded (failed) and audited too.
    ``queue=False``: the caller runs it (``sqlwarehouse.inline``) instead of a worker.
    ``row_limit``: read at most this many rows (the LIMIT selector, see workbench.limited)."""
    access.require(Role.ANALYST)
    if not sql.strip():
        raise ServiceError("Write a SQL statement first.")
    if "\x00" in sql:
        raise ServiceError("The SQL contains a NUL character; remove it and run again.")
    if len(sql) > MAX_SQL_CHARS:
        raise ServiceError(f"The SQL is {len(sql):,} characters long; the editor runs at most {MAX_SQL_CHARS:,}.")
    if connection is None or connection.workspace_id != access.workspace.pk:
        raise ServiceError("Choose a connection of this workspace.")
    if not connection.runs_sql:
        raise ServiceError(f"Connection '{connection.name}' is a {connection.kind} connection; the SQL editor runs "
                           f"statements on {' and '.join(Connection.SQL_KINDS)} connections.")
    environment = connection.environment or environment
    if environment is None or environment.workspace_id != access.workspace.pk:
        environment = access.workspace.environments.get(name=Environment.Name.DEV)
    read_only = not may_write(access, environment, connection)
    execution = QueryExecution(
        workspace=access.workspace, user=access.user, api_token=access.token, connection=connection,
        saved_query=saved_query,
        environment=environment, sql=sql, parameters=parameters or {}, engine=connection.kind,
        read_only=read_only, started_at=timezone.now(), row_limit=row_limit,
        saved_query_version=saved_query.version if saved_query is not None and saved_query.sql == sql else None,
    )
    dialect = dialect_of(connection)
    try:
        declared = saved_query.parameters if saved_query is not None else None
        # Fails early on missing values; the check reads the SQL as the engine will (with ?).
        bound, _ = bind(sql, parameters or {}, dialect=dialect, declared=declared)
        if not split_statements(bound, dialect):
            raise SqlCheckError("There is no SQL statement to run.")
        if read_only and settings.SQL_PARSER_CHECK:
            check_read_only(bound, dialect)
    except (SqlCheckError, ParameterError) as exc:
        execution.status, execution.error = QueryExecution.Status.FAILED, str(exc)
        execution.finished_at = timezone.now()
    with transaction.atomic():
        execution.save()
        if execution.status == QueryExecution.Status.FAILED:
            _audit(execution, access=access)
        elif queue:
            from sqlwarehouse.tasks import query_execute

            transaction.on_commit(lambda: query_execute.apply_async((execution.pk,), queue="sql"))
    return execution


def query_cancel(*, access: Access, execution: QueryExecution) -> QueryExecution:
    """Queued: cancelled now. Running: the worker stops the engine's query within a moment.
    Either is audited as "sql.cancel" with the canceller as actor (an admin stopping someone
    else's query shows as that admin); a query already finished, or already asked to stop,
    changes nothing and records nothing."""
    if execution.workspace_id != access.workspace.pk:
        raise ServiceError("No such execution in this workspace.")
    if execution.user_id != access.user.pk:  # someone else's query: admins only
        access.require(Role.ADMIN)
    now = timezone.now()
    with transaction.atomic():
        if QueryExecution.objects.filter(pk=execution.pk, status=QueryExecution.Status.QUEUED).update(
                status=QueryExecution.Status.CANCELLED, cancel_requested=True, finished_at=now,
                error="The query was cancelled before it started."):
            execution.refresh_from_db()
            _audit(execution, access=access)  # the worker never runs it: this is its final record
            _audit_cancel(execution, access=access, was=QueryExecution.Status.QUEUED)
        elif QueryExecution.objects.filter(pk=execution.pk, status=QueryExecution.Status.RUNNING,
                                           cancel_requested=False).update(cancel_requested=True):
            _audit_cancel(execution, access=access, was=QueryExecution.Status.RUNNING)
    execution.refresh_from_db()
    return execution


def _audit_cancel(execution: QueryExecution, *, access: Access, was: str) -> None:
    audit_record(access=access, workspace=execution.workspace, action="sql.cancel", target=execution,
                 after={"user": execution.user.username if execution.user else "", "status": was})


def _audit(execution: QueryExecution, *, access: Access | None) -> None:
    connection = execution.connection
    audit_record(
        access=access, workspace=execution.workspace, action="sql.execute", target=execution,
        after={"user": execution.user.username if execution.user else "", "connection": connection.name
               if connection else "", "engine": execution.engine, "sql": execution.sql[:10_000],
               "parameters": execution.parameters, "read_only": execution.read_only, "status": execution.status,
               "rows": execution.row_count, "error": execution.error[:1000]},
    )


class _Watch(threading.Thread):
    """Saves progress and looks for a cancel request while the worker runs the query."""

    def __init__(self, execution_id: int, engine, *, save: bool = True) -> None:
        super().__init__(daemon=True, name=f"sql-watch-{execution_id}")
        self.execution_id, self.engine, self.save = execution_id, engine, save
        self.halt, self.rows, self.statement = threading.Event(), 0, (1, 1)
        self.cancelled = False

    def run(self) -> None:
        try:
            while not self.halt.wait(WATCH_S):
                try:
                    progress = {**self.engine.progress(), "stored_rows": self.rows,
                                "statement": self.statement[0], "statements": self.statement[1]}
                    qs = QueryExecution.objects.filter(pk=self.execution_id)
                    if self.save:
                        qs.update(progress=progress, engine_query_id=self.engine.query_id or "",
                                  heartbeat_at=timezone.now())
                    if not self.cancelled and qs.filter(cancel_requested=True).exists():
                        self.cancelled = True
                        self.engine.cancel()
                except Exception:  # a database blip: the query goes on; the next look may work
                    log.warning("saving query progress failed", exc_info=True)
                    close_old_connections()
        finally:
            from django.db import connections

            connections.close_all()


WAIT_POLL_S = 0.025  # how often a waiting status request reads the execution's state
# Status requests that may wait at once in one web process; the others answer at once (the page
# then asks again after its poll interval), so waits never take every gunicorn thread.
STATUS_WAITS_PER_PROCESS = 2
_waits = threading.BoundedSemaphore(STATUS_WAITS_PER_PROCESS)


def execution_wait(*, execution_id: int, timeout_s: float) -> bool:
    """Return when the execution has ended or ``timeout_s`` has passed, whichever is first;
    False when no wait slot was free (it returned at once).

    The status fragment waits here (a long poll) instead of the browser polling on a timer, so
    a result shows within WAIT_POLL_S of the worker saving it, not up to a poll interval later;
    each look is one primary-key read."""
    if not _waits.acquire(blocking=False):
        return False
    try:
        deadline = time.monotonic() + max(0.0, min(timeout_s, 10.0))
        while time.monotonic() < deadline:
            status = QueryExecution.objects.filter(pk=execution_id).values_list("status", flat=True).first()
            if status is None or status in QueryExecution.TERMINAL:
                return True
            time.sleep(WAIT_POLL_S)
        return True
    finally:
        _waits.release()


STATEMENT_SQL_CHARS = 500  # of each statement, kept in its outcome


def statement_outcome(number: int, sql: str) -> dict[str, Any]:
    """A statement's outcome before it runs."""
    text = sql.strip()
    return {"n": number, "sql": text[:STATEMENT_SQL_CHARS] + ("…" if len(text) > STATEMENT_SQL_CHARS else ""),
            "status": "not_run", "rows": None, "duration_ms": None, "error": "", "shown": False}


def engine_identity(execution: QueryExecution) -> str:
    """Who the engine runs the query as: the user, or ``token-<id>`` for an API token's query."""
    if execution.user is not None:
        return execution.user.username
    return f"token-{execution.api_token_id}" if execution.api_token_id else "controlroom"


def _statement_failed(outcomes: list[dict[str, Any]], status: str, error: str) -> None:
    """The statement that was running when the execution ended badly gets its status and error
    (the ones after it stay not_run)."""
    for outcome in outcomes:
        if outcome["status"] == "failed" and not outcome["error"]:
            outcome.update(status=status, error=error[:2000])


def query_execute(*, execution_id: int, on_first_page: FirstPageHook | None = None,
                  submitted: QueryExecution | None = None) -> QueryExecution | None:
    """Run a queued execution in this process (the Celery task, or the web process's inline run,
    calls this). A duplicate message finds it no longer queued and does nothing.

    ``on_first_page(columns, rows)``: called once with the first rows of a single-statement
    execution as soon as the engine has them, before they are stored. ``submitted``: the
    execution as ``query_submit`` returned it, with its connection, workspace and user (an
    inline run: the row need not be read again, which cost two queries before the engine's)."""
    if not QueryExecution.objects.filter(pk=execution_id, status=QueryExecution.Status.QUEUED).update(
            status=QueryExecution.Status.RUNNING, heartbeat_at=timezone.now()):
        return None
    if submitted is not None and submitted.pk == execution_id:
        execution = submitted
        execution.status = QueryExecution.Status.RUNNING
    else:
        execution = QueryExecution.objects.select_related(
            "connection", "user", "workspace", "saved_query", "environment").get(pk=execution_id)
    clock = time.monotonic()
    workspace, dialect = execution.workspace, dialect_of(execution.connection)
    engine = watch = None
    try:
        if execution.connection is None:
            raise EngineError("The connection of this query was deleted.")
        user = engine_identity(execution)
        engine = open_engine(execution.connection, user=user, read_only=execution.read_only,
                             environment=execution.environment)
        declared = execution.saved_query.parameters if execution.saved_query else None
        statements = split_statements(execution.sql, dialect)
        row_cap = min(workspace.sql_row_cap, execution.row_limit or workspace.sql_row_cap)
        # Called inside a transaction (a caller's, a test's), the row this thread just updated stays
        # locked until it ends: a write from the watch's own connection would wait for it, and this
        # thread waits for the watch. Progress is then not saved; the cancel check only reads.
        watch = _Watch(execution.pk, engine, save=not transaction.get_connection().in_atomic_block)
        watch.start()
        stored = None
        outcomes = execution.statements = [statement_outcome(n, s) for n, s in enumerate(statements, start=1)]
        for number, statement in enumerate(statements, start=1):
            watch.statement = (number, len(statements))
            outcome, began = outcomes[number - 1], time.monotonic()
            outcome["status"] = "failed"  # until it returns
            text, values = bind(statement, execution.parameters, dialect=dialect, declared=declared)
            stream = engine.run(text, values, workspace.sql_timeout_s)
            if stream is not None:
                result = store_stream(stream, workspace=workspace, row_cap=row_cap,
                                      on_rows=lambda n: setattr(watch, "rows", n),
                                      on_preview=on_first_page if len(statements) == 1 else None)
                stored = result  # the last statement that returns rows is the result shown
                outcome["rows"] = result.row_count
                for earlier in outcomes:
                    earlier["shown"] = earlier is outcome
            outcome.update(status="succeeded", duration_ms=int((time.monotonic() - began) * 1000))
        execution.status = QueryExecution.Status.SUCCEEDED
        if stored is not None:
            execution.result, execution.columns, execution.rows = stored.blob, stored.columns, stored.preview
            execution.row_count, execution.manifest = stored.row_count, stored.manifest
            # Cut at the row limit the user chose is that limit, as a LIMIT would be; only the
            # workspace's cap cuts a result short.
            execution.truncated = stored.truncated and (
                execution.row_limit is None or workspace.sql_row_cap < execution.row_limit)
    except (EngineError, SqlCheckError, ParameterError) as exc:
        cancelled = watch is not None and watch.cancelled
        execution.status = QueryExecution.Status.CANCELLED if cancelled else QueryExecution.Status.FAILED
        execution.error = "The query was cancelled." if cancelled else str(exc)
        _statement_failed(execution.statements, "cancelled" if cancelled else "failed", execution.error)
    except Exception as exc:
        log.exception("SQL execution crashed", extra={"execution_id": execution_id})
        execution.status = QueryExecution.Status.FAILED
        execution.error = f"Internal error while running the query ({type(exc).__name__}); see the worker log."
        _statement_failed(execution.statements, "failed", execution.error)
    finally:
        if watch is not None:
            watch.halt.set()
            watch.join()
        if engine is not None:
            engine.close()
    execution.engine_query_id = (engine.query_id if engine is not None else "") or execution.engine_query_id
    execution.finished_at = timezone.now()
    execution.duration_ms = int((time.monotonic() - clock) * 1000)
    final_progress = dict(execution.progress or {})
    final_progress.update(state=execution.status.upper(), stored_rows=execution.row_count)
    execution.progress = final_progress
    with transaction.atomic():
        # Fenced: only a run that still holds the row writes its end. The reaper may have failed it
        # meanwhile (this process seemed gone), and a cancel or the watch wrote other fields.
        held = QueryExecution.objects.select_for_update().filter(pk=execution.pk).values_list(
            "status", flat=True).first()
        if held != QueryExecution.Status.RUNNING:
            log.warning("SQL execution ended after it was no longer running here (%s); its result is dropped",
                        held, extra={"execution_id": execution.pk})
            return QueryExecution.objects.filter(pk=execution.pk).first()
        execution.save(update_fields=FINAL_FIELDS)
        if execution.saved_query_id and execution.status == QueryExecution.Status.SUCCEEDED:
            SavedQuery.objects.filter(pk=execution.saved_query_id).update(last_execution=execution)
        _audit(execution, access=Access(workspace=workspace, role=Role.VIEWER, user=execution.user))
    return execution


# What a run writes when it ends (not the cancel request, the heartbeat or the submitted fields).
FINAL_FIELDS = ("status", "error", "statements", "result", "columns", "rows", "row_count", "truncated", "manifest",
                "engine_query_id", "finished_at", "duration_ms", "progress")


def executions_reap(*, stale_s: int = STALE_S) -> list[int]:
    """Fail the running executions whose worker stopped renewing its heartbeat (killed, or its
    machine gone): the history must not show them running forever. Returns their ids."""
    cutoff = timezone.now() - timedelta(seconds=stale_s)
    reaped = []
    for execution in QueryExecution.objects.filter(status=QueryExecution.Status.RUNNING,
                                                   heartbeat_at__lt=cutoff).select_related("workspace", "user"):
        with transaction.atomic():
            if QueryExecution.objects.filter(pk=execution.pk, status=QueryExecution.Status.RUNNING,
                                             heartbeat_at__lt=cutoff).update(
                    status=QueryExecution.Status.FAILED, finished_at=timezone.now(),
                    error="The worker running this query stopped before it finished; run it again."):
                execution.refresh_from_db()
                _audit(execution, access=Access(workspace=execution.workspace, role=Role.VIEWER,
                                                user=execution.user))
                reaped.append(execution.pk)
    if reaped:
        log.warning("failed SQL executions whose worker stopped", extra={"execution_ids": reaped})
    return reaped
