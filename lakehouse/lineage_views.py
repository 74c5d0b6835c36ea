"""The lineage page: the tables and jobs upstream and downstream of one table or job, drawn as
an SVG on the server (``lakehouse.lineage_graph`` walks and layers it, ``lakehouse.lineage_layout``
places it). Every page starts from ``workspace_access``; any member may read it."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from controlroom.access import Access
from controlroom.selectors import workspace_access
from lakehouse.lineage_graph import Key, Walk, layers_assign
from lakehouse.lineage_layout import TEXT_PAD, Box, Curve, layout, node_width
from lakehouse.models import Table
from lakehouse.selectors import LineageGraph, lineage_walk, table_get
from runs.selectors import job_get

DEPTH_DEFAULT, DEPTH_MAX = 3, 10
NODE_CAP = 300
LABEL_CHARS = 34  # longer labels are shortened in the middle; the full name is the node's tooltip


@dataclass(frozen=True)
class Node:
    key: Key
    kind: str  # "table" or "job"
    label: str
    title: str
    href: str
    focus: bool
    x: float  # the box, rounded for the markup
    y: float
    w: float
    h: float

    @property
    def tx(self) -> float:
        return round(self.x + TEXT_PAD, 1)

    @property
    def ty(self) -> float:
        return round(self.y + self.h / 2, 1)


def _node(key: Key, label: str, title: str, href: str, box: Box, focus: bool) -> Node:
    return Node(key=key, kind=key[0], label=label, title=title, href=href, focus=focus,
                x=round(box.x, 1), y=round(box.y, 1), w=round(box.w, 1), h=round(box.h, 1))


@login_required
def lineage_table(request: HttpRequest, workspace: str, table_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    table = table_get(access=access, table_id=table_id)
    return _lineage_page(request, access, focus=("table", table.pk), name=_table_label(table),
                         back=reverse("lakehouse:table_detail", args=[access.workspace.slug, table.pk]),
                         here="lakehouse:lineage_table", arg=table.pk)


@login_required
def lineage_job(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    obj = job_get(access=access, slug=job)
    return _lineage_page(request, access, focus=("job", obj.pk), name=obj.slug,
                         back=reverse("runs:job_detail", args=[access.workspace.slug, obj.slug]),
                         here="lakehouse:lineage_job", arg=obj.slug)


def depth_parse(raw: str | None) -> tuple[int, str]:
    """The ``depth`` query parameter: absent means the default; anything but a whole number from
    1 to DEPTH_MAX is refused with a sentence for the page."""
    if raw is None or raw == "":
        return DEPTH_DEFAULT, ""
    text = raw.strip()
    if text.isascii() and text.isdigit() and len(text) <= 2 and 1 <= int(text) <= DEPTH_MAX:
        return int(text), ""
    return DEPTH_DEFAULT, f"'depth' must be a whole number of hops from 1 to {DEPTH_MAX}."


def _lineage_page(request: HttpRequest, access: Access, *, focus: Key, name: str, back: str, here: str,
                  arg: object) -> HttpResponse:
    depth, error = depth_parse(request.GET.get("depth"))
    context = {"access": access, "workspace": access.workspace, "focus_kind": focus[0], "focus_name": name,
               "back": back, "here": reverse(here, args=[access.workspace.slug, arg]), "depth": depth,
               "depth_max": DEPTH_MAX, "error": error, "cap": NODE_CAP}
    if error:
        return render(request, "lakehouse/lineage.html", context, status=400)
    graph = lineage_walk(access=access, focus=focus, depth=depth, cap=NODE_CAP)
    context.update(_drawing(access, graph))
    return render(request, "lakehouse/lineage.html", context)


def _drawing(access: Access, graph: LineageGraph) -> dict[str, object]:
    slug = access.workspace.slug
    labels: dict[Key, tuple[str, str, str]] = {}  # label, tooltip, link
    for key in graph.distance:
        kind, pk = key
        if kind == "table":
            t = graph.tables[pk]
            labels[key] = (_table_label(t), f"{t.environment.name} · {t.catalog_name}.{t.namespace}.{t.name} "
                           f"({t.format} table)", reverse("lakehouse:table_detail", args=[slug, pk]))
        else:
            j = graph.jobs[pk]
            labels[key] = (j.slug, f"job {j.slug}" + (f" · {j.name}" if j.name and j.name != j.slug else ""),
                           reverse("runs:job_detail", args=[slug, j.slug]))
    shown = {k: _shorten(v[0]) for k, v in labels.items()}
    layering = layers_assign(Walk(focus=graph.focus, distance=graph.distance, cut=graph.cut), graph.edges)
    placed = layout(layering.layer, graph.edges, layering.back, {k: node_width(v) for k, v in shown.items()})
    nodes = [_node(k, shown[k], labels[k][1], labels[k][2], placed.boxes[k], k == graph.focus)
             for k in graph.distance]
    edges: list[tuple[Curve, str]] = [(c, _edge_title(c, labels)) for c in placed.curves]
    upstream = sum(1 for d in graph.distance.values() if d < 0)
    return {"nodes": nodes, "edges": edges, "width": placed.width, "height": placed.height, "cut": graph.cut,
            "tables": sum(1 for k in graph.distance if k[0] == "table"),
            "jobs": sum(1 for k in graph.distance if k[0] == "job"),
            "upstream": upstream, "downstream": len(graph.distance) - upstream - 1,
            "back_edges": sum(1 for c in placed.curves if c.back),
            "two_way_edges": sum(1 for c in placed.curves if c.both)}


def _edge_title(curve: Curve, labels: dict[Key, tuple[str, str, str]]) -> str:
    (a, b), name = curve.edge, (lambda k: labels[k][0])
    if curve.both:
        job, table = (a, b) if a[0] == "job" else (b, a)
        return f"{name(job)} reads and writes {name(table)}"
    return f"{name(a)} reads {name(b)}" if b[0] == "job" else f"{name(a)} writes {name(b)}"


def _table_label(table: Table) -> str:
    return f"{table.environment.name} · {table.namespace}.{table.name}"


def _shorten(label: str) -> str:
    if len(label) <= LABEL_CHARS:
        return label
    head = (LABEL_CHARS - 1) // 2
    return label[:head] + "…" + label[len(label) - (LABEL_CHARS - 1 - head):]
