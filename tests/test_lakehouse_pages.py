"""The table pages and the table API: personas, another workspace, preview, lineage, time travel."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pytest
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection
from lakehouse.models import Table, TableEdge, TableVersion

pytestmark = pytest.mark.django_db
ROLES = ("admin", "operator", "analyst", "viewer")
SCHEMA = [{"name": "id", "type": "long", "nullable": False}, {"name": "label", "type": "string", "nullable": True}]


def a_run(world, workspace=None):
    from controlroom.access import Access
    from controlroom.models import Role
    from runs.services.jobs import job_create
    from runs.services.runs import run_create

    access = (world.access("operator") if workspace is None
              else Access(workspace=workspace, role=Role.ADMIN, user=world.users["outsider"]))
    spec = "name: j\nphases:\n  - name: p\n    kind: sql\n    config: {sql: select 1}\n"
    from runs.models import Job

    job = Job.objects.filter(workspace=access.workspace, slug="j").first() or job_create(access=access,
                                                                                          spec_text=spec)
    return run_create(access=access, job=job)


def register(workspace, name: str, *, fmt: str = "iceberg", namespace: str = "shop", versions=(), env: str = "dev",
             location: str = "") -> Table:
    """A table row with versions given as (version, run, fingerprint, rows, age)."""
    table = Table.objects.create(workspace=workspace, environment=workspace.environments.get(name=env),
                                 namespace=namespace, name=name, format=fmt, location=location)
    for version, run, fingerprint, rows, age in versions:
        v = TableVersion.objects.create(table=table, version=version, operation="append", schema=SCHEMA,
                                        row_count=rows, bytes=1000, fingerprint=fingerprint, run=run,
                                        attempt=1 if run else 0, git_sha="b" * 40 if run else "",
                                        committed_at=timezone.now() - age)
        if run is not None:
            TableEdge.objects.create(run=run, phase=run.phases.first(), table_version=v, direction="write")
    return table


@pytest.fixture
def tables(world):
    run = a_run(world)
    orders = register(world.workspace, "orders", versions=[(11, run, "f" * 64, 60, dt.timedelta(hours=3))])
    delta = register(world.workspace, "events", fmt="delta", namespace="raw", env="stage",
                     versions=[(0, None, "", 5, dt.timedelta(days=2))])
    secret = register(world.other, "secrets", versions=[(1, a_run(world, world.other), "e" * 64, 1,
                                                         dt.timedelta(hours=1))])
    return {"orders": orders, "events": delta, "secret": secret, "run": run}


def test_every_member_sees_the_workspaces_tables_and_outsiders_get_404(world, tables):
    pages = [reverse("lakehouse:table_list", args=["acme"]),
             reverse("lakehouse:table_detail", args=["acme", tables["events"].pk])]
    for persona in ROLES:
        for url in pages:
            response = world.client(persona).get(url)
            assert response.status_code == 200, (persona, url)
            assert "raw.events" in response.content.decode()
    for url in pages:
        assert world.client("outsider").get(url).status_code == 404
    listing = world.client("viewer").get(pages[0]).content.decode()
    assert "shop.orders" in listing and "shop.secrets" not in listing
    # Another workspace's table, by id under acme and under its own workspace: 404 both ways.
    foreign = tables["secret"].pk
    assert world.client("admin").get(reverse("lakehouse:table_detail", args=["acme", foreign])).status_code == 404
    assert world.client("admin").get(reverse("lakehouse:table_detail", args=["other", foreign])).status_code == 404
    assert world.client("outsider").get(reverse("lakehouse:table_detail",
                                                args=["other", foreign])).status_code == 200


def test_anonymous_visitors_are_sent_to_sign_in(tables):
    from django.test import Client

    response = Client().get(reverse("lakehouse:table_list", args=["acme"]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_list_filters_shows_last_commit_and_freshness_in_bounded_queries(world, tables,
                                                                         django_assert_max_num_queries):
    for i in range(30):
        register(world.workspace, f"t{i}", versions=[(1, tables["run"], "", 1, dt.timedelta(minutes=i))])
    client = world.client("viewer")
    url = reverse("lakehouse:table_list", args=["acme"])
    client.get(url)  # warm the session
    with django_assert_max_num_queries(8):
        page = client.get(url).content.decode()
    assert f"run #{tables['run'].pk}" in page and "3\xa0hours ago" in page and "2\xa0days ago" in page
    assert page.count('class="table-row"') == 32
    found = client.get(url, {"q": "event"}).content.decode()
    assert "raw.events" in found and "shop.orders" not in found
    deltas = client.get(url, {"format": "delta"}).content.decode()
    assert "raw.events" in deltas and "shop.orders" not in deltas
    stage = client.get(url, {"environment": "stage"}).content.decode()
    assert "raw.events" in stage and "shop.orders" not in stage
    assert "No tables match." in client.get(url, {"q": "nothing-like-this"}).content.decode()


def test_table_page_shows_schema_versions_fingerprints_lineage_and_sql_link(world, tables):
    orders, run = tables["orders"], tables["run"]
    downstream_run = a_run(world)
    gold = register(world.workspace, "gold", versions=[(5, downstream_run, "a" * 64, 2, dt.timedelta(hours=1))])
    TableEdge.objects.create(run=downstream_run, phase=downstream_run.phases.first(),
                             table_version=orders.versions.get(), direction="read")
    raw = register(world.workspace, "raw_orders", versions=[(3, None, "", 9, dt.timedelta(days=1))])
    TableEdge.objects.create(run=run, phase=run.phases.first(), table_version=raw.versions.get(), direction="read")
    trino = Connection.objects.create(workspace=world.workspace, name="trino", kind=Connection.Kind.TRINO,
                                      config={"host": "127.0.0.1", "port": 8080, "catalog": "lakehouse"})
    url = reverse("lakehouse:table_detail", args=["acme", orders.pk])
    response = world.client("analyst").get(url)
    page = response.content.decode()
    assert "label" in page and "<code>string</code>" in page  # schema
    assert f'href="/w/acme/runs/{run.pk}/"' in page and "f" * 16 in page  # version made by the run
    lineage = page[page.index('id="lineage"'):]
    assert "shop.raw_orders" in lineage and "shop.gold" in lineage
    assert lineage.index("shop.raw_orders") < lineage.index("shop.gold")  # in, then out
    link = response.context["sql_link"]
    query = parse_qs(urlsplit(link).query)
    assert urlsplit(link).path == "/w/acme/sql/"
    assert query["sql"] == ["SELECT *\nFROM lakehouse.shop.orders\nFOR VERSION AS OF 11\nLIMIT 100"]
    assert query["connection"] == [str(trino.pk)] and query["environment"] == ["dev"]
    editor = world.client("analyst").get(link).content.decode()
    assert "FOR VERSION AS OF 11" in editor
    # A viewer cannot open the SQL editor, so the page does not offer it.
    assert "open-in-sql" not in world.client("viewer").get(url).content.decode()
    assert gold.pk  # downstream table linked from here
    # A Delta table opens in Trino only once a Trino connection names its lake's Delta catalog.
    daily = register(world.workspace, "daily", fmt="delta", namespace="gold", location="s3://lake/delta/gold/daily",
                     versions=[(4, run, "e" * 64, 30, dt.timedelta(hours=1))])
    local = register(world.workspace, "local", fmt="delta", namespace="gold",  # the embedded lake: DuckDB's
                     location="file:///data/lakehouse/acme/dev/delta/gold/local",
                     versions=[(0, run, "", 1, dt.timedelta())])
    delta_url = reverse("lakehouse:table_detail", args=["acme", daily.pk])
    link = parse_qs(urlsplit(world.client("analyst").get(delta_url).context["sql_link"]).query)
    assert "sql" not in link and link["table_version"] == [str(daily.versions.get().pk)]  # DuckDB's way
    trino.config["delta_catalogs"] = {daily.catalog_name: "delta"}
    trino.config["iceberg_catalogs"] = {orders.catalog_name: "iceberg"}  # the lake's Trino catalog by name
    trino.save()
    iceberg_link = parse_qs(urlsplit(world.client("analyst").get(url).context["sql_link"]).query)
    assert iceberg_link["sql"] == ["SELECT *\nFROM iceberg.shop.orders\nFOR VERSION AS OF 11\nLIMIT 100"]
    link = parse_qs(urlsplit(world.client("analyst").get(delta_url).context["sql_link"]).query)
    assert link["sql"] == ["SELECT *\nFROM delta.gold.daily\nFOR VERSION AS OF 4\nLIMIT 100"]
    assert link["connection"] == [str(trino.pk)]
    local_url = reverse("lakehouse:table_detail", args=["acme", local.pk])
    link = parse_qs(urlsplit(world.client("analyst").get(local_url).context["sql_link"]).query)
    assert "sql" not in link and link["table_version"] == [str(local.versions.get().pk)]


@pytest.mark.slow
def test_preview_reads_the_first_rows_of_a_version_through_the_catalog(world):
    from lakehouse.catalogs import catalog_for

    env = world.workspace.environments.get(name="dev")
    catalog = catalog_for(world.workspace, env).iceberg()
    catalog.create_namespace_if_not_exists("shop")
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("label", pa.large_string())])
    iceberg = catalog.create_table("shop.items", schema=schema)
    iceberg.append(pa.table({"id": list(range(60)), "label": [f"first {i}" for i in range(60)]}, schema=schema))
    first = iceberg.current_snapshot().snapshot_id
    iceberg.append(pa.table({"id": [1000], "label": ["<b>second</b>"]}, schema=schema))
    second = iceberg.current_snapshot().snapshot_id
    table = register(world.workspace, "items", location=iceberg.location(),
                     versions=[(first, None, "", 60, dt.timedelta(hours=2)),
                               (second, None, "", 61, dt.timedelta(hours=1))])
    page_url = reverse("lakehouse:table_detail", args=["acme", table.pk])
    page = world.client("viewer").get(page_url).content.decode()
    url = reverse("lakehouse:table_preview", args=["acme", table.pk])
    assert f'hx-get="{url}?version={second}"' in page  # the page loads its preview as a fragment
    fragment = world.client("viewer").get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<th>id</th><th>label</th>" in fragment and fragment.count("<tr>") == 51  # header + 50 rows
    assert "<td>1000</td><td>&lt;b&gt;second&lt;/b&gt;</td>" in fragment  # escaped, never markup
    assert fragment.lstrip().startswith('<div id="preview-block">') and "<html" not in fragment
    inline = world.client("viewer").get(page_url, {"preview": "1"}).content.decode()  # without JavaScript
    assert 'id="preview"' in inline and inline.count("<tr>") > 50
    old = world.client("viewer").get(url, {"version": str(first)}).content.decode()
    assert f"Preview of version {first}" in old and "second" not in old and old.count("<tr>") == 51
    old_page = world.client("viewer").get(page_url, {"version": str(first), "preview": "1"})
    assert old_page.context["shown"].version == first and len(old_page.context["preview"]["rows"]) == 50
    assert world.client("outsider").get(url).status_code == 404
    # An unreadable table says so in one sentence instead of failing the page.
    broken = register(world.workspace, "gone", versions=[(7, None, "", 1, dt.timedelta(hours=1))])
    response = world.client("viewer").get(reverse("lakehouse:table_preview", args=["acme", broken.pk]))
    assert response.status_code == 200 and 'id="preview-error"' in response.content.decode()
    foreign = register(world.other, "items", location=iceberg.location(),
                       versions=[(first, None, "", 60, dt.timedelta(hours=2))])
    assert world.client("admin").get(reverse("lakehouse:table_preview", args=["acme", foreign.pk])).status_code \
        == 404


def test_api_lists_tables_and_one_table_with_versions_and_fingerprints(world, tables):
    client = world.client("viewer")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {world.token('viewer')}"}
    listing = client.get("/api/v1/workspaces/acme/tables", **auth)
    assert listing.status_code == 200
    names = [(t["namespace"], t["name"], t["format"]) for t in listing.json()["tables"]]
    assert names == [("shop", "orders", "iceberg"), ("raw", "events", "delta")]
    orders = listing.json()["tables"][0]
    assert orders["last_version"] == 11 and orders["last_run_id"] == tables["run"].pk and orders["versions"] == 1
    assert [t["name"] for t in client.get("/api/v1/workspaces/acme/tables?format=delta", **auth).json()["tables"]] \
        == ["events"]
    detail = client.get(f"/api/v1/workspaces/acme/tables/{orders['id']}", **auth).json()
    assert detail["name"] == "orders" and detail["environment"] == "dev"
    assert detail["versions"] == [{
        "id": detail["versions"][0]["id"], "version": 11, "operation": "append",
        "committed_at": detail["versions"][0]["committed_at"], "row_count": 60, "bytes": 1000,
        "fingerprint": "f" * 64, "fingerprint_pending": False, "schema": SCHEMA, "run_id": tables["run"].pk,
        "phase": None, "attempt": 1,
        "git_sha": "b" * 40}]
    # Another workspace's table and token: 404; no token: 401; bad ids: 404.
    assert client.get(f"/api/v1/workspaces/acme/tables/{tables['secret'].pk}", **auth).status_code == 404
    assert client.get("/api/v1/workspaces/other/tables", **auth).status_code == 404
    assert client.get("/api/v1/workspaces/acme/tables").status_code == 401
    assert client.get("/api/v1/workspaces/acme/tables/abc", **auth).status_code == 404
    assert client.get("/api/v1/workspaces/acme/tables?after=-1", **auth).status_code == 400


def test_api_pages_long_version_histories(world, tables):
    orders = tables["orders"]
    for number in range(12, 12 + 150):
        TableVersion.objects.create(table=orders, version=number, operation="append", row_count=number,
                                    committed_at=timezone.now(), fingerprint=f"{number:064d}")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {world.token('viewer')}"}
    client = world.client("viewer")
    first = client.get(f"/api/v1/workspaces/acme/tables/{orders.pk}", **auth).json()
    assert len(first["versions"]) == 100 and first["versions"][0]["version"] == 161
    rest = client.get(f"/api/v1/workspaces/acme/tables/{orders.pk}?versions_before={first['next_versions_before']}",
                      **auth).json()
    assert len(rest["versions"]) == 51 and rest["next_versions_before"] is None
    assert rest["versions"][-1]["version"] == 11


REBUILD_SPEC = """\
name: tables
phases:
  - name: stable
    kind: iceberg
    config:
      table: shop.stable
      mode: overwrite
      sql: "SELECT i AS id, 'row ' || i AS label FROM range(20) t(i)"
  - name: noisy
    kind: iceberg
    config:
      table: shop.noisy
      mode: overwrite
      sql: "SELECT i AS id, random() AS x FROM range(5) t(i)"
  - name: merged
    kind: iceberg
    config:
      table: shop.merged
      mode: upsert
      keys: [id]
      sql: "SELECT i AS id, 'row ' || i AS label FROM range(3) t(i)"
"""


@pytest.mark.slow
def test_rebuild_compares_the_fingerprints_of_every_output_table(world, eager_celery,
                                                                django_capture_on_commit_callbacks):
    from runs.services.jobs import job_create
    from runs.services.reruns import rebuild_comparison, run_rerun
    from runs.services.runs import run_create

    job = job_create(access=world.access("operator"), spec_text=REBUILD_SPEC)
    with django_capture_on_commit_callbacks(execute=True):
        original = run_create(access=world.access("operator"), job=job)
    original.refresh_from_db()
    assert original.status == "succeeded", original.error
    with django_capture_on_commit_callbacks(execute=True):
        rebuild = run_rerun(access=world.access("operator"), run=original, mode="rebuild")
    rebuild.refresh_from_db()
    assert rebuild.status == "succeeded", rebuild.error
    tables = {d.name: d for d in rebuild_comparison(rebuild) if d.kind == "table"}
    assert set(tables) == {"lakehouse.shop.stable", "lakehouse.shop.noisy", "lakehouse.shop.merged"}
    stable, noisy = tables["lakehouse.shop.stable"], tables["lakehouse.shop.noisy"]
    assert stable.same and len(stable.original) == 64
    assert not noisy.same and noisy.original and noisy.rebuilt
    # The rebuild's upsert found every row in place: no new version, the table unchanged (not "different").
    merged = tables["lakehouse.shop.merged"]
    assert merged.unchanged and merged.rebuilt is None and merged.original and not merged.same
    # Two different versions of one table (the rebuild overwrote it), one content.
    versions = TableVersion.objects.filter(table__name="stable")
    assert versions.count() == 2 and len(set(versions.values_list("fingerprint", flat=True))) == 1
    page = world.client("viewer").get(f"/w/acme/runs/{rebuild.pk}/").content.decode()
    rows = page[page.index('id="rebuild-comparison"'):page.index("</table>", page.index('id="rebuild-comparison"'))]
    assert "table lakehouse.shop.stable" in rows and "equal" in rows
    assert "table lakehouse.shop.noisy" in rows and "different" in rows
    assert rows.count("different") == 1 and ">unchanged<" in rows
    assert rebuild_comparison(original) is None  # not a rebuild
    # While a side's fingerprint is still being computed, the comparison says pending, not different.
    TableVersion.objects.filter(run=rebuild, table__name="noisy").update(fingerprint="")
    TableVersion.objects.filter(run=original, table__name="stable").update(fingerprint="")
    tables = {d.name: d for d in rebuild_comparison(rebuild) if d.kind == "table" and not d.unchanged}
    assert len(tables) == 2 and all(d.pending and not d.same for d in tables.values())
    page = world.client("viewer").get(f"/w/acme/runs/{rebuild.pk}/").content.decode()
    rows = page[page.index('id="rebuild-comparison"'):page.index("</table>", page.index('id="rebuild-comparison"'))]
    assert rows.count(">pending<") == 2 and "different" not in rows and "equal" not in rows


def test_a_version_whose_fingerprint_is_being_computed_shows_pending(world, tables):
    run = a_run(world)
    pending = register(world.workspace, "fresh", versions=[(7, run, "", 4, dt.timedelta(seconds=5))])
    page = world.client("viewer").get(reverse("lakehouse:table_detail", args=["acme", pending.pk])).content.decode()
    versions = page[page.index('id="versions"'):page.index("</table>", page.index('id="versions"'))]
    assert ">pending<" in versions
    auth = {"HTTP_AUTHORIZATION": f"Bearer {world.token('viewer')}"}
    detail = world.client("viewer").get(f"/api/v1/workspaces/acme/tables/{pending.pk}", **auth).json()
    assert detail["versions"][0]["fingerprint"] is None and detail["versions"][0]["fingerprint_pending"] is True
    # A maintenance version has no fingerprint and is not pending.
    TableVersion.objects.filter(table=pending).update(operation="optimize")
    detail = world.client("viewer").get(f"/api/v1/workspaces/acme/tables/{pending.pk}", **auth).json()
    assert detail["versions"][0]["fingerprint_pending"] is False
