"""Schema browser at scale: 10,000 tables x 8 columns in one PostgreSQL schema, read through a real
Trino's ``postgresql`` catalog (with tpch, memory and iceberg beside it).

It starts PostgreSQL (Django's database, and the database behind Trino's postgresql and iceberg
catalogs) and Trino, creates the tables with psycopg, then measures as a workspace member:

- first load: ``schema_fetch`` (SHOW CATALOGS, then one information_schema.columns query per
  catalog), against its baseline: the same statements on a bare Trino client, rows dropped;
- cached load: ``schema_get`` and ``completion_json`` in-process (in a new process, which parses
  the stored row, and later), the schema page, and the completion JSON (full and "not
  modified") through Django's test Client, with query counts;
- the completion JSON's size (plain and gzipped) and the stored snapshot's size;
- the per-schema fragment of the wide schema, unfiltered (capped at 500 tables) and filtered.

    .venv/bin/python benchmarks/schema_browser.py [--tables 10000] [--columns 8] [--repeat 15]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time

import _common  # sets up sys.path and the environment; must come first

WIDE = "wide"
TYPES = ("integer", "bigint", "text", "varchar(50)", "numeric(12,2)", "date", "timestamp", "boolean")
DDL_CHUNK = 1000  # tables per transaction: one lock per new table, and max_locks_per_transaction is 64


def create_tables(database_url: str, tables: int, columns: int) -> float:
    """``wide.t00000`` ... in chunks of one multi-statement execute each; returns seconds."""
    import psycopg

    began = time.monotonic()
    columns_sql = ", ".join(f"c{i} {TYPES[i % len(TYPES)]}" for i in range(columns))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {WIDE} CASCADE")
        conn.execute(f"CREATE SCHEMA {WIDE}")
        for start in range(0, tables, DDL_CHUNK):
            _common.say(f"creating tables {start}/{tables}")
            chunk = range(start, min(tables, start + DDL_CHUNK))
            ddl = "".join(f"CREATE TABLE {WIDE}.t{i:05d} ({columns_sql});" for i in chunk)
            with conn.transaction():
                conn.execute(ddl)
    return time.monotonic() - began


def seed(server):
    """A workspace with an analyst and a Trino connection to ``server`` (password from the environment)."""
    from django.contrib.auth import get_user_model

    from connections.models import Connection, SecretRef
    from controlroom.models import Membership, Role
    from controlroom.services import workspace_create

    owner = get_user_model().objects.create_user(username="owner", password="unused-owner-password")  # noqa: S106
    analyst = get_user_model().objects.create_user(username="bench", password="unused-bench-password")  # noqa: S106
    workspace = workspace_create(name="Bench", slug="bench", owner=owner)
    Membership.objects.create(workspace=workspace, user=analyst, role=Role.ANALYST)
    os.environ["CONTROLROOM_SECRET_BENCH_TRINO_PASSWORD"] = server.password
    ref = SecretRef.objects.create(workspace=workspace, name="trino", source=SecretRef.Source.ENV,
                                   locator="CONTROLROOM_SECRET_BENCH_TRINO_PASSWORD")
    connection = Connection.objects.create(
        workspace=workspace, name="trino", kind=Connection.Kind.TRINO, password_ref=ref,
        config={"host": "127.0.0.1", "port": server.port, "user": server.user, "http_scheme": "https",
                "verify": str(server.ca_file), "catalog": "postgresql", "schema": WIDE},
    )
    return workspace, analyst, connection


def bare_read(server, user: str) -> tuple[float, float, int]:
    """The same statements (SHOW CATALOGS, each catalog's columns query) on a plain Trino client,
    rows fetched and dropped: (seconds in all, seconds of the postgresql catalog, column rows)."""
    from sqlwarehouse.schema import SKIPPED_CATALOGS, TRINO_COLUMNS_SQL, quote_identifier
    from tests.trino_server import trino_connect

    cursor = trino_connect(server.credentials_url, user=user, ca_file=server.ca_file).cursor()
    began = time.monotonic()
    catalogs = [row[0] for row in cursor.execute("SHOW CATALOGS").fetchall() if row[0] not in SKIPPED_CATALOGS]
    rows, postgresql_s = 0, 0.0
    for catalog in catalogs:
        started = time.monotonic()
        cursor.execute(TRINO_COLUMNS_SQL.format(catalog=quote_identifier(catalog)))
        while batch := cursor.fetchmany(50_000):
            rows += len(batch)
        if catalog == "postgresql":
            postgresql_s = time.monotonic() - started
    return time.monotonic() - began, postgresql_s, rows


def timed(fn, repeat: int) -> tuple[float, object]:
    """(median ms over ``repeat`` calls, the last result)."""
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return 1000 * _common.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=10_000)
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--fetches", type=int, default=2, help="schema_fetch runs (the first is cold)")
    args = parser.parse_args()
    from tests.trino_server import TrinoServer

    with _common.servers() as env:
        _common.say("starting Trino")
        server = TrinoServer(postgres_url=env["DATABASE_URL"])
        with server:
            report(args, env["DATABASE_URL"], server)


def report(args: argparse.Namespace, database_url: str, server) -> None:
    from django.db import connection as db
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from sqlwarehouse.models import SchemaSnapshot
    from sqlwarehouse.schema import completion_json, parsed_cache, schema_fetch, schema_get

    setup_test_environment()  # the test Client's host name is allowed
    print(f"schema browser: {args.tables} tables x {args.columns} columns in postgresql.{WIDE}, via Trino "
          f"(catalogs tpch, memory, iceberg, postgresql); {os.cpu_count()} CPUs")
    ddl_s = create_tables(database_url, args.tables, args.columns)
    workspace, analyst, connection = seed(server)
    rows = []

    fetch_ms, bare = [], []
    for number in range(args.fetches):  # interleaved with the baseline: Trino's speed drifts
        _common.say(f"schema_fetch {number + 1}/{args.fetches}")
        began = time.perf_counter()
        snapshot = schema_fetch(connection=connection, user=analyst)
        fetch_ms.append(1000 * (time.perf_counter() - began))
        assert snapshot.error == "", snapshot.error
        _common.say(f"bare read {number + 1}/{args.fetches}")
        bare.append(bare_read(server, f"{analyst.username}~ro"))
    wide = snapshot.namespace["postgresql"][WIDE]
    assert len(wide) == args.tables and all(len(c) == args.columns for c in wide.values())
    rows.append(("first load: schema_fetch, all catalogs (cold)", f"{fetch_ms[0]:.0f} ms",
                 f"{snapshot.tables} tables"))
    if args.fetches > 1:
        rows.append(("first load: schema_fetch, again (median)", f"{_common.median(fetch_ms[1:]):.0f} ms", ""))
    bare_ms = 1000 * _common.median([b[0] for b in bare])
    rows.append(("  baseline: same statements, bare client (median)", f"{bare_ms:.0f} ms", f"{bare[0][2]} column rows"))
    rows.append(("  of which the postgresql catalog",
                 f"{1000 * _common.median([b[1] for b in bare]):.0f} ms", "Trino lists its columns table by table"))
    rows.append(("  schema_fetch / baseline", f"{_common.median(fetch_ms) / bare_ms:.2f}x", "medians of all runs"))

    _common.say("cached load")
    stored_bytes = len(json.dumps(SchemaSnapshot.objects.get(pk=snapshot.pk).namespace))

    def cold_get():
        parsed_cache.clear()  # as in a fresh worker process: the snapshot row is parsed
        return schema_get(connection=connection, user=analyst)

    ms, _ = timed(cold_get, args.repeat)
    rows.append(("cached: schema_get, new process (parses the row)", f"{ms:.1f} ms",
                 f"{stored_bytes / 1e6:.2f} MB JSON stored"))
    ms, loaded = timed(lambda: schema_get(connection=connection, user=analyst), args.repeat)
    rows.append(("cached: schema_get, parsed already", f"{ms:.1f} ms", "one small query"))
    ms, _ = timed(lambda: completion_json(SchemaSnapshot(connection=connection, namespace=loaded.namespace)),
                  args.repeat)
    rows.append(("cached: completion_json, built (not memoized)", f"{ms:.1f} ms", ""))
    ms, data = timed(lambda: completion_json(loaded), args.repeat)
    rows.append(("cached: completion_json, memoized", f"{ms:.2f} ms", ""))

    client = Client()
    client.force_login(analyst)
    base = f"/w/{workspace.slug}/sql/schema/"
    cases = [
        ("page: schema browser", f"{base}?connection={connection.pk}", {}),
        ("completion.json (200)", f"{base}{connection.pk}/completion.json", {}),
        ("fragment: wide, unfiltered (capped)", f"{base}{connection.pk}/tables/?catalog=postgresql&schema={WIDE}",
         {"HX-Request": "true"}),
        ("fragment: wide, q=t001 (filter box)",
         f"{base}{connection.pk}/tables/?catalog=postgresql&schema={WIDE}&q=t001&part=list", {"HX-Request": "true"}),
        ("fragment: tpch.tiny", f"{base}{connection.pk}/tables/?catalog=tpch&schema=tiny", {"HX-Request": "true"}),
    ]
    etag = None
    for label, url, headers in cases:
        _common.say(label)
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.status_code)
        etag = response.get("ETag") or etag
        with CaptureQueriesContext(db) as queries:
            client.get(url, headers=headers)
        count = len(queries.captured_queries)
        ms, response = timed(lambda url=url, headers=headers: client.get(url, headers=headers), args.repeat)
        size = len(response.content)
        extra = f"{size / 1e3:.0f} kB, {len(gzip.compress(response.content)) / 1e3:.0f} kB gzipped, {count} queries"
        if "fragment" in label:
            extra += f", {response.content.count(b'<tr><td>')} tables shown"
        rows.append((label, f"{ms:.1f} ms", extra))
    parsed_cache.clear()
    url = cases[0][1]
    began = time.perf_counter()
    assert client.get(url).status_code == 200
    rows.append(("page: schema browser, first in a new process", f"{1000 * (time.perf_counter() - began):.1f} ms",
                 "parses the snapshot"))
    url = f"{base}{connection.pk}/completion.json"
    ms, response = timed(lambda: client.get(url, headers={"If-None-Match": etag}), args.repeat)
    assert response.status_code == 304
    rows.append(("completion.json, If-None-Match (304)", f"{ms:.1f} ms", ""))
    _common.say("")
    print(f"  tables created with psycopg in {ddl_s:.1f} s; median of {args.repeat} where repeated")
    width = max(len(r[0]) for r in rows)
    print(f"  {'what':<{width}} {'time':>10}  notes")
    for label, value, note in rows:
        print(f"  {label:<{width}} {value:>10}  {note}")
    text = json.dumps(data).encode()
    print(f"  completion JSON: {len(text) / 1e6:.2f} MB ({len(gzip.compress(text)) / 1e6:.2f} MB gzipped), "
          f"{sum(len(t) for s in data['namespace'].values() for t in s.values())} tables")


if __name__ == "__main__":
    main()
