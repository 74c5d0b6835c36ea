"""The table pages: the workspace's table list and one table's page (schema, versions, preview,
lineage, "open in SQL editor" at a version). Every page starts from ``workspace_access``."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from connections.models import Connection
from controlroom.access import Access
from controlroom.ids import id_parse
from controlroom.models import Environment, Role
from controlroom.selectors import workspace_access
from lakehouse.models import Table, TableVersion
from lakehouse.selectors import table_get, table_lineage, table_list, table_versions
from lakehouse.superset_views import superset_panel

log = logging.getLogger(__name__)
PREVIEW_ROWS = 50
CELL_CHARS = 200


@login_required
def table_index(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    filters = {"q": request.GET.get("q", "").strip()[:200], "format": request.GET.get("format", ""),
               "environment": request.GET.get("environment", "")}
    page = Paginator(table_list(access=access, **filters), 50).get_page(request.GET.get("page"))
    query = urlencode({k: v for k, v in filters.items() if v})
    return render(request, "lakehouse/table_list.html", {
        "access": access, "workspace": access.workspace, "page": page, "filters": filters, "query": query,
        "formats": Table.Format.choices, "environments": Environment.Name.values,
    })


@login_required
def table_detail(request: HttpRequest, workspace: str, table_id: int) -> HttpResponse:
    """The table page. Its preview reads the catalog, so it loads as a fragment after the page
    (``table_preview``), or inline with ``?preview=1`` for a browser without JavaScript."""
    access = workspace_access(user=request.user, slug=workspace)
    table = table_get(access=access, table_id=table_id)
    versions = table_versions(table=table)
    page = Paginator(versions, 25).get_page(request.GET.get("page"))
    latest = versions.first()
    shown = _version_shown(request, versions) or latest
    sql_link = _editor_link(access, table, shown) if shown and access.can(Role.ANALYST) else ""
    return render(request, "lakehouse/table_detail.html", {
        "access": access, "workspace": access.workspace, "table": table, "page": page, "latest": latest,
        "shown": shown, "schema": shown.schema if shown else [], "lineage": table_lineage(table=table),
        "preview": _preview(table, shown) if shown and request.GET.get("preview") == "1" else None,
        "sql_link": sql_link, "superset": superset_panel(access, table=table),
    })


@login_required
def table_preview(request: HttpRequest, workspace: str, table_id: int) -> HttpResponse:
    """The first rows of a version (``?version=``, else the newest), as the page's fragment."""
    access = workspace_access(user=request.user, slug=workspace)
    table = table_get(access=access, table_id=table_id)
    versions = table_versions(table=table)
    shown = _version_shown(request, versions) or versions.first()
    if shown is None:
        raise Http404("This table has no version to preview.")
    return render(request, "lakehouse/table_detail.html#preview", {
        "workspace": access.workspace, "table": table, "shown": shown, "preview": _preview(table, shown)})


def _version_shown(request: HttpRequest, versions: QuerySet[TableVersion]) -> TableVersion | None:
    wanted = id_parse(request.GET.get("version"), minimum=0)
    return versions.filter(version=wanted).first() if wanted is not None else None


def _preview(table: Table, version: TableVersion) -> dict[str, Any]:
    """The first rows of ``version``, read through the table's catalog (a scan: nothing is written)."""
    from lakehouse.catalogs import CatalogError, catalog_for
    from lakehouse.tables import table_arrow

    try:
        lake = catalog_for(table.workspace, table.environment, table.catalog_name)
        data, _ = table_arrow(lake, table.format, table.namespace, table.name, version=version.version,
                              limit=PREVIEW_ROWS)
    except CatalogError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # a storage or driver error: one sentence for the page, the detail to the log
        log.warning("preview of table %s version %s failed: %s", table.pk, version.version, exc)
        return {"error": f"The table's data could not be read ({type(exc).__name__}); see the server log."}
    data = data.slice(0, PREVIEW_ROWS)
    rows = [[_cell(v) for v in row.values()] for row in data.to_pylist()]
    return {"columns": data.column_names, "rows": rows}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…"


def _editor_link(access: Access, table: Table, version: TableVersion) -> str:
    """The SQL editor, prefilled with a query that reads ``version`` (``lakehouse.editor_sql``):
    in Trino's syntax on the workspace's Trino connection when it has one; otherwise the editor
    builds DuckDB SQL over the version's files from ``table_version``."""
    from lakehouse.editor_sql import trino_sql, trino_target

    params: dict[str, Any] = {"environment": table.environment.name}
    trino = trino_target(table)
    if trino is not None:
        params.update(sql=trino_sql(table, version, trino[1]), connection=trino[0])
    else:
        params["table_version"] = version.pk
        duckdb = (Connection.objects.filter(workspace=access.workspace, kind=Connection.Kind.DUCKDB)
                  .order_by("pk").values_list("pk", flat=True).first())
        if duckdb is not None:
            params["connection"] = duckdb
    return reverse("sqlwarehouse:editor", args=[access.workspace.slug]) + "?" + urlencode(params)
