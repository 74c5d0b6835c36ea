"""Split SQL scripts into statements, and check that a script only reads (a first layer of defence).

Policy of ``check_read_only`` (the engines enforce read-only access too):

* Statement types are an allow-list: queries (SELECT, set operations, WITH ... SELECT, VALUES,
  TABLE t, DuckDB's FROM-first and PIVOT), SHOW, DESCRIBE, DuckDB's SUMMARIZE, USE (it only sets
  the session's default catalog/schema) and EXPLAIN [ANALYZE] of an allowed statement (ANALYZE
  runs it). All else is refused: SET/RESET, CALL, PRAGMA, transactions, whatever sqlglot can
  only parse as a generic ``Command``. The whole tree is walked, so a write in a CTE or subquery,
  ``SELECT ... INTO``, ``NEXT VALUE FOR`` or an inline function definition is refused too.
* Functions are a deny-list: a function not in ``FORBIDDEN_FUNCTIONS`` is allowed. Calls are found
  on the tokens as written (``read_csv(``, ``"read_csv"(``, ``'f'.read_text(``) and in the tree;
  any ``system.<name>(...)`` (Trino connectors' pass-through functions run any SQL remotely) too.
* DuckDB table names that DuckDB reads as files (``FROM 'x.csv'``, ``FROM x.csv``) are refused, and
  so is what sqlglot's tokenizer may read unlike the engine: backticks, control characters, and
  a script of comments only.
"""

from __future__ import annotations

import bisect
import functools
import re

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

DIALECTS = frozenset({"duckdb", "trino"})

# Forbidden functions by reason (shown to the user); names compare in lower case, qualified or not.
_FUNCTION_GROUPS: dict[str, frozenset[str]] = {
    # DuckDB's file and network readers; PostgreSQL-style file access in case an engine offers it.
    "it reads files or the network": frozenset({
        "read_csv", "read_csv_auto", "read_single_csv_file", "sniff_csv", "read_parquet", "parquet_scan",
        "read_single_parquet_file", "parquet_metadata", "parquet_file_metadata", "parquet_full_metadata",
        "parquet_kv_metadata", "parquet_schema", "parquet_bloom_probe", "read_json", "read_json_auto",
        "read_json_objects", "read_json_objects_auto", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
        "read_single_json_file", "read_text", "read_blob", "read_duckdb", "glob", "iceberg_scan", "iceberg_metadata",
        "iceberg_snapshots", "delta_scan", "read_xlsx", "read_avro", "st_read", "st_read_meta", "st_readosm",
        "st_readshp", "sqlite_scan", "sqlite_attach", "postgres_scan", "postgres_scan_pushdown", "postgres_attach",
        "mysql_scan", "http_get", "http_post", "load_aws_credentials", "pg_read_file", "pg_read_binary_file",
        "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export",
    }),
    # DuckDB's query(), query_table() and plan runner, scanners' pass-through queries, and Trino
    # connectors' pass-through table functions (query, raw_query, procedure), which run any SQL remotely.
    "it runs SQL given as text": frozenset({
        "query", "query_table", "json_execute_serialized_sql", "raw_query", "procedure", "postgres_query",
        "postgres_execute", "mysql_query", "mysql_execute", "dblink", "dblink_exec",
    }),
    "it changes state": frozenset({
        "nextval", "setval", "checkpoint", "force_checkpoint", "enable_logging", "disable_logging",
        "truncate_duckdb_logs", "write_log", "enable_profiling", "disable_profiling", "create_external_resource",
        "register_external_resource", "register_external_resource_type", "destroy_external_resource",
        "deregister_external_resource", "add_parquet_key", "import_database", "copy_database",
    }),
    # Settings can hold credentials (s3_secret_access_key); the environment often does.
    "it reveals settings, secrets or the environment": frozenset({
        "getenv", "current_setting", "duckdb_settings", "duckdb_secrets", "which_secret", "duckdb_external_resources"}),
    # Scans of raw memory addresses or of the host process's Python objects.
    "it reads process memory or Python objects": frozenset({
        "arrow_scan", "arrow_scan_dumb", "python_arrow_scan", "pandas_scan", "python_map_function"}),
}
FORBIDDEN_FUNCTIONS: frozenset[str] = frozenset().union(*_FUNCTION_GROUPS.values())

# A DuckDB table name ending in one of these is read as a file when no such table exists.
DUCKDB_FILE_SUFFIXES = frozenset({
    "csv", "tsv", "tbl", "txt", "json", "jsonl", "ndjson", "parquet", "db", "duckdb", "sqlite", "sqlite3", "geojson",
    "ddb", "xlsx", "arrow", "ipc", "feather", "avro", "orc", "gz", "gzip", "zst", "zstd", "bz2", "xz", "zip",
})
_PATH_CHARS = re.compile(r"[./\\:*?~]")
# Control characters, and white space to Python (so to sqlglot) that DuckDB reads as part of a
# name: "\x85$$" starts a string for sqlglot but not for DuckDB, which would then run what follows.
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0e-\x1f\x7f\x85\u1680\u2028\u2029]")

# Statement roots allowed when a query is expected; USE is allowed only as a whole statement.
_QUERY_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values, exp.Pivot)
# Nodes that are statements (or make one write) wherever they appear in a tree. The sqlglot
# modules below hold the DDL/DML classes; the explicit list keeps working if they move.
_STATEMENT_MODULES = frozenset({"sqlglot.expressions.ddl", "sqlglot.expressions.dml"})
_HARMLESS_STATEMENT_MODULE_NODES = (exp.Comprehension, exp.CharacterSet, exp.Heredoc)
_FORBIDDEN_NODES = (
    exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Copy, exp.Export, exp.LoadData, exp.Create, exp.Drop,
    exp.Alter, exp.TruncateTable, exp.Command, exp.Set, exp.SetItem, exp.Pragma, exp.Use, exp.Transaction,
    exp.Commit, exp.Rollback, exp.Attach, exp.Detach, exp.Install, exp.Describe, exp.Show, exp.Summarize,
    exp.Execute, exp.Kill, exp.NextValueFor, exp.UserDefinedFunction, exp.Grant, exp.Revoke, exp.Analyze,
    exp.Into, exp.Comment, exp.Refresh, exp.Cache, exp.Uncache, exp.Lock, exp.LockingStatement,
    exp.MultitableInserts, exp.ConditionalInsert, exp.Put, exp.Get, exp.StoredProcedure, exp.Returning,
)
_KIND_LABELS: dict[type[exp.Expr], str] = {
    exp.TruncateTable: "TRUNCATE", exp.Transaction: "START TRANSACTION", exp.Into: "SELECT ... INTO",
    exp.NextValueFor: "NEXT VALUE FOR", exp.UserDefinedFunction: "a function definition",
}

_SHOW_WORDS = frozenset({"SHOW", "DESCRIBE", "DESC", "SUMMARIZE"})
_QUERY_START_WORDS = frozenset({"SELECT", "WITH", "FROM", "VALUES", "TABLE", "PIVOT", "PIVOT_WIDER", "UNPIVOT"})
_EXPLAIN_FLAGS = frozenset({"ANALYZE", "ANALYSE", "VERBOSE"})
_EXPLAIN_OPTIONS = _EXPLAIN_FLAGS | {"FORMAT", "TYPE"}
# Words that never belong in SHOW/DESCRIBE/SUMMARIZE (Trino's SHOW CREATE ... is fine).
_STATEMENT_VERBS = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "ALTER", "TRUNCATE", "COPY", "CALL", "EXECUTE", "SET", "RESET",
    "ATTACH", "DETACH", "INSTALL", "LOAD", "PRAGMA", "VACUUM", "CHECKPOINT", "EXPORT", "IMPORT", "GRANT", "REVOKE",
    "DENY", "PREPARE", "DEALLOCATE", "COMMIT", "ROLLBACK", "BEGIN", "ABORT", "ANALYZE", "REFRESH", "COMMENT", "UPSERT",
    "REPLACE", "USE", "EXPLAIN",
})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class SqlCheckError(Exception):
    """The SQL can't be split or isn't allowed; the message is one sentence fit for the user."""


class _Refused(Exception):
    def __init__(self, reason: str, line: int | None = None, *, syntax: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.line, self.syntax = reason, line, syntax


def _dialect(dialect: str) -> Dialect:
    if dialect not in DIALECTS:
        raise ValueError(f"Unsupported SQL dialect {dialect!r}; expected one of {sorted(DIALECTS)}.")
    return Dialect.get_or_raise(dialect)


@functools.lru_cache(maxsize=8)
def _line_breaks(sql: str) -> list[int]:
    """Where each line of ``sql`` starts, counting line breaks as sqlglot does (CRLF once)."""
    return [found.end() for found in re.finditer(r"\r\n?|\n", sql)]


def _tokenize(sql: str, dialect: str, start: int = 0, end: int | None = None) -> list[Token]:
    """Tokens of ``sql[start:end]``, with positions and line numbers in the whole script."""
    tokenizer, lines = _dialect(dialect).tokenizer(), bisect.bisect_right(_line_breaks(sql), start)
    try:
        tokens = tokenizer.tokenize(sql[start:end])
    except TokenError as exc:  # "Missing ' from <line>:<offset>" when a quote isn't closed
        if missing := re.search(r"Missing (\S+) from \d+:(\d+)", str(exc.__cause__ or "")):
            line = bisect.bisect_right(_line_breaks(sql), start + int(missing.group(2))) + 1
            raise _Refused(f"a {missing.group(1)} is never closed", line, syntax=True) from exc
        line = getattr(getattr(tokenizer, "_core", None), "_line", None)  # where the tokenizer stopped
        raise _Refused("a string, name or comment is not closed", line and line + lines, syntax=True) from exc
    for token in tokens:
        token.start, token.end, token.line = token.start + start, token.end + start, token.line + lines
    return tokens


def _statements(sql: str, dialect: str) -> list[list[Token]]:
    """The script's statements as token lists (empty and comment-only statements dropped)."""
    if odd := _UNSAFE_CHARS.search(sql):
        line = bisect.bisect_right(_line_breaks(sql), odd.start()) + 1
        raise _Refused(f"the invisible character U+{ord(odd.group()):04X} is not allowed", line, syntax=True)
    statements: list[list[Token]] = [[]]
    for token in _tokenize(sql, dialect):
        if token.token_type == TokenType.UNKNOWN:
            # A backtick quotes names in DuckDB but means nothing to sqlglot: `--` would hide code.
            raise _Refused(f"the character {token.text} is not allowed, quote names with \"", token.line, syntax=True)
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def _span(sql: str, dialect: str, tokens: list[Token]) -> tuple[int, int]:
    """Where a statement's text starts and ends (end exclusive), comments around it excluded."""
    first, last = tokens[0], tokens[-1]
    # sqlglot folds the rest of a command (EXPLAIN, CALL...) into one odd string token: tokenize it for real.
    if len(tokens) == 2 and first.token_type in _dialect(dialect).tokenizer_class.COMMANDS:
        rest = _tokenize(sql, dialect, first.end + 1, max(last.end + 1, first.end + 1))
        return first.start, _span(sql, dialect, rest)[1] if rest else first.end + 1
    return first.start, last.end + 1


def _words(token: Token) -> list[str]:
    return token.text.upper().split() or [""]


def _function_refusal(name: str) -> str:
    reason = next(why for why, group in _FUNCTION_GROUPS.items() if name in group)
    return f"the function {name}() is not allowed ({reason})"


def _check_calls(tokens: list[Token]) -> None:
    """Refuse calls of forbidden functions as written, and any ``system.<name>(...)``."""
    for i, token in enumerate(tokens[:-1]):
        if tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        name = token.text.lower()
        if name in FORBIDDEN_FUNCTIONS:
            raise _Refused(_function_refusal(name), token.line)
        if i >= 2 and tokens[i - 1].token_type == TokenType.DOT and tokens[i - 2].text.lower() == "system":
            raise _Refused(f"the function system.{name}() is not allowed (it may run any SQL remotely)", token.line)


def _check_duckdb_table_name(parts: list[tuple[str, bool]], line: int | None) -> None:
    """Refuse a DuckDB table name that DuckDB would read as a file path."""
    quoted_path = any(quoted and _PATH_CHARS.search(name) for name, quoted in parts)
    if quoted_path or (parts and parts[-1][0].lower() in DUCKDB_FILE_SUFFIXES):
        name = ".".join(name for name, _ in parts)
        raise _Refused(f"reading the file '{name}' is not allowed, query a table instead", line)


def _parse(sql: str, dialect: str, tokens: list[Token]) -> exp.Expr:
    try:
        trees = _dialect(dialect).parser().parse(tokens, sql)
    except RecursionError as exc:
        raise _Refused("the statement is nested too deeply to be checked", tokens[0].line) from exc
    except Exception as exc:  # fail closed on any sqlglot error, e.g. a TokenError from inside the parser
        error = exc.errors[0] if isinstance(exc, ParseError) and exc.errors else {}
        near = str(error.get("highlight") or "").strip()
        raise _Refused(f"the statement could not be parsed{f' near {near!r}' if near else ''}, so it cannot be checked",
                       error.get("line") or tokens[0].line, syntax=True) from exc
    if len(trees) != 1 or trees[0] is None:  # not expected: the tokens hold one statement
        raise _Refused("the statement could not be parsed, so it cannot be checked", tokens[0].line, syntax=True)
    return trees[0]


def _node_kind(node: exp.Expr) -> str:
    if isinstance(node, exp.Select):
        return "SELECT ... INTO" if node.args.get("into") else "SELECT"
    if isinstance(node, (exp.SetOperation, exp.Subquery)):
        return "SELECT"
    if isinstance(node, exp.Pivot):
        return "UNPIVOT" if node.args.get("unpivot") else "PIVOT"
    if isinstance(node, (exp.Create, exp.Drop, exp.Alter)):
        return f"{type(node).__name__.upper()} {str(node.args.get('kind') or '').upper()}".strip()
    if isinstance(node, exp.Command):  # name the object too: ALTER TABLE ... EXECUTE, CREATE SECRET
        rest = node.expression.name if isinstance(node.expression, exp.Expr) else str(node.expression or "")
        object_words = rest.split()[:1] if str(node.this).upper() in ("ALTER", "CREATE", "DROP") else []
        return " ".join([str(node.this), *object_words]).upper()
    default = type(node).__name__.upper() if isinstance(node, exp.Values) or _forbidden(node) else ""
    return _KIND_LABELS.get(type(node), default)


def _forbidden(node: exp.Expr) -> bool:
    harmless = isinstance(node, _HARMLESS_STATEMENT_MODULE_NODES)
    return not harmless and (isinstance(node, _FORBIDDEN_NODES) or type(node).__module__ in _STATEMENT_MODULES)


def _function_names(node: exp.Expr) -> set[str]:
    if isinstance(node, exp.Anonymous):
        return {node.name.lower()}
    try:
        return {name.lower() for name in type(node).sql_names()} if isinstance(node, exp.Func) else set()
    except NotImplementedError:
        return set()


def _check_tree(tree: exp.Expr, dialect: str, tokens: list[Token], *, query_only: bool) -> None:
    line = tokens[0].line
    if not isinstance(tree, _QUERY_ROOTS if query_only else (*_QUERY_ROOTS, exp.Use)):
        raise _Refused(f"{_node_kind(tree) or ' '.join(_words(tokens[0]))} is not allowed", line)
    for node in tree.walk():
        if node is not tree and _forbidden(node):
            where = "" if isinstance(node, exp.Into) else " inside the statement"
            raise _Refused(f"{_node_kind(node)}{where} is not allowed", line)
        if forbidden := _function_names(node) & FORBIDDEN_FUNCTIONS:
            raise _Refused(_function_refusal(min(forbidden)), line)
        # USE names an attached database, never a file.
        if dialect == "duckdb" and isinstance(node, exp.Table) and not isinstance(node.this, exp.Func) \
                and not isinstance(tree, exp.Use):
            _check_duckdb_table_name([(p.name, bool(p.args.get("quoted"))) for p in node.parts], line)


def _matching_paren(tokens: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(tokens[j].token_type, 0)
        if depth == 0:
            return j
    raise _Refused("a parenthesis is never closed", tokens[i].line, syntax=True)


def _explain_inner(tokens: list[Token]) -> tuple[int, bool]:
    """Where the statement EXPLAIN explains starts, and whether EXPLAIN runs it (ANALYZE)."""
    i, analyze = 0, False
    while i < len(tokens):
        word = tokens[i].text.upper()
        if word in _EXPLAIN_FLAGS:
            analyze, i = analyze or word != "VERBOSE", i + 1
        elif (tokens[i].token_type == TokenType.L_PAREN and i + 1 < len(tokens)
              and tokens[i + 1].text.upper() in _EXPLAIN_OPTIONS):  # (FORMAT json), (TYPE DISTRIBUTED)
            close = _matching_paren(tokens, i)
            for option in tokens[i + 1 : close]:
                plain = option.token_type in (TokenType.COMMA, TokenType.STRING, TokenType.NUMBER)
                if not plain and not _WORD.fullmatch(option.text):
                    raise _Refused(f"EXPLAIN with the option '{option.text}' is not allowed", option.line)
                analyze = analyze or option.text.upper() in ("ANALYZE", "ANALYSE")
            i = close + 1
        else:
            return i, analyze
    raise _Refused("EXPLAIN needs a statement to explain", tokens[0].line if tokens else None)


def _check_show(sql: str, dialect: str, head: Token, end: int) -> None:
    """SHOW / DESCRIBE / SUMMARIZE: either of a query (checked as one) or of names only."""
    rest = _tokenize(sql, dialect, head.end + 1, end)
    if rest and (rest[0].text.upper() in _QUERY_START_WORDS or rest[0].token_type == TokenType.L_PAREN):
        return _check_statement(sql, dialect, rest[0].start, end, query_only=True)
    name: list[tuple[str, bool]] = []
    i = 0
    while i < len(rest):
        token, previous = rest[i], rest[i - 1].text.upper() if i else ""
        if token.token_type == TokenType.L_PAREN and previous == "FOR":
            # Trino's SHOW STATS FOR (SELECT ...) runs the query: check it as one.
            close = _matching_paren(rest, i)
            _check_statement(sql, dialect, rest[min(i + 1, close)].start, rest[close].start, query_only=True)
            i = close + 1
            continue
        word = token.token_type != TokenType.STRING and _WORD.fullmatch(token.text)
        if token.token_type == TokenType.IDENTIFIER or (word and token.text.upper() not in _STATEMENT_VERBS):
            name.append((token.text, token.token_type == TokenType.IDENTIFIER))
        elif token.token_type != TokenType.DOT and not (
                token.token_type == TokenType.STRING and previous in ("LIKE", "ILIKE", "ESCAPE")):
            raise _Refused(f"{_words(head)[0]} with {token.text!r} is not allowed", token.line)
        dotted = TokenType.DOT in (token.token_type, rest[min(i + 1, len(rest) - 1)].token_type)
        if dialect == "duckdb" and name and (not dotted or i + 1 == len(rest)):
            _check_duckdb_table_name(name, token.line)
            name = []
        i += 1
    return None


def _check_statement(sql: str, dialect: str, start: int, end: int, *, query_only: bool = False) -> None:
    """Raise ``_Refused`` unless the statement in ``sql[start:end]`` only reads."""
    tokens = _tokenize(sql, dialect, start, end)
    if not tokens:
        raise _Refused("a statement is missing", syntax=True)
    _check_calls(tokens)
    words = _words(tokens[0])
    if words == ["EXPLAIN"] and not query_only:
        rest = _tokenize(sql, dialect, tokens[0].end + 1, end)
        inner, _ = _explain_inner(rest)
        _check_statement(sql, dialect, rest[inner].start, end)
    elif words[0] in _SHOW_WORDS and not query_only:
        _check_show(sql, dialect, tokens[0], end)
    else:
        _check_tree(_parse(sql, dialect, tokens), dialect, tokens, query_only=query_only)


def _message(refused: _Refused, line: int, number: int | None = None) -> str:
    where = f"statement {number} (line {refused.line or line})" if number else f"line {refused.line or line}"
    return f"{where}: {'' if refused.syntax else 'read-only access: '}{refused.reason}."


def _split(sql: str, dialect: str) -> list[tuple[list[Token], int, int]]:
    try:
        return [(tokens, *_span(sql, dialect, tokens)) for tokens in _statements(sql, dialect)]
    except _Refused as refused:
        raise SqlCheckError(_message(refused, 1)) from refused


def split_statements(sql: str, dialect: str) -> list[str]:
    """The script's statements as their original text, without ';' and the comments around them.

    Only the tokenizer is used, so SQL sqlglot can't parse still splits; a string or comment left
    open (or a refused character, see the module docstring) raises ``SqlCheckError`` with its line.
    """
    return [sql[start:end].strip() for _, start, end in _split(sql, dialect)]


def check_read_only(sql: str, dialect: str) -> None:
    """Raise ``SqlCheckError`` unless every statement of ``sql`` only reads (see the module docstring)."""
    statements = _split(sql, dialect)
    if not statements:
        raise SqlCheckError("There is no SQL statement to check.")
    for number, (tokens, start, end) in enumerate(statements, start=1):
        try:
            _check_statement(sql, dialect, start, end)
        except _Refused as refused:
            raise SqlCheckError(_message(refused, tokens[0].line, number if len(statements) > 1 else None)) from refused


def statement_kind(sql: str, dialect: str) -> str:
    """A short label of one statement's kind for display and audit: SELECT, INSERT, EXPLAIN ANALYZE...

    Unparsable SQL gets its first keyword; ``SqlCheckError`` if ``sql`` isn't exactly one statement.
    """
    statements = _split(sql, dialect)
    if len(statements) != 1:
        raise SqlCheckError(f"Expected one SQL statement, found {len(statements)}.")
    tokens, _, end = statements[0]
    words = _words(tokens[0])
    try:
        if words == ["EXPLAIN"]:
            analyze = _explain_inner(_tokenize(sql, dialect, tokens[0].end + 1, end))[1]
            return "EXPLAIN ANALYZE" if analyze else "EXPLAIN"
        if words[0] in _SHOW_WORDS:
            return "DESCRIBE" if words[0] == "DESC" else words[0]
        return _node_kind(_parse(sql, dialect, tokens)) or " ".join(words)
    except _Refused:
        return " ".join(words)


def is_explain(statement: str, dialect: str) -> bool:
    """Whether a single statement is an EXPLAIN, with or without ANALYZE."""
    return statement_kind(statement, dialect).startswith("EXPLAIN")
