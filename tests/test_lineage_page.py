"""The lineage page (its walk and layout are tested in test_lineage_layout.py): the pages for each
persona, another workspace's objects and edge rows, bad depths, and the drawing of a ~200-node
graph in Chromium (LINEAGE_SHOTS=<folder> keeps screenshots)."""

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
from lakehouse.models import Table, TableEdge, TableVersion
from runs.models import Job, JobVersion, Run, RunStatus
from tests.test_lineage_layout import generated

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
