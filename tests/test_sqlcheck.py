"""sqlcheck: splitting scripts, the read-only check against the bypass corpus, statement kinds.

Fast and database-free: only an in-memory DuckDB, used as the reference for DuckDB's own
parsing and splitting.
"""

from __future__ import annotations

import re

import duckdb
import pytest
from sqlglot import exp

from sqlwarehouse import sqlcheck
from sqlwarehouse.sqlcheck import (
    FORBIDDEN_FUNCTIONS,
    SqlCheckError,
    check_read_only,
    is_explain,
    split_statements,
    statement_kind,
)
from tests.sql_bypass_corpus import ENGINE_BYPASSES, PARSER_EDGE_CASES, READ_ONLY_ALLOWED, READ_ONLY_BYPASSES

# DuckDB entries that DuckDB itself parses: bypasses meant for the engine, and the allowed reads.
DUCKDB_VALID = [sql for d, sql, _ in ENGINE_BYPASSES if d == "duckdb"] + [
    sql for d, sql in READ_ONLY_ALLOWED if d == "duckdb"
]

# Scripts on which a naive splitter goes wrong; DuckDB's own splitter is the reference.
SPLIT_CASES = [
    "SELECT 'a;b'; SELECT 2",
    "SELECT 'it''s;'; SELECT \"a\"\";b\"",
    "SELECT E'\\'; SELECT 2; --'",
    "SELECT E'\\\\'; SELECT 2; --'",
    "SELECT 'abc\\'; SELECT 2; --'",
    "SELECT $$ ; $$; SELECT $x$ $$ ; $x$; SELECT 3",
    "SELECT $x$a$X$; SELECT 2; $x$",
    "SELECT 1 /* a /* b */ ; SELECT 2; */; SELECT 3",
    "SELECT 1 -- c\r; SELECT 2",
    "SELECT 1 -- c\x0b; SELECT 2",
    "SELECT 1 -- c\x0c; SELECT 2\n; SELECT 3",
    "SELECT 1\u00a0; SELECT\u3000 2",
    "SELECT 1 ---x\n; SELECT 2 /**/;",
    "EXPLAIN SELECT 1 ; SHOW TABLES ;CALL pragma_version()",
    ";;\n-- only comments\n;/* and more */;",
]


def _entry_id(entry: tuple[str, ...]) -> str:
    return f"{entry[0]}-{entry[-1] if len(entry) == 3 else entry[1]}"


@pytest.fixture(scope="module")
def duck() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


@pytest.mark.parametrize("dialect, sql, why", READ_ONLY_BYPASSES, ids=map(_entry_id, READ_ONLY_BYPASSES))
def test_bypass_is_refused(dialect: str, sql: str, why: str) -> None:
    with pytest.raises(SqlCheckError):
        check_read_only(sql, dialect)


@pytest.mark.parametrize("dialect, sql", READ_ONLY_ALLOWED, ids=map(_entry_id, READ_ONLY_ALLOWED))
def test_read_is_allowed(dialect: str, sql: str) -> None:
    check_read_only(sql, dialect)


def test_corpus_is_large_enough_and_consistent() -> None:
    assert len(READ_ONLY_BYPASSES) >= 40
    assert len(READ_ONLY_ALLOWED) >= 15
    assert {d for d, _, _ in ENGINE_BYPASSES} == {d for d, _ in READ_ONLY_ALLOWED} == {"duckdb", "trino"}
    assert not set(ENGINE_BYPASSES) & set(PARSER_EDGE_CASES)
    assert len({(d, sql) for d, sql, _ in READ_ONLY_BYPASSES}) == len(READ_ONLY_BYPASSES)


@pytest.mark.parametrize("sql", DUCKDB_VALID)
def test_duckdb_entries_are_valid_duckdb_syntax(duck: duckdb.DuckDBPyConnection, sql: str) -> None:
    # So the same corpus run against DuckDB with the check switched off tests the engine, not its parser.
    assert duck.extract_statements(sql)


@pytest.mark.parametrize("sql", [sql for d, sql, _ in PARSER_EDGE_CASES if d == "duckdb"])
def test_duckdb_parser_edge_cases_are_rejected_by_duckdb(duck: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(duckdb.Error):
        duck.extract_statements(sql)


@pytest.mark.parametrize(
    "sql", [sql for sql in SPLIT_CASES + DUCKDB_VALID if "`" not in sql and not sqlcheck._UNSAFE_CHARS.search(sql)]
)
def test_split_agrees_with_duckdb(duck: duckdb.DuckDBPyConnection, sql: str) -> None:
    # DuckDB runs what its own splitter finds: ours must find the same statements.
    assert len(split_statements(sql, "duckdb")) == len(duck.extract_statements(sql))


def test_split_keeps_original_text_without_separators_and_comments() -> None:
    script = "-- report\nselect  A\n  from T ;\n\n  SELECT 'x;y' AS \"a;b\" -- done\n;"
    assert split_statements(script, "duckdb") == ["select  A\n  from T", "SELECT 'x;y' AS \"a;b\""]


def test_split_drops_empty_and_comment_only_statements() -> None:
    assert split_statements(";; -- c\n ; /* only */ ; SELECT 1 ;;", "trino") == ["SELECT 1"]
    assert split_statements("-- nothing here\n/* at all */", "duckdb") == []
    assert split_statements("", "trino") == []


def test_split_keeps_semicolons_inside_strings_names_comments_and_dollar_quotes() -> None:
    script = "SELECT 'a;b', \"c;d\" /* ; */ -- ;\n; SELECT $$;$$, $t$;$t$"
    assert split_statements(script, "duckdb") == ["SELECT 'a;b', \"c;d\"", "SELECT $$;$$, $t$;$t$"]


def test_split_leaves_out_a_trailing_comment_after_command_statements() -> None:
    script = "EXPLAIN SELECT 1 -- why\n; CALL x() /* c */ ;\nSHOW TABLES -- last"
    assert split_statements(script, "trino") == ["EXPLAIN SELECT 1", "CALL x()", "SHOW TABLES"]


def test_split_follows_each_dialect_on_nested_comments() -> None:
    script = "SELECT 1 /* a /* b */ ; SELECT 2 */"
    assert split_statements(script, "duckdb") == ["SELECT 1"]
    assert split_statements(script, "trino") == ["SELECT 1", "SELECT 2 */"]


def test_split_error_names_the_line() -> None:
    with pytest.raises(SqlCheckError, match=r"^line 3: a ' is never closed\.$"):
        split_statements("SELECT 1;\n\nSELECT 'oops\nand more", "duckdb")  # the line the string starts on
    with pytest.raises(SqlCheckError, match=r"^line \d+: .*not closed"):
        split_statements("SELECT 1;\n/* never closed", "trino")


@pytest.mark.parametrize(
    "sql, character",
    [("SELECT 1 AS `--`; DROP TABLE t", "`"), ("SELECT 1;\nSELECT 1 AS \x85$$x$a$; DROP TABLE t$$\u2028", "U+0085")],
)
def test_characters_the_tokenizers_disagree_on_are_refused(sql: str, character: str) -> None:
    with pytest.raises(SqlCheckError, match=re.escape(character)):
        split_statements(sql, "duckdb")
    with pytest.raises(SqlCheckError, match=re.escape(character)):
        check_read_only(sql, "duckdb")


def test_refusal_message_for_one_statement() -> None:
    with pytest.raises(SqlCheckError) as caught:
        check_read_only("INSERT INTO t VALUES (1)", "duckdb")
    assert str(caught.value) == "line 1: read-only access: INSERT is not allowed."


def test_refusal_message_names_the_statement_among_several() -> None:
    with pytest.raises(SqlCheckError) as caught:
        check_read_only("SELECT 1;\n-- cleanup\nDROP TABLE t", "trino")
    assert str(caught.value) == "statement 2 (line 3): read-only access: DROP TABLE is not allowed."


def test_unparsable_statement_is_refused_with_its_line() -> None:
    with pytest.raises(SqlCheckError, match=r"^statement 2 \(line 2\): the statement could not be parsed"):
        check_read_only("SELECT 1;\nSELECT * FROM t WHERE", "duckdb")


def test_script_without_statements_is_refused() -> None:
    with pytest.raises(SqlCheckError, match="no SQL statement"):
        check_read_only("-- SELECT 1\n;", "duckdb")


def test_deep_nesting_is_refused_not_crashed() -> None:
    with pytest.raises(SqlCheckError, match="nested too deeply"):
        check_read_only("SELECT " + "(" * 3000 + "1" + ")" * 3000, "duckdb")


def test_sqlglot_internal_errors_refuse_instead_of_crashing() -> None:
    # sqlglot re-tokenizes the quoted type name and raises a TokenError from inside its parser.
    with pytest.raises(SqlCheckError, match="could not be parsed"):
        check_read_only("SELECT 1::\"a'b\"", "duckdb")
    assert statement_kind("SELECT 1::\"a'b\"", "duckdb") == "SELECT"


def test_unknown_dialect_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="postgres"):
        check_read_only("SELECT 1", "postgres")


@pytest.mark.parametrize(
    "dialect, sql, allowed",
    [
        ("duckdb", "USE memory", True),  # only the session's default catalog changes
        ("trino", "USE tpch.tiny", True),
        ("duckdb", "SELECT my_macro(1), upper('x')", True),  # functions are a deny-list
        ("duckdb", "SET search_path = 'main'", False),  # configuration, however harmless
        ("duckdb", "SELECT current_setting('threads')", False),  # settings can hold secrets
        ("trino", "EXPLAIN SELECT * FROM t", True),
        ("trino", "EXPLAIN DELETE FROM t", False),  # EXPLAIN only of what may run
        ("trino", "WITH FUNCTION f() RETURNS bigint RETURN 1 SELECT f()", False),  # no definitions
        ("trino", "SELECT * FROM TABLE(exclude_columns(input => TABLE(t), columns => DESCRIPTOR(a)))", True),
        ("duckdb", "SELECT * FROM db.orders", True),  # only the table name decides "file or not"
        ("duckdb", "SELECT * FROM orders.csv", False),
        ("duckdb", "SUMMARIZE DELETE FROM t", False),  # SHOW/DESCRIBE/SUMMARIZE of names only, or a query
        ("trino", "SHOW STATS FOR (USE tpch.tiny)", False),  # USE only as a statement of its own
    ],
)
def test_policy_decisions(dialect: str, sql: str, allowed: bool) -> None:
    if allowed:
        check_read_only(sql, dialect)
    else:
        with pytest.raises(SqlCheckError):
            check_read_only(sql, dialect)


def test_forbidden_functions_cover_duckdb_file_and_state_functions(duck: duckdb.DuckDBPyConnection) -> None:
    # Fails when a DuckDB upgrade adds a reader or a state-changing function that isn't listed yet.
    names = {row[0] for row in duck.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
    risky = re.compile(r"^(read_|parquet_|sniff_|iceberg_|delta_|query|json_execute|glob$|nextval$|setval$|write_log$"
                       r"|current_setting$|.*checkpoint$|.*_logging$|.*_profiling$|.*external_resource$|.*_scan$)")
    harmless = {"seq_scan"}
    assert sorted(n for n in names if risky.match(n) and n not in harmless) == sorted(
        n for n in names if risky.match(n) and n in FORBIDDEN_FUNCTIONS
    )


def test_sqlglot_still_keeps_statements_in_the_modules_the_check_relies_on() -> None:
    for node_type in (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Command):
        assert node_type.__module__ in sqlcheck._STATEMENT_MODULES


@pytest.mark.parametrize(
    "dialect, sql, kind",
    [
        ("duckdb", "select 1", "SELECT"),
        ("duckdb", "WITH x AS (SELECT 1) SELECT * FROM x", "SELECT"),
        ("duckdb", "SELECT 1 UNION SELECT 2", "SELECT"),
        ("duckdb", "VALUES (1)", "VALUES"),
        ("duckdb", "-- why\nINSERT INTO t VALUES (1)", "INSERT"),
        ("duckdb", "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT"),
        ("duckdb", "SELECT * INTO t2 FROM t", "SELECT ... INTO"),
        ("duckdb", "CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
        ("duckdb", "create temp view v as select 1", "CREATE VIEW"),
        ("duckdb", "CREATE SECRET s (TYPE s3)", "CREATE SECRET"),
        ("duckdb", "DROP TABLE t", "DROP TABLE"),
        ("duckdb", "EXPLAIN SELECT 1", "EXPLAIN"),
        ("duckdb", "explain analyze DELETE FROM t", "EXPLAIN ANALYZE"),
        ("duckdb", "EXPLAIN (ANALYZE, FORMAT json) SELECT 1", "EXPLAIN ANALYZE"),
        ("duckdb", "SHOW TABLES", "SHOW"),
        ("duckdb", "DESC t", "DESCRIBE"),
        ("duckdb", "SUMMARIZE t", "SUMMARIZE"),
        ("duckdb", "USE memory", "USE"),
        ("duckdb", "SET threads = 1", "SET"),
        ("duckdb", "CALL checkpoint()", "CALL"),
        ("duckdb", "CHECKPOINT", "CHECKPOINT"),
        ("duckdb", "COPY t TO 'x.csv'", "COPY"),
        ("trino", "ALTER TABLE t EXECUTE optimize", "ALTER TABLE"),
        ("trino", "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "MERGE"),
        ("trino", "TRUNCATE TABLE t", "TRUNCATE"),
        ("trino", "START TRANSACTION", "START TRANSACTION"),
        ("trino", "SHOW CREATE TABLE t", "SHOW"),
        ("trino", "DESCRIBE INPUT p", "DESCRIBE"),
        ("trino", "EXPLAIN ANALYZE VERBOSE SELECT 1", "EXPLAIN ANALYZE"),
        ("trino", "RESET SESSION query_max_run_time", "RESET SESSION"),
        ("trino", "DENY SELECT ON t TO u", "DENY"),  # sqlglot can't parse it: the first keyword
    ],
)
def test_statement_kind(dialect: str, sql: str, kind: str) -> None:
    assert statement_kind(sql, dialect) == kind


def test_statement_kind_wants_exactly_one_statement() -> None:
    with pytest.raises(SqlCheckError, match="found 2"):
        statement_kind("SELECT 1; SELECT 2", "duckdb")
    with pytest.raises(SqlCheckError, match="found 0"):
        statement_kind("-- nothing", "duckdb")


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("EXPLAIN SELECT 1", True),
        ("/* plan */ explain analyze SELECT 1", True),
        ("SELECT 'EXPLAIN'", False),
        ("DESCRIBE t", False),
    ],
)
def test_is_explain(sql: str, expected: bool) -> None:
    assert is_explain(sql, "trino") is expected
