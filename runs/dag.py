"""Lay out a run's phase DAG for drawing: columns by dependency depth, rows in spec order."""

from __future__ import annotations

from dataclasses import dataclass

from runs.models import Phase

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 150, 40, 50, 16, 8


@dataclass(frozen=True)
class Node:
    phase: Phase
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class DagLayout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    node_w: int = NODE_W
    node_h: int = NODE_H


def dag_layout(phases: list[Phase]) -> DagLayout:
    by_name = {p.name: p for p in phases}
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            deps = [d for d in by_name[name].depends_on if d in by_name and d not in seen]
            depth[name] = 1 + max((level(d, seen | {name}) for d in deps), default=-1)
        return depth[name]

    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    nodes: list[Node] = []
    for phase in sorted(phases, key=lambda p: p.position):
        column = level(phase.name)
        row = rows.get(column, 0)
        rows[column] = row + 1
        x, y = PAD + column * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y)
        where[phase.name] = (x, y)
        nodes.append(Node(phase, x, y))
    edges = [
        Edge(where[d][0] + NODE_W, where[d][1] + NODE_H // 2, where[p.name][0], where[p.name][1] + NODE_H // 2)
        for p in phases for d in p.depends_on if d in where
    ]
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return DagLayout(nodes, edges, width, height)
