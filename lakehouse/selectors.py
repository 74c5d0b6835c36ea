"""Reads of the table registry, always scoped to the caller's workspace (``controlroom.access``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery
from django.http import Http404

from controlroom.access import Access
from controlroom.ids import id_parse
from lakehouse.models import Table, TableEdge, TableVersion


def table_list(*, access: Access, q: str = "", format: str = "", environment: str = "") -> QuerySet[Table]:
    """The workspace's tables, with their last commit (time, version id, run) and version count."""
    latest = TableVersion.objects.filter(table=OuterRef("pk")).order_by("-committed_at", "-id")
    qs = (Table.objects.filter(workspace=access.workspace).select_related("environment")
          .annotate(last_commit=Max("versions__committed_at"), version_count=Count("versions"),
                    last_run_id=Subquery(latest.values("run_id")[:1]),
                    last_version=Subquery(latest.values("version")[:1])))
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(namespace__icontains=q) | Q(catalog_name__icontains=q))
    if format in Table.Format.values:
        qs = qs.filter(format=format)
    if environment:
        qs = qs.filter(environment__name=environment)
    return qs.order_by("environment_id", "catalog_name", "namespace", "name")


def table_get(*, access: Access, table_id: int | str) -> Table:
    """One table of the caller's workspace; 404 for another workspace's or an unknown id."""
    pk = id_parse(str(table_id))
    table = (Table.objects.filter(workspace=access.workspace, pk=pk).select_related("environment").first()
             if pk is not None else None)
    if table is None:
        raise Http404("No such table in this workspace.")
    return table


def table_versions(*, table: Table) -> QuerySet[TableVersion]:
    """Newest first, with the run and phase that made each version."""
    return table.versions.select_related("run__job", "phase").order_by("-committed_at", "-id")


@dataclass(frozen=True)
class Lineage:
    upstream: list[Table]  # tables read by the runs that wrote this one
    downstream: list[Table]  # tables written by the runs that read this one
    writers: list[int]  # the newest runs that wrote it (ids)
    readers: list[int]  # the newest runs that read it (ids)


def table_lineage(*, table: Table, limit: int = 20) -> Lineage:
    """The table's neighbours through the phases that wrote and read it (not whole runs: a run
    that writes bronze and silver did not make bronze out of silver), bounded to ``limit``
    phases each way and to this workspace."""
    edges = TableEdge.objects.filter(table_version__table=table, run__workspace_id=table.workspace_id)
    writes = edges.filter(direction=TableEdge.Direction.WRITE, phase__isnull=False).order_by("-run_id")
    reads = edges.filter(direction=TableEdge.Direction.READ, phase__isnull=False).order_by("-run_id")
    writer_phases = list(writes.values_list("phase_id", flat=True).distinct()[:limit])
    reader_phases = list(reads.values_list("phase_id", flat=True).distinct()[:limit])

    def neighbours(phases: list[int], direction: str) -> list[Table]:
        ids = (TableEdge.objects.filter(phase_id__in=phases, direction=direction)
               .exclude(table_version__table=table).values("table_version__table_id"))
        return list(Table.objects.filter(pk__in=ids, workspace_id=table.workspace_id).order_by("namespace", "name"))

    def runs(queryset: Any) -> list[int]:
        return sorted(set(queryset.values_list("run_id", flat=True)[:limit]), reverse=True)

    return Lineage(upstream=neighbours(writer_phases, TableEdge.Direction.READ),
                   downstream=neighbours(reader_phases, TableEdge.Direction.WRITE),
                   writers=runs(edges.filter(direction=TableEdge.Direction.WRITE).order_by("-run_id")),
                   readers=runs(edges.filter(direction=TableEdge.Direction.READ).order_by("-run_id")))
