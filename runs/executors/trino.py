"""`trino` phases: SQL statements on a Trino connection (CTAS, INSERT, MERGE into Iceberg...).

config: sql (one statement, or several separated by ``;``), connection (a Trino connection,
default "trino"). Run parameters are bound as ``:name`` values (``?`` placeholders; the values
travel apart from the text), as in the SQL editor.

Identity: the statements run as the person who started the run (``<username>`` when the run
may write, ``<username>~ro`` when not), with their role as it is now, not as it was when they
started it. Runs nobody started by hand (schedules, git pushes, API tokens) run as the
workspace's service identity ``svc.<workspace slug>``: it stands for the platform, which
admitted the run under the same rules (``run_trigger_check``).

Who writes follows the DuckDB phases' prod rule: the starter must still be allowed to start
runs in the run's environment (operators and admins; in prod admins, or operators where the
workspace allows it), and a connection that reaches every environment (not scoped to one) is
written only by prod runs. Otherwise the run's identity is read-only: the statements are
checked by the parser first (a clear error before Trino sees them), and Trino's rules refuse
writes from ``~ro`` identities anyway.

Lineage (``lakehouse.trino_lineage``): ``catalog`` (the catalog connection Trino's catalog
corresponds to, default "lakehouse"), ``outputs`` and ``inputs`` (``namespace.name`` tables of
it). Every snapshot of an output that the statements committed is recorded as a table version
with a write edge, also when a later statement fails; each input gets a read edge.

Cancel, timeout and a lost lease cancel the running Trino query on the server (stop hook), and
no later statement starts. Phases of this kind need Control Room's database (connections and
their secrets): the standalone executor does not run them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.exceptions import PermissionDenied

from connections.models import Connection
from controlroom.access import Access
from controlroom.models import Environment, Membership
from lakehouse import trino_lineage
from runs.executors.base import PhaseContextProtocol, PhaseFailure
from runs.services.fence import StaleLease
from sqlwarehouse.engines import EngineError, reaches_all_environments
from sqlwarehouse.engines.trino import TrinoQueryEngine, identity
from sqlwarehouse.params import ParameterError, bind
from sqlwarehouse.sqlcheck import SqlCheckError, check_read_only, split_statements, statement_kind

log = logging.getLogger("controlroom.runs")

_FIELDS = {"sql", "connection"} | trino_lineage.FIELDS
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
# Statements whose rows are the answer (shown in the log); other statements answer with a count.
_QUERIES = {"SELECT", "VALUES", "SHOW", "DESCRIBE", "EXPLAIN", "EXPLAIN ANALYZE", "TABLE"}
LOG_ROWS = 20
BACKSTOP_S = 10
SERVICE_PREFIX = "svc."
DIALECT = "trino"


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with a trino phase's config, one message per problem."""
    errors = [f"unknown trino config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    sql = config.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        errors.append("trino phases need a non-empty 'sql' string")
    else:
        try:
            if not split_statements(sql, DIALECT):
                errors.append("'sql' holds no statement (only comments or ';')")
        except SqlCheckError as exc:
            errors.append(f"'sql' cannot be split into statements: {exc}")
    name = config.get("connection", "trino")
    if not (isinstance(name, str) and 0 < len(name) <= 64 and set(name) <= _NAME_CHARS):
        errors.append(f"'connection' must be a connection's name (letters, digits, - and _), not {name!r}")
    return errors + trino_lineage.config_errors(config)


def service_identity(workspace_slug: str) -> str:
    """The Trino identity of runs that no person started (schedules, git pushes, API tokens)."""
    return (SERVICE_PREFIX + workspace_slug)[:64]


def run_identity(run: Any, connection: Connection) -> tuple[str, str]:
    """(user name, why the run may only read, or "" when it may write) for ``run`` on ``connection``.

    Raises PhaseFailure when the person who started the run is no longer a member."""
    environment: Environment = run.environment
    if run.created_by_id is None:
        user, access = service_identity(run.workspace.slug), Access(workspace=run.workspace, role="admin")
    else:
        user = run.created_by.get_username()
        membership = Membership.objects.filter(workspace_id=run.workspace_id, user_id=run.created_by_id).first()
        if membership is None:
            raise PhaseFailure(f"{user}, who started this run, is no longer a member of the workspace; "
                               f"a member must start it again.")
        access = Access(workspace=run.workspace, role=membership.role, user=run.created_by)
    from runs.services.runs import run_trigger_check

    try:
        run_trigger_check(access=access, environment=environment)
    except PermissionDenied:
        return user, f"{user} ({access.role}) may no longer start runs in {environment.name}"
    if reaches_all_environments(connection) and environment.name != Environment.Name.PROD:
        return user, (f"connection '{connection.name}' reaches every environment, so only prod runs "
                      f"write through it")
    return user, ""


def _declared(parameters: dict[str, Any]) -> list[dict[str, str]]:
    """Parameter types from the typed run values, so binding keeps them (bool before int: a subclass)."""
    import datetime as dt
    import decimal

    def kind(value: Any) -> str:
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int):
            return "integer"
        if isinstance(value, (float, decimal.Decimal)):
            return "number"
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return "date"
        return "text"

    return [{"name": name, "type": kind(value)} for name, value in parameters.items()]


def _bound_statements(sql: str, parameters: dict[str, Any], read_only_why: str) -> list[tuple[str, str, list[Any]]]:
    """(statement, text with ``?``, values) for each statement; a read-only run's are checked too."""
    declared, bound = _declared(parameters), []
    try:
        statements = split_statements(sql, DIALECT)
        for number, statement in enumerate(statements, start=1):
            try:
                text, values = bind(statement, parameters, dialect=DIALECT, declared=declared)
            except ParameterError as exc:
                raise PhaseFailure(f"Statement {number}: {exc}") from None
            if read_only_why:
                try:
                    check_read_only(text, DIALECT)
                except SqlCheckError as exc:
                    raise PhaseFailure(f"Statement {number} would write, but {read_only_why} ({exc})") from None
            bound.append((statement, text, values))
    except SqlCheckError as exc:
        raise PhaseFailure(f"The SQL cannot be split into statements: {exc}") from None
    return bound


def _describe(statement: str) -> str:
    """The statement for the log: its first line, shortened."""
    first = statement.strip().splitlines()[0]
    return first if len(first) <= 120 and "\n" not in statement.strip() else first[:117] + "..."


def execute(ctx: PhaseContextProtocol) -> dict[str, Any]:
    """Run the statements in order as the run's identity; return each one's kind and row count."""
    run, resolve = getattr(ctx, "run", None), getattr(ctx, "connection", None)
    if run is None or resolve is None:
        raise PhaseFailure("trino phases run on Control Room's workers only, not on a standalone executor.")
    config = ctx.phase.config
    name = config.get("connection", "trino")
    connection = resolve(name)
    if connection.kind != Connection.Kind.TRINO:
        raise PhaseFailure(f"Connection '{name}' is {connection.kind}, not trino.")
    user, read_only_why = run_identity(run, connection)
    bound = _bound_statements(config["sql"], ctx.parameters, read_only_why)
    try:
        engine = TrinoQueryEngine.for_connection(connection, user=user, read_only=bool(read_only_why))
    except EngineError as exc:
        raise PhaseFailure(str(exc)) from None
    ctx.on_stop(engine.cancel)
    who = identity(user, read_only=bool(read_only_why))
    ctx.log(f"{len(bound)} statement(s) on {name} as {who}"
            + (f" (read-only: {read_only_why})" if read_only_why else ""), identity=who)
    lineage = trino_lineage.lineage_before(ctx, config)
    deadline = time.monotonic() + (ctx.phase.timeout_s or 3600)
    done: list[dict[str, Any]] = []
    queries: dict[str, str] = {}  # Trino query id -> statement kind: which snapshots are this phase's
    for number, (statement, text, values) in enumerate(bound, start=1):
        if ctx.stopped:
            raise _failure(ctx, lineage, queries, f"stopped before statement {number}")
        kind = statement_kind(statement, DIALECT)
        ctx.log(f"statement {number}/{len(bound)} ({kind}): {_describe(statement)}", statement=number)
        # Trino's own limit is a backstop a little past the phase's: the phase timer cancels first.
        limit = max(1, int(deadline - time.monotonic())) + BACKSTOP_S
        error = None
        try:
            done.append(_run_statement(ctx, engine, text, values, limit, number=number, kind=kind))
        except EngineError as exc:
            error = exc
        if engine.query_id:  # a failed query too: it may have committed before its answer was lost
            queries.setdefault(engine.query_id, kind)
        if error is not None:
            query = f" (query {engine.query_id})" if engine.query_id else ""
            raise _failure(ctx, lineage, queries, f"Statement {number} ({kind}) failed{query}: {error}")
    output: dict[str, Any] = {"statements": done}
    if lineage is not None:
        try:
            output["tables"] = trino_lineage.lineage_record(ctx, lineage, queries, finished=True)
        except StaleLease:
            raise
        except Exception as exc:  # the statements committed: a retry would run them again, so no failure
            log.exception("phase %s: recording the table versions failed", ctx.phase.pk)
            ctx.log(f"the statements succeeded, but their table versions could not be recorded: {exc}",
                    level="warning")
            output["lineage_error"] = str(exc)
    return output


def _failure(ctx: PhaseContextProtocol, lineage: Any, queries: dict[str, str], message: str) -> PhaseFailure:
    """The phase's failure, after recording the versions the statements before it committed."""
    if lineage is not None and queries:
        try:
            trino_lineage.lineage_record(ctx, lineage, queries, finished=False)
        except StaleLease:
            raise
        except Exception as exc:  # the statement's failure is the phase's error; this one is logged
            log.exception("phase %s: recording the table versions after a failure failed", ctx.phase.pk)
            ctx.log(f"the table versions committed before the failure could not be recorded: {exc}",
                    level="warning")
    return PhaseFailure(message)


def _run_statement(ctx: PhaseContextProtocol, engine: TrinoQueryEngine, text: str, values: list[Any],
                   timeout_s: int, *, number: int, kind: str) -> dict[str, Any]:
    began = time.monotonic()
    stream = engine.run(text, values, timeout_s)
    rows, shown, written = 0, [], None
    if stream is not None:
        for batch in stream.batches:  # every batch is read: Trino finishes the query only then
            if len(shown) < LOG_ROWS:
                shown += batch.slice(0, LOG_ROWS - len(shown)).to_pylist()
            rows += batch.num_rows
        if kind not in _QUERIES and stream.columns == ["rows"] and rows == 1:
            written = shown[0]["rows"]  # Trino's update count (INSERT, CTAS, MERGE, UPDATE, DELETE)
    seconds = round(time.monotonic() - began, 3)
    record: dict[str, Any] = {"statement": number, "kind": kind, "query_id": engine.query_id, "seconds": seconds}
    if written is not None:
        record["rows_written"] = written
        ctx.log(f"statement {number}: {written} row(s) written in {seconds} s", **record)
    elif stream is not None:
        record["rows"] = rows
        ctx.log(f"statement {number}: {rows} row(s) in {seconds} s"
                + (f"; the first {len(shown)} shown" if rows > len(shown) else ""), **record)
        if stream.columns:
            ctx.log(" | ".join(stream.columns))
        for row in shown:
            ctx.log(" | ".join("NULL" if v is None else str(v) for v in row.values()))
    else:
        ctx.log(f"statement {number}: done in {seconds} s", **record)
    return record
