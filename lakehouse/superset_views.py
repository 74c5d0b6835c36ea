""""Publish to Superset" on the table page and the saved query page (POST, operators and admins),
and what those pages show about it (``superset_panel``): the button, and the link to the dataset
and chart once published. Outsiders get 404, lower roles 403, from ``workspace_access``."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from connections.models import Connection
from connections.services import connections_serving
from controlroom.access import Access
from controlroom.models import Role
from controlroom.selectors import workspace_access
from lakehouse.selectors import table_get
from lakehouse.superset import (
    SupersetError,
    superset_publication_of,
    superset_publish_saved_query,
    superset_publish_table,
)
from lakehouse.superset_models import SupersetPublication


def superset_panel(access: Access, *, table: Any = None, saved_query: Any = None) -> dict[str, Any]:
    """For a page: ``publication`` (the newest, to link to), ``can_publish`` (an operator, with a
    Superset connection serving the table's environment or the query's Trino connection) and
    ``publish_url``."""
    publication = superset_publication_of(table=table, saved_query=saved_query)
    can_publish = False
    if access.can(Role.OPERATOR):
        if table is not None:
            environment_id = table.environment_id
        else:
            source = saved_query.connection
            environment_id = source.environment_id if source and source.kind == Connection.Kind.TRINO else -1
        can_publish = environment_id != -1 and bool(connections_serving(
            workspace_id=access.workspace.pk, environment_id=environment_id, kind=Connection.Kind.SUPERSET))
    slug = access.workspace.slug
    publish_url = reverse("lakehouse:table_superset_publish", args=[slug, table.pk]) if table is not None \
        else reverse("sqlwarehouse:saved_superset_publish", args=[slug, saved_query.pk])
    return {"publication": publication, "can_publish": can_publish, "publish_url": publish_url}


def _done(request: HttpRequest, publication: SupersetPublication, what: str) -> None:
    chart = format_html(' and <a href="{}" id="superset-chart-link">its chart</a>', publication.chart_url) \
        if publication.chart_url else ""
    messages.success(request, format_html('{} published to Superset: <a href="{}" id="superset-published-link">'
                                          'its dataset</a>{}.', what, publication.dataset_url, chart))


@login_required
@require_POST
def table_publish(request: HttpRequest, workspace: str, table_id: int) -> HttpResponse:
    """Publish the table as a Superset dataset, then back to its page with the outcome."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    table = table_get(access=access, table_id=table_id)
    try:
        publication = superset_publish_table(access=access, table=table)
    except SupersetError as exc:
        messages.error(request, str(exc))
    else:
        _done(request, publication, f"{table.namespace}.{table.name}")
    return redirect("lakehouse:table_detail", workspace=workspace, table_id=table.pk)


@login_required
@require_POST
def saved_query_publish(request: HttpRequest, workspace: str, saved_id: int) -> HttpResponse:
    """Publish a saved query the user may see as a Superset dataset (and chart), then back to it."""
    from sqlwarehouse.services import saved_query_get

    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    saved = saved_query_get(access=access, saved_id=saved_id)
    try:
        publication = superset_publish_saved_query(access=access, saved_query=saved)
    except SupersetError as exc:
        messages.error(request, str(exc))
    else:
        _done(request, publication, f"“{saved.title}”")
    return redirect("sqlwarehouse:saved_detail", workspace=workspace, saved_id=saved.pk)
