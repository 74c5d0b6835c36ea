"""The lineage graph around one table or job: which nodes lie within ``depth`` hops upstream and
downstream, and the column (layer) each is drawn in. Pure functions: the caller says how to find
a frontier's edges (``lakehouse.selectors.lineage_walk`` asks the database, tests a list).

Nodes are tables and jobs, keyed ``("table", pk)`` or ``("job", pk)``; an edge ``(a, b)`` says data
flows from ``a`` to ``b`` (a table a job read, or a job and the table it wrote)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

Key = tuple[str, int]
Edge = tuple[Key, Key]
# The edges that end in (upstream=True) or start from (upstream=False) the given nodes.
EdgesOf = Callable[[Collection[Key], bool], Iterable[Edge]]
SPARE_COLUMNS = 4  # how many more columns than twice its hops a side may take for longest paths


@dataclass(frozen=True)
class Walk:
    focus: Key
    distance: dict[Key, int]  # signed hops from the focus: upstream negative, downstream positive
    cut: bool  # True when the node cap stopped the walk before ``depth``


def walk(focus: Key, *, edges_of: EdgesOf, depth: int, cap: int) -> Walk:
    """Breadth first from ``focus``, one hop at a time upstream (against the edges) and downstream
    (along them), up to ``depth`` hops and ``cap`` nodes in all. A node is visited once (cycles end
    there); one reached both ways in the same hop counts as upstream. When the cap bites, the
    hop's new nodes are taken in key order, so the same data always draws the same graph."""
    distance: dict[Key, int] = {focus: 0}
    frontier: dict[bool, list[Key]] = {True: [focus], False: [focus]}
    cut = False
    for hop in range(1, depth + 1):
        for upstream in (True, False):
            if not frontier[upstream]:
                continue
            known = set(frontier[upstream])
            found: set[Key] = set()
            for source, target in edges_of(frontier[upstream], upstream):
                near, far = (target, source) if upstream else (source, target)
                if near in known and far not in distance:
                    found.add(far)
            new = sorted(found)
            room = cap - len(distance)
            if len(new) > room:
                new, cut = new[:max(room, 0)], True
            for key in new:
                distance[key] = -hop if upstream else hop
            frontier[upstream] = new
        if cut or not (frontier[True] or frontier[False]):
            break
    return Walk(focus=focus, distance=distance, cut=cut)


@dataclass(frozen=True)
class Layering:
    layer: dict[Key, int]  # the column: 0 the focus, negative upstream, positive downstream
    back: set[Edge]  # edges that do not run left to right (they close a cycle)


def layers_assign(walk: Walk, edges: Iterable[Edge]) -> Layering:
    """Columns for the walked nodes: each side of the focus is laid out by longest path, so every
    edge inside a side runs left to right even where a shortcut skips a column (a job that reads
    both raw and silver). Edges that close a cycle (a job that reads and writes one table, or a
    downstream table feeding an upstream job) are found by a depth-first search from the focus.
    A side whose longest path would need too many columns keeps its hop distances instead. Every
    edge then goes from a lower to a higher column, or is returned as a back edge."""
    nodes = walk.distance
    edges = sorted({(a, b) for a, b in edges if a in nodes and b in nodes and a != b})
    found: dict[Key, int] = {walk.focus: 0}
    for upstream, sign in ((True, -1), (False, 1)):
        side = {k for k, d in nodes.items() if (d < 0 if upstream else d > 0)}
        # The side as a graph pointing away from the focus: upstream runs against the edges.
        away: dict[Key, list[Key]] = {k: [] for k in side | {walk.focus}}
        for a, b in edges:
            near, far = (b, a) if upstream else (a, b)
            if far in side and near in away:
                away[near].append(far)
        cyclic = _back_edges(walk.focus, away)
        longest = {k: n for k, n in _longest_paths(walk.focus, away, cyclic).items() if k in side}
        hops = max((abs(nodes[k]) for k in side), default=0)
        # A tangle (many cycles, or shortcuts over long chains) can make the longest path far
        # longer than the walk: the side keeps its hop distances then, and its columns stay few.
        if max(longest.values(), default=0) <= 2 * hops + SPARE_COLUMNS:
            found.update({k: sign * n for k, n in longest.items()})
    # In the walk's order (the layout starts from it); a node the edges no longer reach keeps its hops.
    layer = {key: found.get(key, d) for key, d in nodes.items()}
    back = {(a, b) for a, b in edges if layer[a] >= layer[b]}
    return Layering(layer=layer, back=back)


def _back_edges(root: Key, away: Mapping[Key, Sequence[Key]]) -> set[tuple[Key, Key]]:
    """Edges (in ``away``'s direction) into a node still on the depth-first stack: without them
    the graph has no cycle. Iterative, so a long chain cannot exhaust the recursion limit."""
    state: dict[Key, int] = {root: 1}  # 1 on the stack, 2 done
    stack = [(root, iter(away.get(root, ())))]
    back: set[tuple[Key, Key]] = set()
    while stack:
        node, children = stack[-1]
        for child in children:
            seen = state.get(child)
            if seen == 1:
                back.add((node, child))
            elif seen is None:
                state[child] = 1
                stack.append((child, iter(away.get(child, ()))))
                break
        else:
            state[node] = 2
            stack.pop()
    return back


def _longest_paths(root: Key, away: Mapping[Key, Sequence[Key]], skip: set[tuple[Key, Key]]) -> dict[Key, int]:
    """The longest path from ``root`` to every node it reaches, over ``away`` without ``skip``
    (a DAG then): Kahn's topological order, each node one more than its furthest parent."""
    reach: set[Key] = {root}
    todo = [root]
    while todo:
        for child in away.get(todo.pop(), ()):
            if child not in reach:
                reach.add(child)
                todo.append(child)
    indegree = dict.fromkeys(reach, 0)
    for node in reach:
        for child in away.get(node, ()):
            if (node, child) not in skip:
                indegree[child] += 1
    length = dict.fromkeys(reach, 0)
    ready = [k for k in sorted(reach) if indegree[k] == 0]
    while ready:
        node = ready.pop()
        for child in away.get(node, ()):
            if (node, child) in skip:
                continue
            length[child] = max(length[child], length[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return length
