"""Tests for tests/servers.py: real servers, spoken to over their real protocols."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import PostgresServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def pg_query(url: str, sql: str) -> str:
    """Run one statement and return the first column of the first row as text."""
    try:
        import psycopg
    except ImportError:  # fall back to the psql client from the Debian package
        done = subprocess.run(
            ["psql", url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout.strip()
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        cursor = conn.execute(sql)
        row = cursor.fetchone() if cursor.description else None
        return "" if row is None else str(row[0])


def redis_command(port: int, command: bytes) -> bytes:
    """Send one inline command to Redis on ``port`` and return the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(1024)


def is_listening(port: int) -> bool:
    """Return whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server shared by this module's tests; checks cleanup after."""
    server = PostgresServer()
    server.start()
    port, tmpdir = server.port, server.tmpdir
    assert port is not None and tmpdir is not None and tmpdir.is_dir()
    yield server
    server.stop()
    assert not is_listening(port), "postgres still listening after stop()"
    assert not tmpdir.exists(), "temp dir left behind"
    server.stop()  # idempotent


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.slow  # starts PostgreSQL
def test_postgres_accepts_queries(postgres: PostgresServer) -> None:
    assert postgres.url == f"postgres://controlroom@127.0.0.1:{postgres.port}/controlroom"
    assert pg_query(postgres.url, "select 1") == "1"
    assert pg_query(postgres.url, "select current_database()") == "controlroom"
    assert pg_query(postgres.url, "show fsync") == "off"
    assert pg_query(postgres.url, "show listen_addresses") == "127.0.0.1"


def test_postgres_user_can_create_test_database(postgres: PostgresServer) -> None:
    """Django's test runner needs CREATE DATABASE test_<name>."""
    assert postgres.url is not None
    assert pg_query(postgres.url, "select rolsuper from pg_roles where rolname = current_user") in {"t", "True"}
    pg_query(postgres.url, "create database test_controlroom_probe")
    pg_query(postgres.url, "drop database test_controlroom_probe")


def port_of(url: str) -> int:
    """Return the port of a ``scheme://user@host:port/db`` URL."""
    port = urlsplit(url).port
    assert port is not None, url
    return port


def test_redis_ping_and_restart() -> None:
    with RedisServer() as url:
        port = port_of(url)
        assert url == f"redis://127.0.0.1:{port}/0"
        assert redis_command(port, b"PING").startswith(b"+PONG")
        assert redis_command(port, b"SET probe 1") == b"+OK\r\n"
    assert not is_listening(port)

    server = RedisServer(port=port)
    with server:
        tmpdir = server.tmpdir
        redis_command(port, b"SET probe 1")
        assert server.restart() == url  # same port, fresh empty server
        assert redis_command(port, b"PING").startswith(b"+PONG")
        assert redis_command(port, b"EXISTS probe") == b":0\r\n"
    assert tmpdir is not None and not tmpdir.exists()
    assert not is_listening(port)


@pytest.mark.slow  # starts servers
def test_cli_exports_urls_and_propagates_exit_code() -> None:
    variables = ("DATABASE_URL", "CONTROLROOM_TEST_REDIS_URL")
    script = f"import os, sys; print(*map(os.environ.get, {variables})); sys.exit(3)"
    env = {k: v for k, v in os.environ.items() if k not in variables}
    cli = [sys.executable, "-m", "tests.servers", "--postgres", "--redis", "--"]
    done = subprocess.run(
        [*cli, sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    database_url, redis_url = done.stdout.split()
    assert database_url.startswith("postgres://controlroom@127.0.0.1:")
    assert redis_url.startswith("redis://127.0.0.1:")
    assert "postgres ready at 127.0.0.1:" in done.stderr
    assert "redis ready at 127.0.0.1:" in done.stderr
    for url in (database_url, redis_url):  # servers are gone afterwards
        assert not is_listening(port_of(url))


def test_postgres_restart_keeps_data_and_port(postgres: PostgresServer) -> None:
    assert postgres.url is not None
    pg_query(postgres.url, "CREATE TABLE IF NOT EXISTS survives (x int); INSERT INTO survives VALUES (7)")
    before = pg_query(postgres.url, "SELECT pg_postmaster_start_time()")
    postgres.restart()
    assert pg_query(postgres.url, "SELECT pg_postmaster_start_time()") != before
    assert pg_query(postgres.url, "SELECT max(x) FROM survives") == "7"
