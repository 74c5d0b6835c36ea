"""The embedded DuckDB engine (``sqlwarehouse.engines.base`` interface).

DuckDB runs sandboxed: no extension installs or loads, file access only inside the allowed
directories (a phase's own scratch folder; none for the editor), the workspace's datasets through
a read-only file system (``sqlwarehouse.datasets``), configuration locked once set, and read-only
when the caller may not write. Each environment has its own database file unless the connection
is scoped to one environment or shares one dataset across all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from django.conf import settings

from connections.models import Connection
from controlroom.models import Environment
from sqlwarehouse.datasets import (
    LAKEHOUSE_PROTOCOL,
    LAKEHOUSE_URL,
    ReadOnlyDatasets,
    ReadOnlyLakehouse,
    datasets_area,
    lakehouse_area,
)
from sqlwarehouse.datasets import PROTOCOL as DATASETS_PROTOCOL
from sqlwarehouse.datasets import URL as DATASETS_URL
from sqlwarehouse.engines.base import BATCH_ROWS, EngineError, QueryResult, StatementStream, collect

_LOCK_WAIT_S = 30.0


def duckdb_error_text(exc: BaseException) -> str:
    """DuckDB's message, without the Python traceback it embeds when a registered file system
    (our read-only datasets) refused: just that refusal's own sentence."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def _spill_dir(database: Path) -> Path:
    """Where DuckDB spills for this database file: one folder per file (every connection to a
    file in a process must share its settings), outside the warehouse folder."""
    folder = settings.DATA_DIR / "tmp" / "duckdb" / hashlib.sha256(str(database).encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Connections to one file in one process share its database instance: two threads opening it at
# once would both find it unlocked and both set it up (the second fails on the locked settings).
_SANDBOX_LOCK = threading.Lock()


class DuckDBEngine:
    """An embedded DuckDB database file, opened per use (other processes share the file)."""

    def __init__(self, *, database: Path, read_only: bool, allowed_dirs: list[Path],
                 datasets: Path | None = None, lakehouse: Path | None = None) -> None:
        self.database = database
        self.read_only = read_only
        # Directories SQL may use read-write (a phase's scratch folder); datasets come read-only.
        self.allowed_dirs = [str(d.resolve()) + "/" for d in allowed_dirs]
        self.datasets = datasets
        self.lakehouse = lakehouse  # the embedded lakehouse folder, read-only as lakehouse://
        self._active: duckdb.DuckDBPyConnection | None = None
        self._interrupted = False

    def interrupt(self) -> None:
        """Stop the statement running now (from another thread), and refuse further ones."""
        self._interrupted = True
        active = self._active
        if active is not None:
            active.interrupt()

    def _sandbox(self, con: duckdb.DuckDBPyConnection) -> None:
        """Lock the connection's instance down: file access only in the allowed folders and the
        read-only datasets, no Python replacement scans, configuration locked.

        Connections to one file in one process share its database instance, with its settings and
        registered file systems (the web server's threads can meet there): a later connection
        finds them locked by the first, which belongs to the same workspace and environment,
        since a database file does; it checks the lock holds and adds nothing."""
        # fetchall, not fetchone: DuckDB 2 refuses the next execute while a result is unfinished.
        if con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]:
            if con.execute("SELECT current_setting('enable_external_access')").fetchall()[0][0]:
                raise EngineError("The warehouse database is open without its sandbox; try again.")
            return
        allowed = list(self.allowed_dirs)
        if self.datasets is not None:
            if DATASETS_PROTOCOL not in con.list_filesystems():
                con.register_filesystem(ReadOnlyDatasets(self.datasets))
            allowed.append(DATASETS_URL)
        if self.lakehouse is not None:
            if LAKEHOUSE_PROTOCOL not in con.list_filesystems():
                con.register_filesystem(ReadOnlyLakehouse(self.lakehouse))
            allowed.append(LAKEHOUSE_URL)
        con.execute("SET allowed_directories = $dirs", {"dirs": allowed})
        con.execute("SET enable_external_access = false")
        con.execute("SET python_enable_replacements = false")  # FROM duckdb: not the Python module
        con.execute("SET lock_configuration = true")

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        if self.read_only and not self.database.exists():
            duckdb.connect(str(self.database)).close()
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                con = duckdb.connect(str(self.database), read_only=self.read_only, config={
                    "autoinstall_known_extensions": False, "autoload_known_extensions": False,
                    # A bound on what one query holds (a 300 MB cell, a huge sort), and its spill
                    # folder outside the warehouse folder (DuckDB lets SQL write there).
                    "memory_limit": settings.DUCKDB_MEMORY_LIMIT, "temp_directory": str(_spill_dir(self.database)),
                })
                break
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                # Another process holds the file's write lock, or this process has it open with
                # the other read_only setting (a read-write run beside a read-only schema read;
                # DuckDB refuses a second configuration): wait our turn, briefly.
                text = str(exc).lower()
                if ("lock" not in text and "different configuration" not in text) or time.monotonic() > deadline:
                    raise EngineError(f"The warehouse database is busy: {exc}") from exc
                time.sleep(0.05)
        try:
            with _SANDBOX_LOCK:  # threads opening one file at once share its instance: set it up once
                self._sandbox(con)
            self._active = con
            if self._interrupted:
                raise EngineError("The query was interrupted.")
            yield con
        finally:
            self._active = None
            con.close()

    def execute(
        self, sql: str, *, parameters: dict[str, Any] | None = None, max_rows: int = 10_000,
        timeout_s: float | None = None,
    ) -> QueryResult:
        """Run ``sql`` (one or more statements; the first ``max_rows`` of the last one's rows are
        returned), through the same :class:`DuckDBQueryEngine` the SQL editor uses."""
        engine = DuckDBQueryEngine(self, timeout_reason="timeout")
        try:
            return collect(engine.run_script(sql, parameters or {}, timeout_s), max_rows=max_rows)
        finally:
            engine.close()


class DuckDBQueryEngine:
    """A :class:`DuckDBEngine` as a ``QueryEngine``: sandboxed, read-only for read-only
    identities, streaming Arrow batches."""

    dialect = "duckdb"

    def __init__(self, engine: DuckDBEngine, *, timeout_reason: str = "the workspace's statement timeout") -> None:
        self.engine = engine
        self.query_id = ""
        self.timeout_reason = timeout_reason
        self._stack = contextlib.ExitStack()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._timer: threading.Timer | None = None
        self._rows = 0

    def _connection(self, timeout_s: float | None) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = self._stack.enter_context(self.engine.connect())
        if timeout_s:
            self._timer = threading.Timer(timeout_s, self.engine.interrupt)
            self._timer.daemon = True
            self._timer.start()
        return self._con

    def run(self, sql: str, parameters: list[Any] | dict[str, Any], timeout_s: float | None) -> StatementStream | None:
        """One statement, with positional (``?``) or named (``$name``) parameters."""
        con = self._connection(timeout_s)
        try:
            # A relation streams Arrow without a copy; statements that return nothing give None.
            relation = con.sql(sql, params=parameters or None)
        except duckdb.InterruptException as exc:
            raise EngineError(self._stopped_why(timeout_s)) from exc
        except duckdb.Error as exc:
            raise EngineError(duckdb_error_text(exc)) from exc
        return self._stream(relation, timeout_s)

    def run_script(self, sql: str, parameters: dict[str, Any], timeout_s: float | None) -> StatementStream | None:
        """One or more statements, each bound to the named parameters it uses; the last one's
        rows stream back."""
        con = self._connection(timeout_s)
        try:
            statements = con.extract_statements(sql)
            if not statements:
                raise EngineError("There is no SQL statement to run.")
            relation = None
            for number, statement in enumerate(statements, 1):
                values = {k: v for k, v in parameters.items() if k in statement.named_parameters}
                missing = set(statement.named_parameters) - set(values)
                if missing:
                    raise EngineError(f"No value for parameter(s): {', '.join(sorted(missing))}.")
                if number < len(statements):
                    con.execute(statement.query, values or None)
                else:
                    relation = con.sql(statement.query, params=values or None)
        except duckdb.InterruptException as exc:
            raise EngineError(self._stopped_why(timeout_s)) from exc
        except duckdb.Error as exc:
            raise EngineError(duckdb_error_text(exc)) from exc
        return self._stream(relation, timeout_s)

    def _stream(self, relation: duckdb.DuckDBPyRelation | None, timeout_s: float | None) -> StatementStream | None:
        if relation is None:
            self._stop_timer()
            return None
        try:
            columns, types = list(relation.columns), [str(t) for t in relation.types]
            reader = relation.to_arrow_reader(BATCH_ROWS)
        except duckdb.InterruptException as exc:
            raise EngineError(self._stopped_why(timeout_s)) from exc
        except duckdb.Error as exc:
            raise EngineError(duckdb_error_text(exc)) from exc

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    self._rows += batch.num_rows
                    yield batch
            except duckdb.InterruptException as exc:
                raise EngineError(self._stopped_why(timeout_s)) from exc
            except (duckdb.Error, pa.ArrowException) as exc:
                if self.engine._interrupted:
                    raise EngineError(self._stopped_why(timeout_s)) from exc
                raise EngineError(duckdb_error_text(exc)) from exc
            finally:
                self._stop_timer()

        return StatementStream(columns, types, batches())

    def _stop_timer(self) -> None:
        if self._timer:
            self._timer.cancel()

    def _stopped_why(self, timeout_s: float | None) -> str:
        if self.engine._interrupted and not (self._timer and self._timer.finished.is_set()):
            return "The query was cancelled."
        return f"The query was stopped after {timeout_s:g} s ({self.timeout_reason})."

    def cancel(self) -> None:
        """Stop the running statement (from another thread) and refuse further ones."""
        self._stop_timer()
        self.engine.interrupt()

    def progress(self) -> dict[str, Any]:
        """Rows streamed so far."""
        return {"state": "RUNNING", "rows": self._rows}

    def close(self) -> None:
        """Release the connection."""
        self._stop_timer()
        self._stack.close()


def per_environment(conn: Connection) -> bool:
    """Whether ``conn`` keeps one database per environment (an unscoped DuckDB connection)."""
    return (conn.kind == Connection.Kind.DUCKDB and conn.environment_id is None
            and not conn.shared_across_environments)


def reaches_all_environments(conn: Connection) -> bool:
    """Whether a write through ``conn`` lands in data every environment reads, prod included: a
    connection not scoped to one environment whose data is not split per environment (Trino
    without an environment, or a connection marked shared across environments)."""
    return conn.environment_id is None and not per_environment(conn)


def duckdb_database(conn: Connection, environment: Environment | None) -> Path:
    """The database file of a DuckDB connection in ``environment``: one per environment under
    WAREHOUSE_DIR/<workspace>/<environment>/, unless the connection is scoped to one environment
    (that one's folder) or shares one dataset across all (WAREHOUSE_DIR/<workspace>/)."""
    filename = str(conn.config.get("database") or f"{conn.name}.duckdb")
    base = (settings.WAREHOUSE_DIR / conn.workspace.slug).resolve()
    if conn.environment_id is not None:
        folder = base / conn.environment.name
    elif conn.shared_across_environments:
        folder = base
    else:
        if environment is None:
            raise EngineError(f"Connection '{conn.name}' keeps one database per environment: choose one.")
        folder = base / environment.name
    database = (folder / filename).resolve()
    if folder.resolve() not in database.parents:
        raise EngineError(f"Connection '{conn.name}': the database must stay inside the warehouse directory.")
    return database


def duckdb_engine_for(conn: Connection, *, read_only: bool, environment: Environment | None,
                      extra_dirs: list[Path] | None = None) -> DuckDBEngine:
    """Engine for a DuckDB connection in ``environment``, reading the workspace's datasets and
    (read-only) its embedded lakehouse folder in that environment."""
    return DuckDBEngine(database=duckdb_database(conn, environment), read_only=read_only,
                        allowed_dirs=list(extra_dirs or []), datasets=datasets_area(conn.workspace),
                        lakehouse=_lakehouse_for(conn, environment))


def _lakehouse_for(conn: Connection, environment: Environment | None) -> Path | None:
    # One database file is one DuckDB instance whose file systems are fixed by its first user:
    # only a database of one environment gets that environment's lakehouse folder.
    if conn.environment_id is not None:
        return lakehouse_area(conn.workspace, conn.environment.name)
    if conn.shared_across_environments or environment is None:
        return None
    return lakehouse_area(conn.workspace, environment.name)
