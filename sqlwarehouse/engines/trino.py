"""Trino through its Python client, as the end user.

The connection's service user authenticates (password from a secret reference) and every query
runs as the end user: ``<username>`` when the user may write, ``<username>~ro`` when not. The
access-control rules shipped in compose/trino/rules.json let the service user impersonate only
names of that shape and give ``~ro`` identities SELECT only, so the engine enforces read-only
even if the parser check were bypassed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import requests
import trino
from requests.adapters import HTTPAdapter
from trino.exceptions import TrinoQueryError, TrinoUserError

from connections.models import Connection
from connections.services import SecretUnavailable, secret_resolve
from controlroom.network import network_cause
from sqlwarehouse.engines.base import BATCH_ROWS, EngineError, EngineUnreachable, StatementStream

log = logging.getLogger(__name__)
READ_ONLY_SUFFIX = "~ro"
_SIMPLE = {
    "boolean": pa.bool_(), "tinyint": pa.int8(), "smallint": pa.int16(), "integer": pa.int32(),
    "bigint": pa.int64(), "real": pa.float32(), "double": pa.float64(), "date": pa.date32(),
}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")


def _verify(value: Any) -> bool | str:
    """TLS verification from a connection's config: true/false, or the path of a CA file."""
    return value if isinstance(value, str) and value.strip() else bool(value)


def identity(username: str, *, read_only: bool) -> str:
    return f"{username}{READ_ONLY_SUFFIX}" if read_only else username


def arrow_type(trino_type: str) -> pa.DataType:
    """The Arrow type that keeps a Trino column's values exactly (strings for the rest)."""
    base = trino_type.split("(")[0].strip()
    if base in _SIMPLE:
        return _SIMPLE[base]
    if match := _DECIMAL.fullmatch(trino_type.replace(" ", "")):
        precision, scale = int(match.group(1)), int(match.group(2))
        return pa.decimal128(precision, scale) if precision <= 38 else pa.string()
    if base == "timestamp" and "with time zone" not in trino_type:
        return pa.timestamp("us")
    return pa.string()


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _column(values: list[Any], target: pa.DataType) -> pa.Array:
    """One column from the client's raw JSON values (``legacy_primitive_types``: decimals, dates
    and timestamps arrive as text, which Arrow parses in C++, exactly)."""
    if pa.types.is_string(target):
        return pa.array([_text(v) for v in values], type=target)
    if pa.types.is_decimal(target) or pa.types.is_date(target) or pa.types.is_timestamp(target):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string()).cast(target)
    if pa.types.is_floating(target):  # NaN and the infinities arrive as text
        return pa.array([float(v) if isinstance(v, str) else v for v in values], type=target)
    return pa.array(values, type=target)


def _batch(rows: list[list[Any]], schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.RecordBatch.from_arrays([_column(list(c), f.type) for c, f in zip(columns, schema, strict=True)],
                                      schema=schema)


def _received(cursor: Any) -> list[list[Any]]:
    """The rows the client already holds, taken from it (the stream goes on from the next page).

    The client asks Trino for the next page before it hands a page's rows to ``fetchmany``, so
    the first rows would wait one more round trip, often the whole query's end (the last page
    is followed by a final request): taken here, the editor shows them that much sooner.
    Only before any row was read and when the client holds a plain list (not the spooling
    protocol's lazy segments); otherwise nothing is taken and ``fetchmany`` reads as usual."""
    result = getattr(getattr(cursor, "_query", None), "result", None)
    if result is None or result.rownumber or not isinstance(result.rows, list) or not result.rows:
        return []
    rows, result.rows = result.rows, []
    return rows


class _KeptConnections(HTTPAdapter):
    """The process's one pool of HTTP connections to Trino coordinators: a run reuses a kept-alive
    (TLS) connection instead of opening one (the handshake cost about 4 ms of a 40 ms query).
    Only connections are shared: each run has a fresh ``requests.Session``, so no header, cookie or
    credential of one run (the client sets the user and session headers on its session) reaches
    another. urllib3 keeps a pool per scheme, host, port and TLS setting, and checks that a kept
    connection is still open before it reuses it. Closing a run's session leaves the pool open."""

    def close(self) -> None:
        """Kept for the next run (a session's close would otherwise close every run's connections)."""


_CONNECTIONS = _KeptConnections(pool_connections=16, pool_maxsize=8)


def _session(verify: bool | str) -> requests.Session:
    """A fresh session for one run, on the process's kept connections."""
    session = requests.Session()
    session.mount("https://", _CONNECTIONS)
    session.mount("http://", _CONNECTIONS)
    session.verify = verify
    if isinstance(verify, str):  # a CA file: requests must not let $REQUESTS_CA_BUNDLE override it
        session.trust_env = False
    return session


class TrinoQueryEngine:
    """Trino as a ``QueryEngine``: the service user authenticates, the end user's identity runs."""

    dialect = "trino"

    @property
    def query_id(self) -> str:
        """Trino's id of the running statement, known as soon as Trino accepted it."""
        cursor = self._cursor
        return (cursor.query_id or "") if cursor is not None else ""

    def __init__(self, *, host: str, port: int, user: str, service_user: str, password: str | None,
                 http_scheme: str = "http", catalog: str | None = None, schema: str | None = None,
                 verify: bool | str = True) -> None:
        self._settings: dict[str, Any] = dict(host=host, port=port, user=user, http_scheme=http_scheme,
                                              catalog=catalog, schema=schema)
        self._settings["http_session"] = _session(verify)
        if password is not None:
            self._settings["auth"] = trino.auth.BasicAuthentication(service_user, password)
            # Plain http with a password only where the coordinator allows it (tests, a sidecar).
            self._settings["allow_insecure_auth"] = http_scheme == "http"
        self._cursor: Any = None
        self._cancelled = False

    @classmethod
    def for_connection(cls, connection: Connection, *, user: str, read_only: bool) -> TrinoQueryEngine:
        config = connection.config or {}
        password = None
        if connection.password_ref_id:
            try:
                password = secret_resolve(connection.password_ref, workspace_id=connection.workspace_id)
            except SecretUnavailable as exc:  # its text is the public sentence; the log has the detail
                raise EngineError(f"Connection '{connection.name}': {exc}") from None
        try:
            port = int(config.get("port", 8080))
        except (TypeError, ValueError):
            raise EngineError(f"Connection '{connection.name}': the port must be a number.") from None
        if not config.get("host"):
            raise EngineError(f"Connection '{connection.name}' names no Trino host.")
        return cls(host=str(config["host"]), port=port, user=identity(user, read_only=read_only),
                   service_user=str(config.get("user") or "controlroom"), password=password,
                   http_scheme=str(config.get("http_scheme") or "http"), catalog=config.get("catalog"),
                   schema=config.get("schema"), verify=_verify(config.get("verify", True)))

    def run(self, sql: str, parameters: list[Any], timeout_s: int) -> StatementStream | None:
        # Raw JSON values (no per-value Python mapping in the client): Arrow types them in _batch.
        conn = trino.dbapi.connect(**self._settings, session_properties={"query_max_run_time": f"{timeout_s}s"},
                                   request_timeout=max(30, timeout_s + 10), legacy_primitive_types=True)
        self._cursor = cursor = conn.cursor()
        if self._cancelled:
            raise EngineError("The query was cancelled.")
        try:
            cursor.execute(sql, parameters or None)  # returns with the first rows (or at the end)
            description = cursor.description
        except (TrinoUserError, TrinoQueryError) as exc:
            raise EngineError(self._message(exc, timeout_s)) from exc
        except trino.exceptions.HttpError as exc:
            raise EngineError(f"Trino refused the request: {exc}") from exc
        except trino.exceptions.TrinoAuthError as exc:
            raise EngineError(f"Trino refused the service user's credentials: {exc}") from exc
        except trino.exceptions.TrinoConnectionError as exc:  # down, or a wrong host or port
            raise EngineUnreachable(self.unreachable(exc)) from exc
        if not description:
            return None
        columns = [d[0] for d in description]
        types = [str(d[1]) for d in description]
        schema = pa.schema([pa.field(self._unique(columns, i), arrow_type(t)) for i, t in enumerate(types)])

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                if first := _received(cursor):
                    yield _batch(first, schema)
                while rows := cursor.fetchmany(BATCH_ROWS):
                    yield _batch(rows, schema)
            except (TrinoUserError, TrinoQueryError) as exc:
                raise EngineError(self._message(exc, timeout_s)) from exc

        return StatementStream(columns, types, batches())

    def unreachable(self, exc: BaseException) -> str:
        """What was tried and what failed: the scheme, host and port, and the root cause."""
        where = f"{self._settings['http_scheme']}://{self._settings['host']}:{self._settings['port']}"
        log.warning("Trino at %s could not be reached", where, exc_info=exc)
        return f"Trino at {where} could not be reached: {network_cause(exc)}."

    @staticmethod
    def _unique(columns: list[str], index: int) -> str:
        name = columns[index] or f"_col{index}"
        return name if columns.count(name) == 1 else f"{name}_{index}"

    def _message(self, exc: Exception, timeout_s: int) -> str:
        name = getattr(exc, "error_name", "")
        if self._cancelled or name == "USER_CANCELED":
            return "The query was cancelled."
        if name == "EXCEEDED_TIME_LIMIT":
            return f"The query was stopped after {timeout_s} s (the workspace's statement timeout)."
        return getattr(exc, "message", None) or str(exc)

    def cancel(self) -> None:
        self._cancelled = True
        if self._cursor is not None:
            self._cursor.cancel()

    def progress(self) -> dict[str, Any]:
        stats = (self._cursor.stats if self._cursor is not None else None) or {}
        return {"state": stats.get("state", ""), "completed_splits": stats.get("completedSplits", 0),
                "total_splits": stats.get("totalSplits", 0), "rows": stats.get("processedRows", 0)}

    def close(self) -> None:
        """Ends a query whose rows were not all read (a result cut at the row cap): Trino would
        otherwise keep it, blocked on its full output buffer, until its client timeout (5 minutes).
        A finished query sends nothing. Keeps the last cursor: its query id stays readable."""
        if self._cursor is None:
            return
        try:
            self._cursor.cancel()  # a no-op once the client has read the query's end
        except Exception:  # the result is stored already; Trino's client timeout ends the query
            log.warning("could not end an unfinished Trino query %s", self.query_id, exc_info=True)
