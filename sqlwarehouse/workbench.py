"""The one-page editor's helpers: which statements write (the browser asks before running them),
the LIMIT selector's wrapping, Format SQL, and the page's URLs."""

from __future__ import annotations

import re

import sqlglot
from django.http import HttpRequest
from django.urls import reverse
from sqlglot import expressions as exp

from connections.models import Connection
from controlroom.access import Access
from controlroom.models import Environment
from sqlwarehouse.sqlcheck import SqlCheckError, split_statements, statement_kind

LIMITS = (100, 1000, 10_000)
DEFAULT_LIMIT = 1000
# Statement kinds (their first word, see sqlcheck.statement_kind) that only read or set the session.
READ_KINDS = frozenset({"SELECT", "VALUES", "PIVOT", "UNPIVOT", "EXPLAIN", "SHOW", "DESCRIBE", "SUMMARIZE",
                        "SET", "RESET", "USE"})
_QUERY_KINDS = frozenset({"SELECT", "VALUES", "PIVOT", "UNPIVOT"})
_EXPLAIN_ANALYZE = re.compile(r"^\s*explain\s+analy[sz]e\s+(?:verbose\s+)?", re.IGNORECASE)
_COLON_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def write_kinds(sql: str, dialect: str) -> list[str]:
    """The kinds of the statements in ``sql`` that write or drop (``["DROP TABLE"]``), in order.

    EXPLAIN ANALYZE runs its statement, so that statement is what counts. SQL that does not even
    split is left to the run, which reports it.
    """
    try:
        statements = split_statements(sql, dialect)
    except SqlCheckError:
        return []
    kinds = []
    for statement in statements:
        inner = _EXPLAIN_ANALYZE.sub("", statement, count=1)
        try:
            kind = statement_kind(inner, dialect)
        except SqlCheckError:
            continue
        if kind.split(" ")[0] not in READ_KINDS:
            kinds.append(kind)
    return kinds


def parse_limit(raw: str | None) -> int | None:
    """The LIMIT selector's value: one of LIMITS, or None for "no limit" (the workspace's row cap)."""
    if raw in ("", "none"):
        return None
    try:
        value = int(raw or DEFAULT_LIMIT)
    except ValueError:
        return DEFAULT_LIMIT
    return value if value in LIMITS else DEFAULT_LIMIT


def limited(sql: str, dialect: str, limit: int | None) -> tuple[str, int | None]:
    """The SQL to run for the LIMIT selector's ``limit``, and the row limit to read it with.

    One query gets the limit; other SQL (scripts, writes, SHOW…) runs as written, under the
    workspace's row cap: ``(sql, None)``. The query's shape decides how (``_limit_by``):

    - ordered (ORDER BY at its top level) and not limited yet: ``LIMIT n`` is appended, so the
      rows are its top n (Trino plans a TopN). Wrapped in a limited subquery, the order is lost:
      Trino drops an ORDER BY inside a subquery.
    - already limited, or unordered on Trino: run as written, and only n rows are read; the rest
      of the query is then cancelled (an ordered query's first n rows are still its top n).
      Trino plans a LIMIT as one more stage, which cost a 25-row query 18 ms of its 53.
    - anything else is wrapped as ``SELECT * FROM (…) AS limited LIMIT n`` (free on DuckDB)."""
    if limit is None:
        return sql, None
    try:
        statements = split_statements(sql, dialect)
        if len(statements) != 1 or statement_kind(statements[0], dialect) not in _QUERY_KINDS:
            return sql, None
    except SqlCheckError:
        return sql, None
    how = _limit_by(statements[0], dialect)
    if how == "append":
        return f"{statements[0]}\nLIMIT {limit}", limit
    if how == "read":
        return sql, limit
    return f"SELECT * FROM (\n{statements[0]}\n) AS limited LIMIT {limit}", limit


def _limit_by(statement: str, dialect: str) -> str:
    """How ``limited`` limits one query: "append" a LIMIT (ordered, not limited yet), "read" only
    the limit's rows (limited already, a parenthesized ordered query, or unordered on Trino), or
    "wrap" it (the rest, and what sqlglot cannot read)."""
    try:
        tree = sqlglot.parse_one(statement, read=dialect)
    except sqlglot.errors.SqlglotError:
        return "wrap"
    parenthesized = isinstance(tree, exp.Subquery)
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        return "wrap"
    if tree.args.get("limit") is not None or tree.args.get("offset") is not None:
        return "read"
    if tree.args.get("order") is not None:
        return "read" if parenthesized else "append"
    return "read" if dialect == "trino" else "wrap"


_WRAPPED = re.compile(r"\ASELECT \* FROM \(\n(?P<sql>.*)\n\) AS limited LIMIT (?P<limit>\d+)\Z", re.DOTALL)


def unwrap_limit(sql: str, row_limit: int | None = None) -> tuple[str, int | None]:
    """The inverse of ``limited``: the SQL as written and the LIMIT chosen (None: none that the
    editor's selector can show). ``row_limit``: the execution's, which says a LIMIT was appended."""
    match = _WRAPPED.match(sql)
    if match is not None and int(match["limit"]) in LIMITS:
        return match["sql"], int(match["limit"])
    if row_limit in LIMITS and sql.endswith(appended := f"\nLIMIT {row_limit}"):
        return sql[: -len(appended)], row_limit
    return sql, row_limit if row_limit in LIMITS else None


def format_sql(sql: str, dialect: str) -> str:
    """The statements of ``sql`` pretty-printed by sqlglot in the connection's dialect.

    ``:name`` parameters stay ``:name`` (sqlglot's DuckDB writes them as ``$name``). Raises
    ``ValueError`` with one sentence when sqlglot cannot read a statement.
    """
    names = set(_COLON_PARAM.findall(sql))
    out = []
    try:
        statements = split_statements(sql, dialect)
    except SqlCheckError as exc:
        raise ValueError(str(exc)) from exc
    for number, statement in enumerate(statements, start=1):
        try:
            text = ";\n".join(sqlglot.transpile(statement, read=dialect, write=dialect, pretty=True))
        except sqlglot.errors.SqlglotError as exc:
            raise ValueError(f"Statement {number} could not be formatted: {str(exc).splitlines()[0]}") from exc
        for name in names:
            text = re.sub(rf"\${re.escape(name)}\b", f":{name}", text)
        out.append(text)
    return ";\n\n".join(out)


def workbench_context(request: HttpRequest, access: Access, connection: Connection | None,
                      environment: Environment | None, *, limit: int | None = DEFAULT_LIMIT) -> dict:
    """The editor page's URLs and choices for static/sqlwarehouse/workbench.js."""
    slug = access.workspace.slug
    env = environment.name if environment else Environment.Name.DEV
    return {
        "run_url": reverse("sqlwarehouse:editor_run", args=[slug]),
        "format_url": reverse("sqlwarehouse:sql_format", args=[slug]),
        # /schema/0/…: the script puts the chosen connection's id in place of the 0.
        "completion_url_template": reverse("sqlwarehouse:schema_completion", args=[slug, 0]),
        "tree_url": reverse("sqlwarehouse:schema", args=[slug]),
        "results_url_template": reverse("sqlwarehouse:execution", args=[slug, 0]),
        "editor_url": reverse("sqlwarehouse:editor", args=[slug]),
        "limits": LIMITS, "limit": limit, "row_cap": access.workspace.sql_row_cap,
        "tree_src": f"{reverse('sqlwarehouse:schema', args=[slug])}?connection={connection.pk}&environment={env}"
        if connection else "",
    }
