"""The lineage page: the walk (depth, direction, cycles, the cap), the layered layout (no overlap,
the focus between its upstream and downstream, edges left to right or marked as back edges), the
pages for each persona, another workspace's objects and edge rows, bad depths, and the drawing of
a ~200-node graph in Chromium (LINEAGE_SHOTS=<folder> keeps screenshots)."""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from controlroom.models import Workspace
from lakehouse import lineage_views
from lakehouse.lineage_graph import Edge, Key, layers_assign, walk
from lakehouse.lineage_layout import NODE_H, layout, node_width
from lakehouse.lineage_views import depth_parse
from lakehouse.models import Table, TableEdge, TableVersion
from runs.models import Job, JobVersion, Run, RunStatus

ROLES = ("admin", "operator", "analyst", "viewer")


# ---- data: a small lakehouse of tables, jobs (one run each) and their reads and writes --------

@dataclass
class Lake:
    """Tables and jobs of one workspace by name; ``flow`` records a job's reads and writes."""

    workspace: Workspace
    tables: dict[str, Table] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)

    def table(self, name: str, env: str = "dev") -> Table:
        if name not in self.tables:
            namespace, _, short = name.partition(".")
            environment = self.workspace.environments.get(name=env)
            table = Table.objects.create(workspace=self.workspace, environment=environment, namespace=namespace,
                                         name=short, format="iceberg")
            TableVersion.objects.create(table=table, version=1, operation="append", committed_at=timezone.now())
            self.tables[name] = table
        return self.tables[name]

    def job(self, slug: str) -> Job:
        if slug not in self.jobs:
            job = Job.objects.create(workspace=self.workspace, slug=slug, name=slug)
            version = JobVersion.objects.create(job=job, number=1, spec_text="", spec={}, spec_hash="0" * 64)
            job.current_version = version
            job.save(update_fields=["current_version"])
            self.jobs[slug] = job
            self.runs[slug] = Run.objects.create(workspace=self.workspace, job=job, job_version=version,
                                                 environment=self.workspace.environments.get(name="dev"),
                                                 trigger=Run.Trigger.API, status=RunStatus.SUCCEEDED)
        return self.jobs[slug]

    def flow(self, reads: list[str], job: str, writes: list[str], env: dict[str, str] | None = None) -> None:
        self.job(job)
        for names, direction in ((reads, "read"), (writes, "write")):
            for name in names:
                version = self.table(name, (env or {}).get(name, "dev")).versions.get()
                TableEdge.objects.get_or_create(run=self.runs[job], phase=None, table_version=version,
                                                direction=direction)


def medallion(lake: Lake) -> None:
    """raw.orders → ingest → bronze.orders → clean → silver.orders → report → gold.revenue."""
    lake.flow(["raw.orders"], "ingest", ["bronze.orders"])
    lake.flow(["bronze.orders"], "clean", ["silver.orders"])
    lake.flow(["silver.orders"], "report", ["gold.revenue"], env={"gold.revenue": "prod"})


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


# ---- pages ---------------------------------------------------------------------------------------

class Links(HTMLParser):
    """The SVG's node links (href, data-kind) and titles."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if tag == "a" and "lineage-node" in (found.get("class") or ""):
            self.nodes.append(found)


def nodes_of(response) -> list[dict[str, str | None]]:
    reader = Links()
    reader.feed(response.content.decode())
    return reader.nodes


def table_url(table: Table, ws: str = "acme") -> str:
    return reverse("lakehouse:lineage_table", args=[ws, table.pk])


def job_url(job: Job, ws: str = "acme") -> str:
    return reverse("lakehouse:lineage_job", args=[ws, job.slug])


@pytest.fixture
def lake(world) -> Lake:
    lake = Lake(world.workspace)
    medallion(lake)
    return lake


@pytest.mark.django_db
def test_every_member_sees_the_lineage_of_tables_and_jobs(world, lake):
    silver, clean = lake.tables["silver.orders"], lake.jobs["clean"]
    for persona in ROLES:
        client = world.client(persona)
        page = client.get(table_url(silver))
        assert page.status_code == 200, persona
        nodes = {(n["data-kind"], n["href"]) for n in nodes_of(page)}
        expected = {("table", reverse("lakehouse:table_detail", args=["acme", t.pk])) for t in lake.tables.values()}
        expected |= {("job", reverse("runs:job_detail", args=["acme", j.slug])) for j in lake.jobs.values()}
        raw = ("table", reverse("lakehouse:table_detail", args=["acme", lake.tables["raw.orders"].pk]))
        assert nodes == expected - {raw}  # raw.orders is four hops up
        assert client.get(job_url(clean)).status_code == 200
    text = world.client("viewer").get(table_url(silver)).content.decode()
    assert "dev · silver.orders" in text and "prod · gold.revenue" in text  # the environment in each label
    assert 'class="lineage-node table focus"' in text
    assert "3 tables and 3 jobs within 3 hops: 3 upstream, 2 downstream." in text  # raw.orders is 4 hops up
    one_hop = nodes_of(world.client("viewer").get(table_url(silver), {"depth": "1"}))
    assert sorted(n["data-kind"] for n in one_hop) == ["job", "job", "table"]


@pytest.mark.django_db
def test_the_table_and_job_pages_link_to_their_lineage(world, lake):
    client = world.client("viewer")
    table_page = client.get(reverse("lakehouse:table_detail", args=["acme", lake.tables["bronze.orders"].pk]))
    assert f'id="lineage-link" href="{table_url(lake.tables["bronze.orders"])}"' in table_page.content.decode()
    job_page = client.get(reverse("runs:job_detail", args=["acme", "clean"]))
    assert f'id="lineage-link" href="{job_url(lake.jobs["clean"])}"' in job_page.content.decode()


@pytest.mark.django_db
def test_outsiders_and_anonymous_visitors_see_nothing(world, lake):
    silver, clean = lake.tables["silver.orders"], lake.jobs["clean"]
    for url in (table_url(silver), job_url(clean)):
        assert world.client("outsider").get(url).status_code == 404
        response = Client().get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    theirs = Lake(world.other)
    theirs.flow(["raw.secret"], "exfiltrate", ["gold.secret"])
    secret, job = theirs.tables["gold.secret"], theirs.jobs["exfiltrate"]
    admin = world.client("admin")
    # Another workspace's table or job: 404 under acme's address and under its own.
    for url in (table_url(secret), job_url(job), table_url(secret, "other"), job_url(job, "other")):
        assert admin.get(url).status_code == 404, url
    assert admin.get(reverse("lakehouse:lineage_table", args=["acme", 10 ** 40])).status_code == 404
    assert world.client("outsider").get(table_url(secret, "other")).status_code == 200


@pytest.mark.django_db
def test_edge_rows_into_another_workspace_are_never_followed(world, lake):
    """A hostile tenant: other's run reads acme's table and writes one of its own; an acme run is
    recorded as writing other's table. Neither side sees the other's tables or jobs."""
    theirs = Lake(world.other)
    theirs.flow(["raw.bait"], "copy-acme", ["gold.stolen"])
    silver = lake.tables["silver.orders"]
    TableEdge.objects.create(run=theirs.runs["copy-acme"], table_version=silver.versions.get(), direction="read")
    TableEdge.objects.create(run=lake.runs["clean"], table_version=theirs.tables["raw.bait"].versions.get(),
                             direction="write")
    # A run of acme's whose job is other's (a row no service writes): not followed either.
    foreign_job_run = Run.objects.create(workspace=world.workspace, job=theirs.jobs["copy-acme"],
                                         job_version=theirs.jobs["copy-acme"].current_version,
                                         environment=world.workspace.environments.get(name="dev"), trigger="api")
    TableEdge.objects.create(run=foreign_job_run, table_version=silver.versions.get(), direction="read")
    for url in (table_url(silver, "acme") + "?depth=10", job_url(lake.jobs["clean"]) + "?depth=10"):
        page = world.client("admin").get(url)
        text = page.content.decode()
        assert page.status_code == 200
        assert "bait" not in text and "stolen" not in text and "copy-acme" not in text, url
        assert len(nodes_of(page)) == 7
    outsider = world.client("outsider").get(table_url(theirs.tables["raw.bait"], "other") + "?depth=10")
    text = outsider.content.decode()
    assert "silver" not in text and "clean" not in text and "orders" not in text
    assert {n["href"] for n in nodes_of(outsider)} == {
        reverse("lakehouse:table_detail", args=["other", theirs.tables["raw.bait"].pk]),
        reverse("runs:job_detail", args=["other", "copy-acme"]),
        reverse("lakehouse:table_detail", args=["other", theirs.tables["gold.stolen"].pk])}


@pytest.mark.django_db
@pytest.mark.parametrize("depth", ["abc", "10**40", "0", "11", "99999999999999999999999"])
def test_a_bad_depth_is_a_400_with_a_sentence(world, lake, depth):
    page = world.client("viewer").get(table_url(lake.tables["silver.orders"]), {"depth": depth})
    assert page.status_code == 400
    text = page.content.decode()
    assert "&#x27;depth&#x27; must be a whole number of hops from 1 to 10." in text
    assert "lineage-node" not in text


@pytest.mark.django_db
def test_cycles_are_drawn_dashed_and_the_cut_is_said(world, lake, monkeypatch):
    lake.flow(["gold.revenue"], "restate", ["silver.orders"])
    page = world.client("viewer").get(table_url(lake.tables["silver.orders"]), {"depth": "10"})
    assert page.status_code == 200 and 'class="lineage-edge back"' in page.content.decode()
    assert "flows right to left" in page.content.decode()
    assert 'id="lineage-cut"' not in page.content.decode()
    monkeypatch.setattr(lineage_views, "NODE_CAP", 4)
    cut = world.client("viewer").get(table_url(lake.tables["silver.orders"]))
    assert len(nodes_of(cut)) == 4 and "The graph was cut at 4 nodes" in cut.content.decode()


@pytest.mark.django_db
def test_a_lone_table_says_so_and_long_names_are_shortened_with_a_tooltip(world, lake):
    lone = lake.table("analytics.customer_lifetime_value_by_region_and_month_v2", env="stage")
    page = world.client("viewer").get(table_url(lone)).content.decode()
    assert 'id="lineage-empty"' in page
    assert "stage · analytics.customer_lifetime_value_by_region_and_month_v2" in page  # heading and tooltip
    assert re.search(r"<text [^>]*>stage · analytic…gion_and_month_v2</text>", page)


@pytest.mark.django_db
def test_the_page_reads_a_bounded_number_of_queries(world, lake, django_assert_max_num_queries):
    client = world.client("viewer")
    url = table_url(lake.tables["silver.orders"])
    client.get(url)
    # Session, user, membership, focus; two a hop while the frontiers last; flows, tables, jobs.
    with django_assert_max_num_queries(4 + 2 * 10 + 3):
        assert client.get(url, {"depth": "10"}).status_code == 200


# ---- in Chromium ---------------------------------------------------------------------------------

def shot(page, name: str) -> None:
    """As the visitor sees it (``<name>-view.png``), then the whole graph in a window it fits."""
    folder = os.environ.get("LINEAGE_SHOTS", "")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}-view.png"))
        width, height = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        graph = page.locator("#lineage-graph").bounding_box() or {"width": 0, "height": 0}
        page.set_viewport_size({"width": int(max(width, graph["width"] + 80)),
                                "height": int(max(height, graph["height"] + 260))})
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)
        page.set_viewport_size({"width": 1400, "height": 900})


@pytest.fixture
def big_lake(world) -> Lake:
    """Made before the browser's event loop starts (the ORM refuses to run inside it)."""
    lake = Lake(world.workspace)
    rng = random.Random(3)
    for reads, job, writes in generated():
        lake.flow(reads, job, writes, env={w: rng.choice(["dev", "dev", "prod"]) for w in writes if "gold" in w})
    small = Lake(world.workspace)
    small.tables, small.jobs, small.runs = lake.tables, lake.jobs, lake.runs
    small.flow(["raw.clicks", "raw.campaigns"], "sessionize", ["silver.sessions", "silver.visitors"],
               env={"silver.visitors": "prod"})
    return lake


@pytest.fixture
def viewer_browser(world, live_server, client, big_lake) -> Iterator:
    from tests.chromium import chromium

    client.force_login(world.users["viewer"])
    cookie = client.cookies["sessionid"].value
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
        yield context


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_200_node_lineage_in_chromium(world, live_server, big_lake, viewer_browser):
    from playwright.sync_api import expect

    lake = big_lake
    reach = set(lake.tables) - {"raw.clicks", "raw.campaigns", "silver.sessions", "silver.visitors"}
    expected = {reverse("lakehouse:table_detail", args=["acme", lake.tables[n].pk]) for n in reach}
    expected |= {reverse("runs:job_detail", args=["acme", slug]) for slug in lake.jobs
                 if slug != "sessionize"}
    assert 180 <= len(expected) <= 230
    problems: list[str] = []
    page = viewer_browser.new_page()
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico") else None)

    silver = lake.tables["silver.orders"]
    page.goto(f"{live_server.url}{table_url(silver)}?depth=4")
    nodes = page.locator("#lineage-graph a.lineage-node")
    expect(nodes).to_have_count(len(expected))
    found = page.eval_on_selector_all("#lineage-graph > g > *", """els => els.map(e => [e.tagName.toLowerCase(),
        e.getAttribute('class'), e.getAttribute('href')])""")
    assert {href for tag, cls, href in found if "lineage-node" in (cls or "")} == expected
    assert all(tag == "a" for tag, cls, _ in found if "lineage-node" in (cls or ""))
    # Labels fit their boxes and no two boxes overlap, as the browser draws them.
    boxes = page.eval_on_selector_all("#lineage-graph a.lineage-node", """els => els.map(a => {
        const r = a.querySelector('rect').getBBox(), t = a.querySelector('text');
        return [r.x, r.y, r.width, r.height, t.getComputedTextLength()]; })""")
    assert all(text_w + 2 * 6 <= w for _, _, w, _, text_w in boxes), [b for b in boxes if b[4] + 12 > b[2]][:3]
    for (x1, y1, w1, h1, _), (x2, y2, w2, h2, _) in itertools.combinations(boxes, 2):
        assert not (x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1)
    expect(page.locator("#lineage-summary")).to_contain_text("within 4 hops")
    expect(page.locator("#lineage-graph path.lineage-edge.back")).to_have_count(0)
    expect(page.locator("#lineage-graph path.lineage-edge.both")).to_have_count(1)
    # The frame opens centred on the focus, not on the graph's top left corner.
    frame = page.locator(".lineage-scroll").bounding_box()
    focus = page.locator("#lineage-graph a.lineage-node.focus rect").bounding_box()
    assert frame and focus and frame["height"] < 900
    assert frame["y"] < focus["y"] and focus["y"] + focus["height"] < frame["y"] + frame["height"], (frame, focus)
    assert frame["x"] < focus["x"] and focus["x"] + focus["width"] < frame["x"] + frame["width"], (frame, focus)
    shot(page, "lineage-200")

    # A node is a link to its page: a table, then (back on the graph) a job.
    target = lake.tables["gold.mart_05_1"]
    page.locator(f'#lineage-graph a.lineage-node[data-kind="table"][data-id="{target.pk}"]').click()
    page.wait_for_url(re.compile(rf"/w/acme/tables/{target.pk}/$"))
    expect(page.locator("h1")).to_contain_text("gold.mart_05_1")
    page.locator("#lineage-link").click()
    page.wait_for_url(re.compile(rf"/w/acme/lineage/table/{target.pk}/$"))
    page.go_back()
    page.go_back()
    page.locator('#lineage-graph a.lineage-node[data-kind="job"]', has_text="build-silver-1").click()
    page.wait_for_url(re.compile(r"/w/acme/jobs/build-silver-1/$"))
    page.locator("#lineage-link").click()
    page.wait_for_url(re.compile(r"/w/acme/lineage/job/build-silver-1/$"))
    expect(page.locator("#lineage-graph a.lineage-node.focus text")).to_have_text("build-silver-1")

    # A small graph around a job, for the eye.
    page.goto(f"{live_server.url}{job_url(lake.jobs['sessionize'])}")
    expect(nodes).to_have_count(5)
    expect(page.locator("#lineage-graph a.lineage-node.focus text")).to_have_text("sessionize")
    shot(page, "lineage-small")
    assert not problems, problems
