"""Threads of one process opening one DuckDB file at once (the editor's schema tree and completion,
two browser tabs) share its database instance: each must find it set up and sandboxed, never
fail half-way through setting it up."""

import threading
from pathlib import Path

import duckdb

from sqlwarehouse.engines.duckdb import DuckDBEngine, DuckDBQueryEngine


def test_connections_opened_at_once_share_one_sandboxed_instance(tmp_path: Path) -> None:
    errors: list[str] = []
    escaped: list[bool] = []

    def read(database: Path, barrier: threading.Barrier) -> None:
        engine = DuckDBEngine(database=database, read_only=True, allowed_dirs=[], datasets=tmp_path / "datasets")
        query = DuckDBQueryEngine(engine)
        try:
            barrier.wait()
            stream = query.run("SELECT table_name FROM information_schema.tables", [], 10)
            for _ in stream.batches if stream else []:
                pass
            external = query.run("SELECT current_setting('enable_external_access')", [], 10)
            escaped.extend(bool(v) for batch in external.batches for v in batch.column(0).to_pylist())
        except Exception as exc:  # collected for the assertion
            errors.append(repr(exc))
        finally:
            query.close()

    (tmp_path / "datasets").mkdir()
    for round_ in range(15):
        database = tmp_path / f"w{round_}.duckdb"
        duckdb.connect(str(database)).execute("CREATE TABLE t (a INTEGER)").close()
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=read, args=(database, barrier)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
    assert escaped and not any(escaped)  # every connection ran sandboxed


def test_a_read_write_run_and_a_read_only_one_take_turns_in_one_process(tmp_path: Path) -> None:
    """An admin's read-write run (inline in the web process) and an analyst's read-only schema
    read of the same file: DuckDB refuses a second configuration in one process, so the second
    waits for the first to close instead of failing."""
    (tmp_path / "datasets").mkdir()
    database = tmp_path / "w.duckdb"
    duckdb.connect(str(database)).execute("CREATE TABLE t AS SELECT 1 AS a").close()

    def engine(read_only: bool) -> DuckDBEngine:
        return DuckDBEngine(database=database, read_only=read_only, allowed_dirs=[], datasets=tmp_path / "datasets")

    writer = DuckDBQueryEngine(engine(read_only=False))
    writer.run("INSERT INTO t VALUES (2)", [], 10)  # holds the file open read-write
    found: list[int] = []

    def read() -> None:
        reader = DuckDBQueryEngine(engine(read_only=True))
        try:
            stream = reader.run("SELECT count(*) FROM t", [], 10)
            found.extend(v for batch in stream.batches for v in batch.column(0).to_pylist())
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and not found  # waiting its turn, not failed
    writer.close()
    thread.join(10)
    assert found == [2]
