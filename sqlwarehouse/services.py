"""Running SQL from the editor and saving queries. Every execution is audited."""

from __future__ import annotations

import datetime as dt
import decimal
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connections.models import Connection
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Role
from controlroom.services import ServiceError
from sqlwarehouse.engines import EngineError, duckdb_engine_for
from sqlwarehouse.models import QueryExecution, SavedQuery


def _cell(value: Any) -> Any:
    """JSON-safe cell; big integers and decimals become strings so no digit is lost."""
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, (decimal.Decimal, dt.date, dt.time, dt.datetime, dt.timedelta, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def query_run(
    *, access: Access, connection: Connection | None, sql: str, saved_query: SavedQuery | None = None
) -> QueryExecution:
    """Run SQL now and keep its first rows (capped) as the execution's result."""
    access.require(Role.ANALYST)
    if not sql.strip():
        raise ServiceError("Write a SQL statement first.")
    if "\x00" in sql:
        raise ServiceError("The SQL contains a NUL character; remove it and run again.")
    if connection is None or connection.workspace_id != access.workspace.pk:
        raise ServiceError("Choose a connection of this workspace.")
    # Analysts read; operators and admins may write (prod write rules come with the warehouse work).
    read_only = not access.can(Role.OPERATOR)
    started, clock = timezone.now(), time.monotonic()
    execution = QueryExecution(
        workspace=access.workspace, user=access.user, connection=connection, saved_query=saved_query,
        sql=sql, engine=connection.kind, started_at=started,
    )
    try:
        engine = duckdb_engine_for(connection, read_only=read_only)
        result = engine.execute(sql, max_rows=settings.SQL_EDITOR_ROW_CAP, timeout_s=300)
        execution.status = QueryExecution.Status.SUCCEEDED
        execution.columns = [{"name": n, "type": t} for n, t in zip(result.columns, result.types, strict=True)]
        execution.rows = [[_cell(v) for v in row] for row in result.rows]
        execution.row_count, execution.truncated = len(result.rows), result.truncated
    except EngineError as exc:
        execution.status, execution.error = QueryExecution.Status.FAILED, str(exc)
    execution.duration_ms = int((time.monotonic() - clock) * 1000)
    with transaction.atomic():
        execution.save()
        audit_record(
            access=access, action="sql.execute", target=execution,
            after={"connection": connection.name, "sql": sql[:10_000], "status": execution.status,
                   "rows": execution.row_count, "error": execution.error[:1000]},
        )
    return execution


def saved_query_save(
    *, access: Access, title: str, sql: str, connection: Connection | None, saved_query: SavedQuery | None = None
) -> SavedQuery:
    access.require(Role.ANALYST)
    title = title.strip()
    if not title:
        raise ServiceError("Give the query a title.")
    if not sql.strip():
        raise ServiceError("A saved query needs SQL.")
    with transaction.atomic():
        if saved_query is None:
            saved_query = SavedQuery.objects.create(
                workspace=access.workspace, title=title, sql=sql, connection=connection, owner=access.user
            )
            action = "saved_query.create"
        else:
            saved_query.title, saved_query.sql, saved_query.connection = title, sql, connection
            saved_query.save()
            action = "saved_query.update"
        audit_record(access=access, action=action, target=saved_query, after={"title": title, "sql": sql[:10_000]})
    return saved_query
