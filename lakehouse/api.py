"""The table registry over the API: ``GET …/tables`` and ``GET …/tables/<id>`` (viewer tokens)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from controlroom.access import Access
from controlroom.api import api_view, cursor_param
from controlroom.models import Role
from lakehouse.models import Table, TableVersion
from lakehouse.selectors import table_get, table_list, table_versions

PAGE = 100


def _table_json(table: Table) -> dict[str, Any]:
    data = {"id": table.pk, "environment": table.environment.name, "catalog": table.catalog_name,
            "namespace": table.namespace, "name": table.name, "format": table.format, "location": table.location,
            "created_at": table.created_at.isoformat(), "updated_at": table.updated_at.isoformat()}
    if hasattr(table, "last_commit"):
        data.update({"last_commit_at": table.last_commit.isoformat() if table.last_commit else None,
                     "last_version": table.last_version, "last_run_id": table.last_run_id,
                     "versions": table.version_count})
    return data


def _version_json(version: TableVersion) -> dict[str, Any]:
    return {"id": version.pk, "version": version.version, "operation": version.operation,
            "committed_at": version.committed_at.isoformat(), "row_count": version.row_count, "bytes": version.bytes,
            "fingerprint": version.fingerprint or None,
            "fingerprint_pending": version.fingerprint_pending, "schema": version.schema, "run_id": version.run_id,
            "phase": version.phase.name if version.phase else None, "attempt": version.attempt,
            "git_sha": version.git_sha or None}


@api_view(("GET",), Role.VIEWER, ("runs:read", "sql:read"))
def tables(request: HttpRequest, access: Access) -> JsonResponse:
    """The workspace's tables by id, 100 a page (``after=<id>`` continues); ``q``, ``format`` and
    ``environment`` filter."""
    qs = table_list(access=access, q=request.GET.get("q", "").strip()[:200], format=request.GET.get("format", ""),
                    environment=request.GET.get("environment", "")).order_by("pk")
    after = cursor_param(request, "after")
    if after is not None:
        qs = qs.filter(pk__gt=after)
    page = list(qs[:PAGE])
    return JsonResponse({"tables": [_table_json(t) for t in page],
                         "next_after": page[-1].pk if len(page) == PAGE else None})


@api_view(("GET",), Role.VIEWER, ("runs:read", "sql:read"))
def table(request: HttpRequest, access: Access, table_id: str) -> JsonResponse:
    """One table with its versions, newest first, 100 a page (``versions_before=<version row id>``)."""
    obj = table_get(access=access, table_id=table_id)
    qs = table_versions(table=obj).order_by("-id")
    before = cursor_param(request, "versions_before")
    if before is not None:
        qs = qs.filter(pk__lt=before)
    page = list(qs[:PAGE])
    return JsonResponse({**_table_json(obj), "versions": [_version_json(v) for v in page],
                         "next_versions_before": page[-1].pk if len(page) == PAGE else None})
