"""Tests for tests/trino_server.py: a real Trino, its catalogs, and the access rules production ships.

Personas: the service user ``controlroom`` logs in; ``alice`` (writer) and ``alice~ro`` (reader) are
the end users it impersonates.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import trino

from tests.trino_fixtures import TrinoEndpoint
from tests.trino_server import (
    JAVA_MIN,
    STAMP,
    TRINO_VERSION,
    java_home,
    password_file_entry,
    trino_connect,
    trino_install,
)

pytestmark = pytest.mark.slow

WRITER, READER = "alice", "alice~ro"
# Runs until cancelled; the session limit is a backstop should a test fail before it cancels.
ENDLESS = "SELECT count(*) FROM tpch.sf1000.lineitem a CROSS JOIN tpch.sf1000.lineitem b"
BACKSTOP = {"query_max_run_time": "2m"}


def query(trino_server: TrinoEndpoint, user: str, sql: str) -> list[list[Any]]:
    cursor = trino_server.connect(user).cursor()
    cursor.execute(sql)
    return cursor.fetchall()


def denied(trino_server: TrinoEndpoint, user: str, sql: str) -> str:
    """Run ``sql`` as ``user``, expect Access Denied, return Trino's message."""
    with pytest.raises(trino.exceptions.TrinoUserError) as caught:
        query(trino_server, user, sql)
    assert caught.value.error_name == "PERMISSION_DENIED", caught.value
    assert caught.value.message.startswith("Access Denied")
    return caught.value.message


def start_in_thread(cursor: Any, sql: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Execute ``sql`` on another thread; the dict gets its ``rows`` or its ``error``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            cursor.execute(sql)
            outcome["rows"] = cursor.fetchall()
        except trino.exceptions.Error as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def wait_until_running(cursor: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    # cursor.stats is None until the thread's execute has sent the query: wait for that too.
    while (cursor.stats or {}).get("state") != "RUNNING" or not (cursor.stats or {}).get("processedRows"):
        assert time.monotonic() < deadline, f"query not running after {timeout:.0f} s: {cursor.stats}"
        time.sleep(0.1)


@pytest.fixture
def iceberg_table(trino_server: TrinoEndpoint) -> Iterator[str]:
    """An Iceberg table with two rows, made by the writer in a schema of its own."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    query(trino_server, WRITER, f"CREATE SCHEMA iceberg.{schema}")
    query(trino_server, WRITER, f"CREATE TABLE iceberg.{schema}.t (id integer, name varchar)")
    query(trino_server, WRITER, f"INSERT INTO iceberg.{schema}.t VALUES (1, 'a'), (2, 'b')")
    yield f"iceberg.{schema}.t"
    query(trino_server, WRITER, f"DROP TABLE iceberg.{schema}.t")
    query(trino_server, WRITER, f"DROP SCHEMA iceberg.{schema}")


def test_install_is_stamped_and_a_rerun_is_instant() -> None:
    began = time.monotonic()
    home = trino_install()
    assert time.monotonic() - began < 0.5
    assert (home / STAMP).exists() and home.name == TRINO_VERSION
    assert {p.name for p in (home / "plugin").iterdir()} >= {"tpch", "memory", "iceberg", "postgresql"}


def test_java_home_fits_the_release() -> None:
    release = (java_home() / "release").read_text()
    version = re.search(r'JAVA_VERSION="([\d.]+)"', release)
    assert version and tuple(map(int, version.group(1).split("."))) >= JAVA_MIN


def test_java_home_says_what_is_needed_when_nothing_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.trino_server._jdk_check", lambda home: ((17,), "Java 17"))
    with pytest.raises(RuntimeError, match=r"needs a JDK >= 24\.0\.1 with modules .*java\.sql"):
        java_home()


def test_password_file_entry_is_pbkdf2_hex() -> None:
    entry = password_file_entry("controlroom", "secret")
    assert re.fullmatch(r"controlroom:1000:[0-9a-f]{32}:[0-9a-f]{64}", entry)
    assert entry != password_file_entry("controlroom", "secret")  # salted


def test_tpch_nation_has_25_rows(trino_server: TrinoEndpoint) -> None:
    assert query(trino_server, READER, "SELECT count(*) FROM tpch.tiny.nation") == [[25]]


def test_writer_round_trips_iceberg_catalogued_in_postgres(trino_server: TrinoEndpoint, iceberg_table: str) -> None:
    assert query(trino_server, WRITER, f"INSERT INTO {iceberg_table} VALUES (3, 'c')") == [[1]]

    assert query(trino_server, WRITER, f"SELECT * FROM {iceberg_table} ORDER BY id") == [[1, "a"], [2, "b"], [3, "c"]]
    schema = iceberg_table.split(".")[1]
    catalog_rows = f"SELECT table_name FROM postgresql.public.iceberg_tables WHERE table_namespace = '{schema}'"
    assert query(trino_server, WRITER, catalog_rows) == [["t"]]


def test_writer_writes_memory_and_postgresql_but_only_reads_tpch(trino_server: TrinoEndpoint) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    for catalog_schema in ("memory.default", "postgresql.public"):
        query(trino_server, WRITER, f"CREATE TABLE {catalog_schema}.{name} AS SELECT 1 AS id")
        assert query(trino_server, READER, f"SELECT id FROM {catalog_schema}.{name}") == [[1]]
        query(trino_server, WRITER, f"DROP TABLE {catalog_schema}.{name}")
    denied(trino_server, WRITER, "CREATE TABLE tpch.tiny.x (id integer)")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO {table} VALUES (9, 'z')",
        "CREATE TABLE {schema}.t2 (id integer)",
        "CREATE TABLE {schema}.t3 AS SELECT 1 AS id",
        "DELETE FROM {table} WHERE id = 1",
        "UPDATE {table} SET name = 'x'",
        "ALTER TABLE {table} ADD COLUMN extra integer",
        "DROP TABLE {table}",
        "CREATE SCHEMA iceberg.s_reader",
        "CREATE TABLE memory.default.t_reader (id integer)",
        "CALL iceberg.system.unregister_table('{bare_schema}', 't')",
    ],
)
def test_reader_selects_but_is_denied_writes(trino_server: TrinoEndpoint, iceberg_table: str, statement: str) -> None:
    schema = iceberg_table.rsplit(".", 1)[0]
    sql = statement.format(table=iceberg_table, schema=schema, bare_schema=schema.split(".")[1])

    denied(trino_server, READER, sql)

    assert query(trino_server, READER, f"SELECT count(*) FROM {iceberg_table}") == [[2]]


def test_reader_is_denied_table_procedures_by_the_guard_plugin(trino_server: TrinoEndpoint,
                                                               iceberg_table: str) -> None:
    """File-based rules never check table procedures; compose/trino/ro-guard does."""
    message = denied(trino_server, READER, f"ALTER TABLE {iceberg_table} EXECUTE optimize")
    assert "read-only identity" in message
    assert query(trino_server, WRITER, f"ALTER TABLE {iceberg_table} EXECUTE optimize") is not None


def test_service_user_itself_reads_only_system(trino_server: TrinoEndpoint) -> None:
    assert query(trino_server, trino_server.service_user, "SELECT count(*) FROM system.runtime.nodes")[0][0] >= 1
    denied(trino_server, trino_server.service_user, "SELECT count(*) FROM tpch.tiny.nation")


@pytest.mark.parametrize("user", ["alice", "bob.smith", "a_b-c@x", "a_b-c@x~ro"])
def test_service_user_impersonates_safe_names(trino_server: TrinoEndpoint, user: str) -> None:
    assert query(trino_server, user, "SELECT current_user") == [[user]]


@pytest.mark.parametrize("user", ["evil user", "alice~rw", "alice~ro~ro", "~ro", "o'hara", "a/b", "x" * 65])
def test_service_user_cannot_impersonate_other_names(trino_server: TrinoEndpoint, user: str) -> None:
    message = denied(trino_server, user, "SELECT 1")

    assert "cannot impersonate" in message


@pytest.mark.parametrize("login", ["controlroom:wrong-password", "alice:<password>"])
def test_wrong_credentials_are_refused(trino_server: TrinoEndpoint, login: str) -> None:
    parts = urlsplit(trino_server.url)
    user, password = login.replace("<password>", parts.password or "").split(":")
    url = urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))
    cursor = trino_connect(url, user=WRITER, ca_file=trino_server.ca_file).cursor()

    with pytest.raises(trino.exceptions.HttpError, match="401"):
        cursor.execute("SELECT 1")


def test_cancel_from_another_thread_marks_the_query_user_canceled(trino_server: TrinoEndpoint) -> None:
    cursor = trino_server.connect(WRITER, session_properties=BACKSTOP).cursor()
    thread, outcome = start_in_thread(cursor, ENDLESS)
    wait_until_running(cursor)
    assert cursor.stats["totalSplits"] > 0 and "completedSplits" in cursor.stats

    cursor.cancel()

    thread.join(30)
    assert outcome["error"].error_name == "USER_CANCELED"
    info = f"SELECT state, error_code, \"user\" FROM system.runtime.queries WHERE query_id = '{cursor.query_id}'"
    assert query(trino_server, trino_server.service_user, info) == [["FAILED", "USER_CANCELED", WRITER]]


def test_service_user_kills_an_end_users_query_and_end_users_cannot(trino_server: TrinoEndpoint) -> None:
    cursor = trino_server.connect("bob", session_properties=BACKSTOP).cursor()
    thread, outcome = start_in_thread(cursor, ENDLESS)
    wait_until_running(cursor)
    kill = f"CALL system.runtime.kill_query(query_id => '{cursor.query_id}', message => 'stopped by test')"
    try:
        denied(trino_server, WRITER, kill)

        query(trino_server, trino_server.service_user, kill)
    finally:
        thread.join(30)
        cursor.cancel()  # no-op once killed
    assert outcome["error"].error_name == "ADMINISTRATIVELY_KILLED"
