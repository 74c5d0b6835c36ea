"""Publish a table or a saved query to Apache Superset (operators and admins; audited).

Publishing makes or updates, through Superset's REST API (``lakehouse.superset_client``):
- the *database*: ``trino://<trino_user>~ro@host:port/<catalog>``, one per Trino connection and
  catalog, logged in to Trino as that read-only identity with Superset's own password (never the
  Trino service user's), so every query Superset runs there is read-only in Trino
  (``lakehouse.superset_config``);
- the *dataset*: physical for a table (Trino's name for it: the catalog the Trino connection's
  ``iceberg_catalogs``/``delta_catalogs`` names for the table's lake, its namespace and name),
  virtual for a saved query (its SQL); its columns are read again from Trino each time;
- for a saved query with a chart, the *chart* (bar, line or scatter of the sums of its y columns
  by its x column).

Every object gets a UUID derived from what it stands for, so publishing again finds and updates
the same objects (also after our own record is lost) and never makes a second one. The ids are
kept in a ``SupersetPublication`` row, which the table page links from. Publications of one
Superset connection are serialised by a lock on its row. A publish that fails removes what it
created in Superset, leaves our record as it was and says why in one sentence; the attempt is
audited either way (``superset.publish``)."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from connections.models import Connection
from connections.services import connections_serving
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Environment, Role, Workspace
from lakehouse.models import Table
from lakehouse.superset_client import SupersetClient, SupersetError
from lakehouse.superset_config import TrinoForSuperset, client_for, trino_for
from lakehouse.superset_models import SupersetPublication

log = logging.getLogger(__name__)
# The namespace of the UUIDs Control Room gives Superset objects (uuid5 of what they stand for).
UUID_NAMESPACE = uuid.UUID("6f6e0b8e-3c55-4d55-9a55-636f6e74726f")
VIZ_TYPES = {"bar": "echarts_timeseries_bar", "line": "echarts_timeseries_line",
             "scatter": "echarts_timeseries_scatter"}
CHART_ROW_LIMIT = 10000

__all__ = ["SupersetError", "superset_publication_of", "superset_publish_saved_query", "superset_publish_table"]


@dataclass
class _Outcome:
    """What one publish did in Superset: the ids and which objects it created or updated."""

    url: str = ""  # Superset's address, for the links
    client: SupersetClient | None = None
    made: list[tuple[str, int]] = field(default_factory=list)  # (resource, id) created by this publish
    database_id: int = 0
    dataset_id: int = 0
    chart_id: int | None = None
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def _uuid(workspace: Workspace, *parts: object) -> str:
    """The UUID of what ``parts`` name in ``workspace``; the workspace's creation time keeps apart
    two installations (or a re-created workspace) whose ids coincide."""
    return str(uuid.uuid5(UUID_NAMESPACE, "/".join(str(p) for p in (
        workspace.slug, workspace.created_at.isoformat(), *parts))))


def superset_connection_for(*, workspace: Workspace, environment: Environment | None) -> Connection:
    """The Superset connection that serves ``environment`` (the first by age), or a SupersetError."""
    found = connections_serving(workspace_id=workspace.pk, environment_id=environment.pk if environment else None,
                                kind=Connection.Kind.SUPERSET)
    if not found:
        raise SupersetError("This workspace has no Superset connection; a workspace admin adds one under "
                            "Admin → Connections.")
    return found[0]


def superset_publication_of(*, table: Table | None = None, saved_query: Any = None) -> SupersetPublication | None:
    """The newest publication of a table or saved query (what the pages link to), if any."""
    scope = {"table": table} if table is not None else {"saved_query": saved_query}
    return SupersetPublication.objects.filter(**scope).order_by("-published_at").first()


def _ensure(client: SupersetClient, resource: str, key: str, create: dict[str, Any], update: dict[str, Any],
            outcome: _Outcome, label: str, *, adopt: tuple[str, str] | None = None) -> int:
    """The id of the ``resource`` whose UUID is ``key`` (else, with ``adopt`` = (column, value),
    the one of that name): updated with ``update`` if Superset has it, else created from
    ``create`` with that UUID."""
    found = client.find(resource, [("uuid", "eq", key)], what=f"look for the {label}")
    if not found and adopt is not None:
        found = client.find(resource, [(adopt[0], "eq", adopt[1])], what=f"look for the {label}")
    if found:
        pk = int(found[0]["id"])
        client.call("PUT", f"/api/v1/{resource}/{pk}", what=f"update the {label}", json_body=update)
        outcome.updated.append(label)
        return pk
    made = client.call("POST", f"/api/v1/{resource}/", what=f"create the {label}", json_body={**create, "uuid": key})
    outcome.created.append(label)
    outcome.made.append((resource, int(made["id"])))
    return int(made["id"])


def _database(client: SupersetClient, trino: TrinoForSuperset, catalog: str, workspace: Workspace,
              outcome: _Outcome) -> int:
    name = f"controlroom {workspace.slug} {trino.connection.name} {catalog}"[:250]
    body: dict[str, Any] = {
        "database_name": name,
        "sqlalchemy_uri": trino.sqlalchemy_uri(catalog), "extra": json.dumps(trino.extra()),
        "expose_in_sqllab": True, "allow_dml": False, "allow_ctas": False, "allow_cvas": False,
        "allow_run_async": False, "allow_file_upload": False, "impersonate_user": False,
        # Superset's own read-only login; it replaces whatever login the database had before.
        "masked_encrypted_extra": json.dumps(trino.encrypted_extra()),
    }
    # Found by its name too: the name is Control Room's (a re-created connection takes it over).
    key = _uuid(workspace, "database", trino.connection.name, catalog)
    outcome.database_id = _ensure(client, "database", key, body, body, outcome, "database",
                                  adopt=("database_name", name))
    return outcome.database_id


def _refresh(client: SupersetClient, dataset_id: int) -> None:
    client.call("PUT", f"/api/v1/dataset/{dataset_id}/refresh", what="read the dataset's columns from Trino")


def _table_catalog(table: Table, trino: TrinoForSuperset) -> str:
    """Trino's catalog for ``table`` on this Trino connection (as ``lakehouse.editor_sql`` finds it)."""
    from lakehouse.trino_publish import ICEBERG_KEY, KEY

    delta = table.format == Table.Format.DELTA
    mapping = (trino.connection.config or {}).get(KEY if delta else ICEBERG_KEY)
    named = mapping.get(table.catalog_name) if isinstance(mapping, dict) else None
    if delta and not table.location.startswith("s3://"):
        raise SupersetError("Trino lists only Delta tables on S3, and this one is on local disk.")
    if delta and not isinstance(named, str):
        raise SupersetError(f"Trino connection '{trino.connection.name}' names no Delta catalog for the lake "
                            f"'{table.catalog_name}' (its delta_catalogs), so Trino does not list this table.")
    return named if isinstance(named, str) else table.catalog_name


def _undo(outcome: _Outcome) -> None:
    """Delete what a failed publish created in Superset, newest first (best effort: the next
    publish finds anything left by its UUID)."""
    if outcome.client is None:
        return
    for resource, pk in reversed(outcome.made):
        try:
            outcome.client.call("DELETE", f"/api/v1/{resource}/{pk}", what=f"remove the {resource} again")
        except SupersetError as exc:
            log.warning("could not remove Superset %s %s after a failed publish: %s", resource, pk, exc)


def _run(access: Access, conn: Connection, target: Any, before: SupersetPublication | None, work: Any,
         record: Any) -> SupersetPublication:
    """Do ``work`` (the Superset calls) under the connection's lock, then ``record`` it and audit.
    A failure removes what it created in Superset, is audited with its sentence and re-raised,
    our record unchanged."""
    prior = _ids(before)
    outcome = _Outcome()
    try:
        with transaction.atomic():
            Connection.objects.select_for_update().filter(pk=conn.pk).first()  # one publisher at a time
            work(outcome)
            publication = record(outcome)
            audit_record(access=access, action="superset.publish", target=target, before=prior, after={
                "ok": True, "connection": conn.name, **_ids(publication),
                "created": outcome.created, "updated": outcome.updated})
        return publication
    except SupersetError as exc:
        log.warning("publishing %s %s to Superset failed: %s", target.__class__.__name__, target.pk, exc)
        _undo(outcome)
        with transaction.atomic():
            audit_record(access=access, action="superset.publish", target=target, before=prior,
                         after={"ok": False, "connection": conn.name, "error": str(exc)[:500]})
        raise


def _ids(publication: SupersetPublication | None) -> dict[str, Any] | None:
    if publication is None:
        return None
    return {"database_id": publication.database_id, "dataset_id": publication.dataset_id,
            "chart_id": publication.chart_id}


def _save(access: Access, conn: Connection, outcome: _Outcome, **subject: Any) -> SupersetPublication:
    publication, _ = SupersetPublication.objects.update_or_create(connection=conn, **subject, defaults={
        "workspace": access.workspace, "database_id": outcome.database_id, "dataset_id": outcome.dataset_id,
        "chart_id": outcome.chart_id,
        "dataset_url": f"{outcome.url}/explore/?datasource_type=table&datasource_id={outcome.dataset_id}",
        "chart_url": f"{outcome.url}/explore/?slice_id={outcome.chart_id}" if outcome.chart_id else "",
        "published_at": timezone.now(), "published_by": access.user if getattr(access.user, "pk", None) else None})
    return publication


def superset_publish_table(*, access: Access, table: Table) -> SupersetPublication:
    """Publish ``table`` (of the access's workspace) as a physical dataset of the Superset
    connection serving its environment; operators and admins. Raises ``SupersetError``."""
    access.require(Role.OPERATOR)
    if table.workspace_id != access.workspace.pk:
        raise PermissionError("That table belongs to another workspace.")
    conn = superset_connection_for(workspace=access.workspace, environment=table.environment)
    before = SupersetPublication.objects.filter(connection=conn, table=table).first()
    latest = table.versions.order_by("-committed_at", "-id").first()

    def work(outcome: _Outcome) -> None:
        trino = trino_for(conn, environment=table.environment)
        catalog = _table_catalog(table, trino)
        outcome.client = client = client_for(conn, secrets=(trino.password,))
        outcome.url = client.url
        database = _database(client, trino, catalog, access.workspace, outcome)
        description = (f"{table.namespace}.{table.name} ({table.format}, {table.environment.name}) of the Control "
                       f"Room workspace {access.workspace.slug}; published by {access.label} at "
                       f"{timezone.now():%Y-%m-%d %H:%M:%S %Z}"
                       + (f", version {latest.version}." if latest else "."))
        create = {"database": database, "schema": table.namespace, "table_name": table.name}
        update = {"description": description, "schema": table.namespace, "table_name": table.name,
                  "database_id": database}
        outcome.dataset_id = _ensure(client, "dataset", _uuid(access.workspace, "table", conn.pk, table.pk),
                                     create, update, outcome, "dataset")
        if "dataset" in outcome.created:  # the description too, which creating does not take
            client.call("PUT", f"/api/v1/dataset/{outcome.dataset_id}", what="describe the dataset",
                        json_body={"description": description})
        _refresh(client, outcome.dataset_id)

    return _run(access, conn, table, before, work,
                lambda outcome: _save(access, conn, outcome, table=table))


def _chart_bodies(saved: Any, dataset_id: int) -> tuple[str, dict[str, Any]]:
    """(viz type, the chart's fields) for the saved query's chart: the sums of its y columns by x."""
    spec = saved.chart
    viz = VIZ_TYPES[spec["type"]]
    metrics = [{"expressionType": "SIMPLE", "column": {"column_name": y}, "aggregate": "SUM", "label": y}
               for y in spec["y"]]
    params = {"datasource": f"{dataset_id}__table", "viz_type": viz, "x_axis": spec["x"], "metrics": metrics,
              "groupby": [], "adhoc_filters": [], "row_limit": CHART_ROW_LIMIT, "x_axis_sort_asc": True,
              "show_legend": True}
    query_context = {"datasource": {"id": dataset_id, "type": "table"}, "force": False, "form_data": params,
                     "queries": [{"columns": [spec["x"]], "metrics": metrics, "orderby": [[spec["x"], True]],
                                  "row_limit": CHART_ROW_LIMIT, "filters": [], "extras": {"having": "", "where": ""}}],
                     "result_format": "json", "result_type": "full"}
    return viz, {"slice_name": _saved_name(saved), "viz_type": viz, "datasource_id": dataset_id,
                 "datasource_type": "table", "params": json.dumps(params), "query_context": json.dumps(query_context),
                 "description": f"{spec['type']} of {', '.join(spec['y'])} by {spec['x']}, from Control Room."}


def _saved_name(saved: Any) -> str:
    """The dataset's (and chart's) name: the title, made unique by the workspace and query id
    (Superset keeps dataset names unique)."""
    return f"{saved.title[:180]} (controlroom {saved.workspace.slug} query {saved.pk})"


def _saved_sql(saved: Any) -> str:
    from sqlwarehouse import params

    used = params.names(saved.sql, "trino")
    if used:
        raise SupersetError(f"Superset datasets take no parameters, and this query uses :{used[0]}; save a version "
                            "without parameters to publish it.")
    sql = saved.sql.strip().rstrip(";").strip()
    if not sql:
        raise SupersetError("This saved query has no SQL to publish.")
    return sql


def superset_publish_saved_query(*, access: Access, saved_query: Any) -> SupersetPublication:
    """Publish a saved query (one the caller may see, on the Trino connection Superset reads
    through) as a virtual dataset, with a chart when it has one; operators and admins. Raises
    ``SupersetError``."""
    access.require(Role.OPERATOR)
    saved = saved_query
    if saved.workspace_id != access.workspace.pk:
        raise PermissionError("That saved query belongs to another workspace.")
    source = saved.connection
    if source is None or source.kind != Connection.Kind.TRINO:
        raise SupersetError("Superset reads through Trino, and this query runs on "
                            + (f"'{source.name}' ({source.kind})." if source else "no connection."))
    conn = superset_connection_for(workspace=access.workspace, environment=source.environment)
    before = SupersetPublication.objects.filter(connection=conn, saved_query=saved).first()
    sql = _saved_sql(saved)

    def work(outcome: _Outcome) -> None:
        trino = trino_for(conn, environment=source.environment)
        if trino.connection.pk != source.pk:
            raise SupersetError(f"This query runs on '{source.name}', and Superset connection '{conn.name}' reads "
                                f"through Trino connection '{trino.connection.name}'.")
        config = source.config or {}
        catalog, schema = str(config.get("catalog") or "system"), config.get("schema") or None
        outcome.client = client = client_for(conn, secrets=(trino.password,))
        outcome.url = client.url
        database = _database(client, trino, catalog, access.workspace, outcome)
        description = (f"Saved query “{saved.title}” (version {saved.version}) of the Control Room workspace "
                       f"{access.workspace.slug}; published by {access.label} at "
                       f"{timezone.now():%Y-%m-%d %H:%M:%S %Z}.")
        body = {"database": database, "schema": schema, "table_name": _saved_name(saved), "sql": sql}
        update = {**{k: v for k, v in body.items() if k != "database"}, "database_id": database,
                  "description": description}
        outcome.dataset_id = _ensure(client, "dataset", _uuid(access.workspace, "saved_query", conn.pk, saved.pk),
                                     body, update, outcome, "dataset")
        if "dataset" in outcome.created:
            client.call("PUT", f"/api/v1/dataset/{outcome.dataset_id}", what="describe the dataset",
                        json_body={"description": description})
        _refresh(client, outcome.dataset_id)
        if saved.chart and saved.chart.get("type") in VIZ_TYPES:
            _, chart = _chart_bodies(saved, outcome.dataset_id)
            outcome.chart_id = _ensure(client, "chart", _uuid(access.workspace, "chart", conn.pk, saved.pk),
                                       chart, chart, outcome, "chart")

    return _run(access, conn, saved, before, work, lambda outcome: _save(access, conn, outcome, saved_query=saved))
