"""Reads of the table registry, always scoped to the caller's workspace (``controlroom.access``)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery
from django.http import Http404

from controlroom.access import Access
from controlroom.ids import id_parse
from lakehouse.lineage_graph import Edge, Key, walk
from lakehouse.models import Table, TableEdge, TableVersion
from runs.models import Job
from runs.selectors import job_list

LINEAGE_ROWS = 5000  # distinct (job, table, direction) rows one lineage query may bring back


def table_list(*, access: Access, q: str = "", format: str = "", environment: str = "") -> QuerySet[Table]:
    """The workspace's tables, with their last commit (time, version id, run, how far the source is in
    it: ``source_as_of``) and version count."""
    latest = TableVersion.objects.filter(table=OuterRef("pk")).order_by("-committed_at", "-id")
    qs = (Table.objects.filter(workspace=access.workspace).select_related("environment")
          .annotate(last_commit=Max("versions__committed_at"), version_count=Count("versions"),
                    last_run_id=Subquery(latest.values("run_id")[:1]),
                    last_version=Subquery(latest.values("version")[:1]),
                    source_as_of=Subquery(latest.values("source_as_of")[:1])))
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


def lineage_edges(*, access: Access, tables: Collection[int], jobs: Collection[int], upstream: bool | None,
                  limit: int = LINEAGE_ROWS) -> tuple[list[Edge], bool]:
    """Data flows between the workspace's tables and jobs, over all runs and versions: a read is
    table → job, a write job → table. ``upstream`` True: the flows into the given nodes; False:
    out of them; None: the flows among them. An edge row whose run, job or table belongs to
    another workspace is never followed. Returns at most ``limit`` edges and whether more exist."""
    ws = access.workspace
    read, write = TableEdge.Direction.READ, TableEdge.Direction.WRITE
    if upstream is None:
        among = Q(table_version__table_id__in=list(tables), run__job_id__in=list(jobs))
    else:
        into_tables, into_jobs = (write, read) if upstream else (read, write)
        among = (Q(direction=into_tables, table_version__table_id__in=list(tables))
                 | Q(direction=into_jobs, run__job_id__in=list(jobs)))
    rows = list(TableEdge.objects
                .filter(run__workspace=ws, run__job__workspace=ws, table_version__table__workspace=ws)
                .filter(among)
                .values_list("run__job_id", "table_version__table_id", "direction").distinct()
                .order_by("run__job_id", "table_version__table_id", "direction")[:limit + 1])
    edges: list[Edge] = [(("table", t), ("job", j)) if d == read else (("job", j), ("table", t))
                         for j, t, d in rows[:limit]]
    return edges, len(rows) > limit


@dataclass(frozen=True)
class LineageGraph:
    focus: Key
    distance: dict[Key, int]  # signed hops from the focus
    edges: list[Edge]  # every flow among the nodes
    cut: bool  # the node cap or a query's row limit left some of the graph out
    tables: dict[int, Table]
    jobs: dict[int, Job]


def lineage_walk(*, access: Access, focus: Key, depth: int, cap: int) -> LineageGraph:
    """The tables and jobs within ``depth`` hops of ``focus`` (a table or job of the caller's
    workspace) upstream and downstream, at most ``cap`` of them: two queries a hop, then one for
    the flows among them and one each for the tables and jobs."""
    cut_rows = False

    def edges_of(frontier: Collection[Key], upstream: bool) -> list[Edge]:
        nonlocal cut_rows
        edges, cut = lineage_edges(access=access, tables=[pk for kind, pk in frontier if kind == "table"],
                                   jobs=[pk for kind, pk in frontier if kind == "job"], upstream=upstream)
        cut_rows |= cut
        return edges

    walked = walk(focus, edges_of=edges_of, depth=depth, cap=cap)
    table_ids = [pk for kind, pk in walked.distance if kind == "table"]
    job_ids = [pk for kind, pk in walked.distance if kind == "job"]
    edges, cut = lineage_edges(access=access, tables=table_ids, jobs=job_ids, upstream=None,
                               limit=max(LINEAGE_ROWS, 4 * cap))
    tables = {t.pk: t for t in Table.objects.filter(workspace=access.workspace, pk__in=table_ids)
              .select_related("environment")}
    jobs = {j.pk: j for j in job_list(access=access).filter(pk__in=job_ids)}
    present = {("table", pk) for pk in tables} | {("job", pk) for pk in jobs}
    return LineageGraph(focus=focus, distance={k: d for k, d in walked.distance.items() if k in present},
                        edges=[e for e in edges if e[0] in present and e[1] in present],
                        cut=walked.cut or cut_rows or cut, tables=tables, jobs=jobs)
