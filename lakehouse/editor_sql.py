"""The SQL that "Open in SQL editor" puts in the editor for one version of a table.

With a Trino connection in the workspace, Trino reads the same catalog: a time-travel query in
Trino's syntax (``FOR VERSION AS OF``); a Delta table, once a Trino connection names its lake's
Delta catalog. Without one, on the embedded catalog, DuckDB reads the
version's own Parquet files through the read-only ``lakehouse://`` file system of the workspace
and environment (``sqlwarehouse.datasets.ReadOnlyLakehouse``), so the query answers exactly that
version. A catalog on S3 without Trino gets a comment that says what to add.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from connections.models import Connection
from lakehouse.models import Table, TableVersion

log = logging.getLogger(__name__)

MAX_FILES = 200  # a version spread over more files than this is better read through Trino


def trino_target(table: Table) -> tuple[int, str] | None:
    """(Trino connection id, Trino catalog) that reads ``table``, if the workspace has one: for an
    Iceberg table its first Trino connection, in the catalog its ``iceberg_catalogs`` names for the
    table's lake (else a catalog named like the lake's connection); for a Delta table the first
    whose ``delta_catalogs`` names the table's lake (``lakehouse.trino_publish``)."""
    from connections.services import connections_serving
    from lakehouse.trino_publish import ICEBERG_KEY, KEY

    delta = table.format == Table.Format.DELTA
    if delta and not table.location.startswith("s3://"):
        return None  # registered in Trino only on S3 (lakehouse.trino_publish): DuckDB reads it here
    for conn in connections_serving(workspace_id=table.workspace_id, environment_id=table.environment_id,
                                    kind=Connection.Kind.TRINO):
        mapping = (conn.config or {}).get(KEY if delta else ICEBERG_KEY)
        named = mapping.get(table.catalog_name) if isinstance(mapping, dict) else None
        if isinstance(named, str):
            return conn.pk, named
        if not delta:
            return conn.pk, table.catalog_name
    return None


def trino_sql(table: Table, version: TableVersion, catalog: str) -> str:
    """Time travel in Trino's syntax (its Iceberg and Delta connectors both take it)."""
    return (f"SELECT *\nFROM {catalog}.{table.namespace}.{table.name}\n"
            f"FOR VERSION AS OF {version.version}\nLIMIT 100")


def duckdb_sql(table: Table, version: TableVersion) -> str:
    """DuckDB SQL reading exactly ``version``'s data files, or a comment saying why it cannot."""
    from lakehouse.catalogs import CatalogError, catalog_for

    title = f"-- {table.namespace}.{table.name} at version {version.version} ({table.format})"
    try:
        lake = catalog_for(table.workspace, table.environment, table.catalog_name)
    except CatalogError as exc:
        return f"{title}\n-- {exc}"
    if not lake.embedded:
        return (f"{title}\n-- This table is in the catalog '{lake.name}' on S3, which DuckDB does not reach here.\n"
                "-- Add a Trino connection that reads this catalog, then open the table again.")
    try:
        files = _iceberg_files(lake, table, version) if table.format == Table.Format.ICEBERG \
            else _delta_files(lake, table, version)
    except _Unreadable as exc:
        return f"{title}\n-- {exc}"
    except Exception as exc:  # a missing file or metadata: one line here, the detail to the log
        log.warning("files of table %s version %s: %s", table.pk, version.version, exc)
        return f"{title}\n-- The version's files could not be listed ({type(exc).__name__}); see the server log."
    root = Path(lake.delta_root).parent.resolve()  # <LAKEHOUSE_DIR>/<workspace>/<environment>
    urls = []
    for path in files:
        real = Path(path).resolve()
        if root not in real.parents:
            return f"{title}\n-- The version's files are outside this environment's lakehouse folder."
        urls.append("'lakehouse:///" + real.relative_to(root).as_posix().replace("'", "''") + "'")
    if not urls:
        return f"{title}\n-- This version holds no data files: it is empty."
    hive = ", hive_partitioning = true" if table.format == Table.Format.DELTA else ""
    listed = ",\n  ".join(urls)
    return f"{title}\nSELECT *\nFROM read_parquet([\n  {listed}\n], union_by_name = true{hive})\nLIMIT 100"


class _Unreadable(Exception):
    """This version cannot be read as plain Parquet files; the message says why."""


def _local(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        raise _Unreadable(f"A data file is not on local disk ({parts.scheme}://).")
    return unquote(parts.path)


def _iceberg_files(lake: Any, table: Table, version: TableVersion) -> list[str]:
    from lakehouse.tables import iceberg_table

    tbl = iceberg_table(lake, table.namespace, table.name)
    if tbl is None or tbl.snapshot_by_id(int(version.version)) is None:
        raise _Unreadable("The catalog no longer has this version (expired or dropped).")
    tasks = list(tbl.scan(snapshot_id=int(version.version)).plan_files())
    if any(task.delete_files for task in tasks):
        raise _Unreadable("This version has row-level deletes, which plain Parquet files do not apply.")
    if len(tasks) > MAX_FILES:
        raise _Unreadable(f"This version is {len(tasks)} files; read it through Trino instead.")
    return [_local(task.file.file_path) for task in tasks]


def _delta_files(lake: Any, table: Table, version: TableVersion) -> list[str]:
    from lakehouse.tables import delta_table

    dt = delta_table(lake, table.namespace, table.name, version=int(version.version))
    if dt is None:
        raise _Unreadable("The Delta log no longer has this version.")
    files = dt.file_uris()
    if len(files) > MAX_FILES:
        raise _Unreadable(f"This version is {len(files)} files; read it through Trino instead.")
    return [_local(uri) for uri in files]
