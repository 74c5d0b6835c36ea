"""Test connection: one real round trip to what a connection points at, with short timeouts.

- DuckDB and Trino run ``SELECT 1`` through the same engine the SQL editor uses (read-only, as
  the admin who asked); Trino's host and port get a TCP connect first, so an unreachable host
  fails within ``CONNECT_TIMEOUT_S`` instead of the client's retries.
- A catalog lists its namespaces through PyIceberg (the secrets resolved as a phase would).
- Spark is not started: the target config is checked and, for a standalone master or Spark
  Connect, the host and port must accept a TCP connection. Whether Spark itself works shows
  only when a phase runs.
- PostgreSQL (an ingestion source) connects read-only and counts the tables its user sees.
- Superset signs in (``/api/v1/security/login``) and reads ``/api/v1/me/``; the Trino connection
  it names must exist, and Superset's own read-only Trino login must work (``SELECT 1`` as it).

Each test is audited (``connection.test``) with its outcome; no secret reaches the result."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction

from connections.models import Connection
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Environment, Role
from controlroom.network import network_cause

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 3.0
QUERY_TIMEOUT_S = 10


@dataclass(frozen=True)
class ProbeResult:
    """One line for the page: ``ok``, what was checked or what failed, and how long it took."""

    ok: bool
    message: str
    ms: int = 0


class _Failed(Exception):
    """A probe step failed; the message is the sentence for the admin."""


def _tcp(what: str, host: str, port: int, *, where: str = "") -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise _Failed(f"{what} at {where or f'{host}:{port}'} could not be reached: {network_cause(exc)}.") from None


def _environment_for(conn: Connection) -> Environment:
    """The environment a test acts in: the connection's own, else dev (or the first there is)
    among those where this connection is the one its name resolves to."""
    if conn.environment_id:
        return conn.environment
    overridden = set(Connection.objects.filter(workspace_id=conn.workspace_id, name=conn.name,
                                               environment__isnull=False).values_list("environment_id", flat=True))
    envs = [e for e in Environment.objects.filter(workspace_id=conn.workspace_id).order_by("pk")
            if e.pk not in overridden]
    if not envs:
        raise _Failed(f"Every environment has its own '{conn.name}': test those instead.")
    return next((e for e in envs if e.name == Environment.Name.DEV), envs[0])


def _select_one(conn: Connection, access: Access, environment: Environment | None) -> None:
    from sqlwarehouse.engines import EngineError, collect, open_engine

    user = getattr(access.user, "username", "") or "controlroom"
    try:
        engine = open_engine(conn, user=user, read_only=True, environment=environment)
        try:
            result = collect(engine.run("SELECT 1", [], QUERY_TIMEOUT_S), max_rows=1)
        finally:
            engine.close()
    except EngineError as exc:
        raise _Failed(str(exc)) from None
    if result.rows != [(1,)]:
        raise _Failed(f"SELECT 1 answered {result.rows[:1]!r}, not 1.")


def _probe_duckdb(conn: Connection, access: Access) -> str:
    from sqlwarehouse.engines import per_environment

    environment = _environment_for(conn) if per_environment(conn) else conn.environment
    _select_one(conn, access, environment)
    where = f" (the {environment.name} database)" if per_environment(conn) else ""
    return f"DuckDB answered SELECT 1{where}"


def _probe_trino(conn: Connection, access: Access) -> str:
    config = conn.config or {}
    host, port = str(config.get("host") or ""), config.get("port", 8080)
    scheme = config.get("http_scheme") or "http"
    if not host or not isinstance(port, int):
        raise _Failed("The connection names no Trino host and port.")
    _tcp("Trino", host, port, where=f"{scheme}://{host}:{port}")
    _select_one(conn, access, conn.environment)
    return f"Trino at {scheme}://{host}:{port} answered SELECT 1"


def _probe_catalog(conn: Connection, access: Access) -> str:
    from lakehouse.catalogs import CatalogError, catalog_for

    config = conn.config or {}
    uri = urlsplit(str(config.get("uri") or ""))
    try:
        default_port = {"postgresql": 5432, "https": 443}.get(uri.scheme, 80)
        host, port = uri.hostname, uri.port or default_port
    except ValueError:
        raise _Failed("The catalog's uri has a malformed port.") from None
    if host:
        _tcp(f"The {config.get('type')} catalog", host, port)
    environment = _environment_for(conn)
    try:
        lake = catalog_for(access.workspace, environment, conn.name)
        namespaces = lake.iceberg().list_namespaces()
    except CatalogError as exc:
        raise _Failed(str(exc)) from None
    except Exception as exc:  # a driver's error: its cause, with the resolved secrets cut out
        log.warning("catalog test of connection %s failed (%s)", conn.pk, type(exc).__name__)
        cause = network_cause(exc)
        for secret in (lake.secret_key, lake.password):
            if secret:
                cause = cause.replace(secret, "•••")
        raise _Failed(f"The catalog at {host}:{port} refused the request: {cause}.") from None
    return f"The {config.get('type')} catalog at {host}:{port} listed {len(namespaces)} namespace(s)"


def _probe_spark(conn: Connection, access: Access) -> str:
    from lakehouse.spark.target import target_config_errors, target_from

    if errors := target_config_errors(conn.config):
        raise _Failed(f"The Spark target is misconfigured: {errors[0]}.")
    target = target_from(conn.config, conn.name)
    if target.kind == "local":
        return f"{target.master}: Spark runs in the worker's own JVM, nothing to reach (config checked only)"
    parts = urlsplit(target.master)
    what = "The Spark master" if target.kind == "standalone" else "Spark Connect"
    _tcp(what, parts.hostname or "", parts.port or 0)
    return f"{what} at {parts.hostname}:{parts.port} accepts TCP connections (Spark itself was not started)"


def _probe_mlflow(conn: Connection, access: Access) -> str:
    from runs.mlflow import MlflowError, client_for

    client = client_for(conn, workspace_id=access.workspace.pk)
    try:
        found = client.call("GET", "mlflow/experiments/search", params={"max_results": 1})
    except MlflowError as exc:
        raise _Failed(f"{exc}.") from None
    return f"MLflow at {client.tracking_uri} answered ({len(found.get('experiments', []))} experiment(s) listed)"


def _probe_superset(conn: Connection, access: Access) -> str:
    from lakehouse.superset_config import SupersetError, client_for, read_only_user, trino_for

    try:
        trino = trino_for(conn, environment=conn.environment)
        client = client_for(conn, secrets=(trino.password,))
        me = client.call("GET", "/api/v1/me/", what="say who is signed in").get("result", {})
        trino.login_check()
    except SupersetError as exc:
        raise _Failed(str(exc)) from None
    return (f"Superset at {client.url} signed in as {me.get('username') or conn.config.get('username')}; it will "
            f"read through Trino connection '{trino.connection.name}' as {read_only_user(conn)}, whose login "
            "Trino accepted")


def _probe_postgres(conn: Connection, access: Access) -> str:
    from lakehouse.ingest.source import source_connect
    from runs.executors.base import PhaseFailure

    try:
        source = source_connect(conn)
    except PhaseFailure as exc:
        raise _Failed(str(exc)) from None
    try:
        version, tables = source.execute(
            "SELECT current_setting('server_version'), (SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema'))").fetchone()
    finally:
        source.close()
    return f"PostgreSQL {version} at {conn.config.get('host')}:{conn.config.get('port', 5432)} answered; " \
           f"this user sees {tables} table(s)"


_PROBES: dict[str, Any] = {
    Connection.Kind.DUCKDB: _probe_duckdb, Connection.Kind.TRINO: _probe_trino,
    Connection.Kind.CATALOG: _probe_catalog, Connection.Kind.SPARK: _probe_spark,
    Connection.Kind.MLFLOW: _probe_mlflow, Connection.Kind.SUPERSET: _probe_superset,
    Connection.Kind.POSTGRES: _probe_postgres,
}


def connection_test(*, access: Access, connection: Connection) -> ProbeResult:
    """Try ``connection`` once (admins only) and audit the outcome as ``connection.test``."""
    access.require(Role.ADMIN)
    if connection.workspace_id != access.workspace.pk:
        raise PermissionError("That connection belongs to another workspace.")
    started = time.monotonic()
    try:
        checked = _PROBES[connection.kind](connection, access)
        ok, message = True, checked
    except _Failed as exc:
        ok, message = False, str(exc)
    except Exception as exc:  # an unexpected failure still answers in one sentence
        log.exception("connection test of %s failed unexpectedly", connection.pk)
        ok, message = False, f"The test failed unexpectedly ({type(exc).__name__}); the log has the detail."
    ms = round((time.monotonic() - started) * 1000)
    with transaction.atomic():
        audit_record(access=access, action="connection.test", target=connection,
                     after={"ok": ok, "result": message[:500], "ms": ms})
    return ProbeResult(ok=ok, message=message, ms=ms)
