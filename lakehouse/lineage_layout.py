"""Where each node of a layered lineage graph goes, and the curve each edge follows, for an SVG
drawn left to right (``templates/lakehouse/lineage.html``). Pure functions over the columns from
``lakehouse.lineage_graph.layers_assign``.

The steps are the usual ones for layered drawings (Sugiyama): an edge that spans several columns
passes through a placeholder in each column between, so it gets a lane of its own instead of
cutting through nodes; a few barycenter sweeps order each column to cut down crossings; each
column is then placed as close to its neighbours' heights as the order and spacing allow
(isotonic regression), and columns are spread wider where their edges climb far."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from lakehouse.lineage_graph import Edge, Key

NODE_H = 22  # a node's height: one line of 11px monospace text
ROW_GAP = 6  # between two nodes of a column
LANE_H, LANE_GAP = 2, 5  # a long edge's placeholder, and its gap to its neighbours
CHAR_W = 6.7  # one character of the node labels' monospace font (11px), with a margin
TEXT_PAD = 9  # text inset from the node's left and right
PAD = 12  # the drawing's margin
MIN_GAP_X, MAX_GAP_X = 56, 170  # the space between columns, where edges run
SWEEPS, PLACEMENTS = 6, 8


def node_width(label: str) -> int:
    """A node's width, fitted to its (already truncated) label."""
    return int(len(label) * CHAR_W + 2 * TEXT_PAD)


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(frozen=True)
class Curve:
    edge: Edge
    d: str  # the SVG path
    back: bool
    both: bool = False  # the edge's reverse exists too (a job reads and writes the table): one curve, two arrows


@dataclass(frozen=True)
class Placement:
    boxes: dict[Key, Box]
    curves: list[Curve]
    width: int
    height: int
    crossings: int


def layout(layer: Mapping[Key, int], edges: Sequence[Edge], back: set[Edge], widths: Mapping[Key, float]) -> Placement:
    """Boxes for the nodes of ``layer`` (key → column, in the order to start from) and curves for
    ``edges``; a ``back`` edge is drawn as a dashed loop instead of taking part in the order, or,
    when its reverse is an edge too, as a second arrowhead on that edge's curve."""
    columns = sorted(set(layer.values()))
    col_of = {c: i for i, c in enumerate(columns)}
    order: list[list[Key]] = [[] for _ in columns]
    for key, c in layer.items():
        order[col_of[c]].append(key)
    height = {k: NODE_H for k in layer}
    chains: dict[Edge, list[Key]] = {}  # each forward edge: its nodes, placeholders included
    for a, b in sorted(set(edges)):
        if (a, b) in back or a not in layer or b not in layer:
            continue
        chain = [a]
        for c in range(col_of[layer[a]] + 1, col_of[layer[b]]):
            lane: Key = (f"lane:{a[0]}:{a[1]}:{b[0]}:{b[1]}", c)
            order[c].append(lane)
            height[lane] = LANE_H
            chain.append(lane)
        chains[(a, b)] = [*chain, b]
    links: list[tuple[Key, Key]] = [(s, t) for chain in chains.values() for s, t in pairwise(chain)]
    order, crossings = _order(order, links)
    ys = _place(order, links, height)
    xs, col_w = _columns(order, links, ys, widths)
    boxes: dict[Key, Box] = {}
    for c, keys in enumerate(order):
        for key in keys:
            w = widths.get(key, 0) if key in layer else col_w[c]
            boxes[key] = Box(x=xs[c] + (col_w[c] - w) / 2, y=ys[key] - height[key] / 2, w=w, h=height[key])
    top = min((b.y for b in boxes.values()), default=0) - PAD
    boxes = {k: Box(b.x, b.y - top, b.w, b.h) for k, b in boxes.items()}
    # A back edge whose reverse is drawn forward is the same pair of nodes: one curve, both arrows.
    paired = {e for e in back if (e[1], e[0]) in chains}
    curves = _forward_curves(chains, boxes, {(b, a) for a, b in paired})
    curves += [_back_curve(e, boxes) for e in sorted(back - paired) if e[0] in layer and e[1] in layer]
    nodes = {k: b for k, b in boxes.items() if k in layer}
    width = max((b.x + b.w for b in boxes.values()), default=0) + PAD
    bottom = max((b.y + b.h for b in boxes.values()), default=0) + PAD
    return Placement(boxes=nodes, curves=curves, width=int(width + 0.5), height=int(bottom + 0.5), crossings=crossings)


def _order(order: list[list[Key]], links: list[tuple[Key, Key]]) -> tuple[list[list[Key]], int]:
    """Barycenter sweeps, right then left, keeping the order with the fewest crossings."""
    parents: dict[Key, list[Key]] = {}
    children: dict[Key, list[Key]] = {}
    for s, t in links:
        children.setdefault(s, []).append(t)
        parents.setdefault(t, []).append(s)
    best = [list(keys) for keys in order]
    best_count = _crossings(best, links)
    current = [list(keys) for keys in order]
    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        steps = range(1, len(current)) if forward else range(len(current) - 2, -1, -1)
        for c in steps:
            fixed = current[c - 1] if forward else current[c + 1]
            where = {k: i for i, k in enumerate(fixed)}
            near = parents if forward else children
            here = current[c]
            scale = max(len(fixed), 1) / max(len(here), 1)
            weight: dict[Key, float] = {}
            for i, key in enumerate(here):
                spots = [where[n] for n in near.get(key, ()) if n in where]
                # A node with no neighbour there keeps its relative place.
                weight[key] = sum(spots) / len(spots) if spots else i * scale
            current[c] = sorted(here, key=weight.__getitem__)
        count = _crossings(current, links)
        if count < best_count:
            best, best_count = [list(keys) for keys in current], count
    return best, best_count


def _crossings(order: list[list[Key]], links: list[tuple[Key, Key]]) -> int:
    """How many pairs of links between neighbouring columns cross (an inversion count)."""
    where = {k: i for keys in order for i, k in enumerate(keys)}
    column = {k: c for c, keys in enumerate(order) for k in keys}
    by_gap: dict[int, list[tuple[int, int]]] = {}
    for s, t in links:
        by_gap.setdefault(column[s], []).append((where[s], where[t]))
    total = 0
    for pairs in by_gap.values():
        pairs.sort()
        total += _inversions([t for _, t in pairs])
    return total


def _inversions(values: list[int]) -> int:
    if len(values) < 2:
        return 0
    mid = len(values) // 2
    left, right = sorted(values[:mid]), sorted(values[mid:])
    count = _inversions(values[:mid]) + _inversions(values[mid:])
    j = 0
    for v in left:  # for each left value, the right values strictly smaller
        while j < len(right) and right[j] < v:
            j += 1
        count += j
    return count


def _place(order: list[list[Key]], links: list[tuple[Key, Key]], height: Mapping[Key, float]) -> dict[Key, float]:
    """Vertical centres: start stacked and centred, then move each column towards the mean height
    of its neighbours, keeping its order and spacing (the closest such placement, by isotonic
    regression)."""
    near: dict[Key, list[Key]] = {}
    for s, t in links:
        near.setdefault(s, []).append(t)
        near.setdefault(t, []).append(s)
    offsets = [_offsets(keys, height) for keys in order]
    tallest = max((o[-1] for o in offsets if o), default=0)
    y = {k: o + (tallest - offs[-1]) / 2
         for keys, offs in zip(order, offsets, strict=True) for k, o in zip(keys, offs, strict=True)}
    for round_ in range(PLACEMENTS):
        steps = range(len(order)) if round_ % 2 == 0 else range(len(order) - 1, -1, -1)
        for c in steps:
            keys, offs = order[c], offsets[c]
            if not keys:
                continue
            wanted, weights = [], []
            for key, off in zip(keys, offs, strict=True):
                spots = [y[n] for n in near.get(key, ())]
                wanted.append((sum(spots) / len(spots) if spots else y[key]) - off)
                weights.append(1.0 if spots else 0.05)
            for key, off, z in zip(keys, offs, _isotonic(wanted, weights), strict=True):
                y[key] = z + off
    return y


def _offsets(keys: list[Key], height: Mapping[Key, float]) -> list[float]:
    """Each item's centre below the first one's when packed as tightly as allowed."""
    out: list[float] = []
    for i, key in enumerate(keys):
        if i == 0:
            out.append(0.0)
            continue
        prev = keys[i - 1]
        lane = height[prev] == LANE_H or height[key] == LANE_H
        out.append(out[-1] + (height[prev] + height[key]) / 2 + (LANE_GAP if lane else ROW_GAP))
    return out


def _isotonic(values: list[float], weights: list[float]) -> list[float]:
    """The non-decreasing sequence closest to ``values`` (weighted least squares): pool adjacent
    violators."""
    blocks: list[list[float]] = []  # [weight, weighted sum, count]
    for v, w in zip(values, weights, strict=True):
        blocks.append([w, w * v, 1])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] > blocks[-1][1] / blocks[-1][0]:
            w2, s2, n2 = blocks.pop()
            blocks[-1][0] += w2
            blocks[-1][1] += s2
            blocks[-1][2] += n2
    out: list[float] = []
    for w, s, n in blocks:
        out.extend([s / w] * int(n))
    return out


def _columns(order: list[list[Key]], links: list[tuple[Key, Key]], ys: Mapping[Key, float],
             widths: Mapping[Key, float]) -> tuple[list[float], list[float]]:
    """Each column's left edge and width; the gap after a column grows with how far its edges climb,
    so steep bundles stay apart."""
    col_w = [max([widths.get(k, 0) for k in keys] + [12]) for keys in order]
    column = {k: c for c, keys in enumerate(order) for k in keys}
    climb = [0.0] * len(order)
    for s, t in links:
        climb[column[s]] = max(climb[column[s]], abs(ys[s] - ys[t]))
    xs: list[float] = []
    x = float(PAD)
    for c, w in enumerate(col_w):
        xs.append(x)
        x += w + min(MAX_GAP_X, max(MIN_GAP_X, climb[c] / 5))
    return xs, col_w


def _ports(boxes: Mapping[Key, Box], ends: dict[Key, list[tuple[float, int]]]) -> dict[int, float]:
    """Spread the edges meeting one side of a node over its height, in the order they arrive."""
    port: dict[int, float] = {}
    for key, items in ends.items():
        box = boxes[key]
        items.sort()
        span = min(box.h - 8, (len(items) - 1) * 3.0) if len(items) > 1 else 0
        for i, (_, idx) in enumerate(items):
            port[idx] = box.cy - span / 2 + (span * i / (len(items) - 1) if len(items) > 1 else 0)
    return port


def _forward_curves(chains: Mapping[Edge, list[Key]], boxes: Mapping[Key, Box], both: set[Edge]) -> list[Curve]:
    items = list(chains.items())
    outs: dict[Key, list[tuple[float, int]]] = {}
    ins: dict[Key, list[tuple[float, int]]] = {}
    for idx, (_, chain) in enumerate(items):
        outs.setdefault(chain[0], []).append((boxes[chain[1]].cy, idx))
        ins.setdefault(chain[-1], []).append((boxes[chain[-2]].cy, idx))
    out_port, in_port = _ports(boxes, outs), _ports(boxes, ins)
    curves = []
    for idx, (edge, chain) in enumerate(items):
        first, last = boxes[chain[0]], boxes[chain[-1]]
        points = [(first.x + first.w, out_port[idx])]
        for lane in chain[1:-1]:
            b = boxes[lane]
            points += [(b.x, b.cy), (b.x + b.w, b.cy)]
        points.append((last.x, in_port[idx]))
        d = [f"M{_n(points[0][0])},{_n(points[0][1])}"]
        for (x1, y1), (x2, y2) in pairwise(points):
            if y1 == y2:
                d.append(f"H{_n(x2)}")
            else:
                mid = (x1 + x2) / 2
                d.append(f"C{_n(mid)},{_n(y1)} {_n(mid)},{_n(y2)} {_n(x2)},{_n(y2)}")
        curves.append(Curve(edge=edge, d=" ".join(d), back=False, both=edge in both))
    return curves


def _back_curve(edge: Edge, boxes: Mapping[Key, Box]) -> Curve:
    """From the source's left side round to the target's right side (the arrow points left); in
    one column, a loop out to the right."""
    a, b = boxes[edge[0]], boxes[edge[1]]
    x2, y2 = b.x + b.w, b.cy + 4
    if a.x > b.x + b.w:
        x1, y1 = a.x, a.cy + 4
        bend = max(30.0, (x1 - x2) / 3)
        d = f"M{_n(x1)},{_n(y1)} C{_n(x1 - bend)},{_n(y1 + 24)} {_n(x2 + bend)},{_n(y2 + 24)} {_n(x2)},{_n(y2)}"
    else:
        x1, y1 = a.x + a.w, a.cy
        reach = max(x1, x2) + 40
        d = f"M{_n(x1)},{_n(y1)} C{_n(reach)},{_n(y1)} {_n(reach)},{_n(y2)} {_n(x2)},{_n(y2)}"
    return Curve(edge=edge, d=d, back=True)


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")
