"""The lineage graph's walk (depth, direction, cycles, the cap) and layered layout (no overlap,
the focus between its upstream and downstream, edges left to right or marked as back edges,
crossings removed, lanes for long edges), and the depth parameter's parsing: pure functions
(lakehouse/lineage_graph.py, lakehouse/lineage_layout.py); the pages are in test_lineage_page.py."""

from __future__ import annotations

import itertools
import random

import pytest

from lakehouse.lineage_graph import Edge, Key, layers_assign, walk
from lakehouse.lineage_layout import NODE_H, layout, node_width
from lakehouse.lineage_views import depth_parse


def generated(seed: int = 7) -> list[tuple[list[str], str, list[str]]]:
    """About 200 tables and jobs within four hops of ``silver.orders`` (upstream and downstream,
    with fan-in, a few long edges and one job that reads and writes the focus)."""
    rng = random.Random(seed)
    flows: list[tuple[list[str], str, list[str]]] = []
    raw = [f"raw.source_{i:02d}" for i in range(20)]
    bronze = [f"bronze.feed_{i:02d}" for i in range(12)]
    bronze_jobs = [f"ingest-{i:02d}" for i in range(9)]
    for i, job in enumerate(bronze_jobs):
        writes = [bronze[i]] + ([bronze[9 + i]] if i < 3 else [])
        flows.append((rng.sample(raw, rng.randint(2, 3)), job, writes))
    for i in range(3):
        flows.append((bronze[i * 4:i * 4 + 4], f"build-silver-{i}", ["silver.orders"]))
    flows.append((["silver.orders"], "dedupe-orders-in-place", ["silver.orders"]))
    outputs: list[str] = []
    for i in range(8):
        made = [f"silver.orders_by_{kind}_{i}" for kind in ("day", "region", "customer_segment_and_channel")[
            :rng.randint(2, 3)]]
        outputs += made
        flows.append((["silver.orders"], f"split-{i}", made))
    consumers = 0
    for table in outputs:
        for _ in range(rng.randint(1, 2)):
            if consumers == 30:
                break
            extra = [rng.choice(bronze)] if consumers % 7 == 0 else []
            flows.append(([table, *extra], f"mart-{consumers:02d}",
                          [f"gold.mart_{consumers:02d}_{kind}" for kind in range(rng.randint(2, 4))]))
            consumers += 1
    return flows


def abstract(flows: list[tuple[list[str], str, list[str]]]) -> tuple[dict[str, Key], list[Edge]]:
    """The flows as graph keys and edges, without a database."""
    keys: dict[str, Key] = {}

    def key(kind: str, name: str) -> Key:
        return keys.setdefault(f"{kind}:{name}", (kind, len(keys) + 1))

    edges = []
    for reads, job, writes in flows:
        edges += [(key("table", t), key("job", job)) for t in reads]
        edges += [(key("job", job), key("table", t)) for t in writes]
    return keys, edges


def edges_in(edges: list[Edge]):
    def edges_of(frontier, upstream):
        near = set(frontier)
        return [e for e in edges if (e[1] if upstream else e[0]) in near]
    return edges_of


# ---- the walk ------------------------------------------------------------------------------------

def chain(n: int) -> list[Edge]:
    """table 0 → job 0 → table 1 → job 1 → … → table n."""
    edges = []
    for i in range(n):
        edges += [(("table", i), ("job", i)), (("job", i), ("table", i + 1))]
    return edges


def test_the_walk_goes_depth_hops_each_way_and_no_further():
    edges = chain(10)
    for depth in (1, 2, 3, 7):
        walked = walk(("table", 5), edges_of=edges_in(edges), depth=depth, cap=300)
        assert sorted(walked.distance.values()) == list(range(-depth, depth + 1))
        assert not walked.cut
    walked = walk(("table", 5), edges_of=edges_in(edges), depth=2, cap=300)
    assert walked.distance == {("table", 5): 0, ("job", 4): -1, ("table", 4): -2, ("job", 5): 1, ("table", 6): 2}


def test_the_walk_follows_the_direction_of_the_data():
    # ingest writes two tables; from one of them, its sibling is neither upstream nor downstream.
    edges = [(("table", 1), ("job", 1)), (("job", 1), ("table", 2)), (("job", 1), ("table", 3)),
             (("table", 2), ("job", 2)), (("job", 2), ("table", 4)), (("table", 5), ("job", 2))]
    walked = walk(("table", 2), edges_of=edges_in(edges), depth=5, cap=300)
    assert walked.distance == {("table", 2): 0, ("job", 1): -1, ("table", 1): -2, ("job", 2): 1, ("table", 4): 2}
    assert ("table", 3) not in walked.distance and ("table", 5) not in walked.distance


def test_cycles_end_the_walk_and_become_back_edges():
    # A job that reads and writes its table, and a loop three hops long back into the focus.
    edges = [(("table", 1), ("job", 1)), (("job", 1), ("table", 1)),
             (("table", 1), ("job", 2)), (("job", 2), ("table", 2)), (("table", 2), ("job", 3)),
             (("job", 3), ("table", 1))]
    calls = []

    def counting(frontier, upstream):
        calls.append(len(frontier))
        return edges_in(edges)(frontier, upstream)

    walked = walk(("table", 1), edges_of=counting, depth=10, cap=300)
    assert set(walked.distance) == {("table", 1), ("job", 1), ("job", 2), ("table", 2), ("job", 3)}
    assert len(calls) <= 6  # the frontiers ran dry long before ten hops
    layering = layers_assign(walked, edges)
    assert layering.layer[("table", 1)] == 0
    for a, b in edges:
        assert layering.layer[a] < layering.layer[b] or (a, b) in layering.back, (a, b)
    assert layering.back  # a cycle cannot be drawn left to right everywhere


def test_the_cap_cuts_the_walk_in_key_order():
    hub = [(("table", 0), ("job", i)) for i in range(50)] + [(("job", i), ("table", 100 + i)) for i in range(50)]
    walked = walk(("table", 0), edges_of=edges_in(hub), depth=3, cap=20)
    assert walked.cut and len(walked.distance) == 20
    assert sorted(k for k in walked.distance if k != ("table", 0)) == [("job", i) for i in range(19)]
    assert not walk(("table", 0), edges_of=edges_in(hub), depth=3, cap=101).cut


def test_shortcuts_are_laid_out_by_the_longest_path():
    # report reads raw directly as well as through two hops: raw sits left of ingest, not beside it.
    _, edges = abstract([(["raw.x"], "ingest", ["bronze.x"]), (["bronze.x", "raw.x"], "report", ["gold.x"])])
    gold = ("table", 5)
    walked = walk(gold, edges_of=edges_in(edges), depth=5, cap=300)
    layering = layers_assign(walked, edges)
    assert walked.distance[("table", 1)] == -2 and layering.layer[("table", 1)] == -4
    assert not layering.back
    assert all(layering.layer[a] < layering.layer[b] for a, b in edges)


def test_a_tangle_keeps_its_hop_distances_rather_than_hundreds_of_columns():
    # A chain of twenty tables into the focus, each also one job away from it.
    focus, edges = ("table", 20), []
    for i in range(20):
        edges += [(("table", i), ("job", i)), (("job", i), ("table", i + 1)),
                  (("table", i), ("job", 100 + i)), (("job", 100 + i), focus)]
    walked = walk(focus, edges_of=edges_in(edges), depth=10, cap=300)
    layering = layers_assign(walked, edges)
    assert len(walked.distance) == 61
    assert layering.layer == walked.distance and min(layering.layer.values()) == -3
    for a, b in edges:
        assert layering.layer[a] < layering.layer[b] or (a, b) in layering.back, (a, b)


# ---- the layout ---------------------------------------------------------------------------------

def laid_out(flows, focus_name: str, depth: int):
    keys, edges = abstract(flows)
    walked = walk(keys[focus_name], edges_of=edges_in(edges), depth=depth, cap=300)
    layering = layers_assign(walked, edges)
    inside = [e for e in edges if e[0] in walked.distance and e[1] in walked.distance]
    widths = {k: node_width(f"dev · table number {k[1]}") for k in walked.distance}
    return walked, layering, inside, layout(layering.layer, inside, layering.back, widths)


def overlapping(boxes) -> list:
    clashes = []
    for (ka, a), (kb, b) in itertools.combinations(boxes.items(), 2):
        if a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h:
            clashes.append((ka, kb))
    return clashes


def test_a_200_node_layout_has_no_overlap_and_the_focus_between_its_sides():
    walked, layering, edges, placed = laid_out(generated(), "table:silver.orders", 4)
    assert 180 <= len(walked.distance) <= 230
    boxes = placed.boxes
    assert set(boxes) == set(walked.distance)
    assert not overlapping(boxes)
    focus = boxes[walked.focus]
    assert layering.layer[walked.focus] == 0
    for key, box in boxes.items():
        assert box.h == NODE_H and 0 <= box.x and box.x + box.w <= placed.width and box.y + box.h <= placed.height
        if layering.layer[key] < 0:
            assert box.x + box.w < focus.x, key
        elif layering.layer[key] > 0:
            assert box.x > focus.x + focus.w, key
    for a, b in edges:
        assert layering.layer[a] < layering.layer[b] or (a, b) in layering.back, (a, b)
    # dedupe-orders-in-place reads and writes the focus: one curve with an arrow at each end.
    (back,) = layering.back
    assert len(placed.curves) == len(edges) - 1 and not any(c.back for c in placed.curves)
    assert [c.edge for c in placed.curves if c.both] == [(back[1], back[0])]
    assert all(c.d.startswith("M") for c in placed.curves)


def test_column_order_removes_avoidable_crossings():
    # Two independent chains, started crossed: the sweeps uncross them.
    a, b, c, d = ("table", 1), ("table", 2), ("job", 1), ("job", 2)
    placed = layout({a: 0, b: 0, c: 1, d: 1}, [(a, d), (b, c)], set(), dict.fromkeys((a, b, c, d), 60))
    assert placed.crossings == 0
    assert (placed.boxes[a].y < placed.boxes[b].y) == (placed.boxes[d].y < placed.boxes[c].y)


def test_long_edges_get_a_lane_and_a_small_graph_stays_compact():
    _, layering, _, placed = laid_out([(["raw.x"], "ingest", ["bronze.x"]),
                                       (["bronze.x", "raw.x"], "report", ["gold.x"])], "table:gold.x", 5)
    assert not overlapping(placed.boxes) and not layering.back
    long = next(c for c in placed.curves if c.edge == (("table", 1), ("job", 4)))
    assert long.d.count("C") >= 2  # it bends into its lane and out again
    assert placed.height < 4 * NODE_H and placed.width < 1100


# ---- depth ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["abc", "10**40", "1e3", "0", "11", "-1", "3.5", "²", "1" * 50])
def test_bad_depths_are_refused_with_one_sentence(raw):
    assert depth_parse(raw) == (3, "'depth' must be a whole number of hops from 1 to 10.")


def test_good_depths():
    assert [depth_parse(v)[0] for v in (None, "", "1", "3", "10", "07")] == [3, 3, 1, 3, 10, 7]
