"""Saved queries: versions and diffs, who may edit and see, parameter specs, charts, the list."""

import html
import json
import re

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from connections.models import Connection
from controlroom.models import AuditEvent
from controlroom.services import ServiceError
from sqlwarehouse.models import QueryExecution, SavedQuery, SavedQueryVersion
from sqlwarehouse.services import (
    format_parameter_spec,
    parse_parameter_spec,
    saved_queries_visible,
    saved_query_chart_save,
    saved_query_save,
)

pytestmark = pytest.mark.django_db
LIST = "/w/acme/sql/saved/"


def detail_url(saved: SavedQuery) -> str:
    return f"/w/acme/sql/saved/{saved.pk}/"


def save(world, persona: str = "analyst", *, saved_query: SavedQuery | None = None, **fields) -> SavedQuery:
    fields.setdefault("title", "Revenue by region")
    fields.setdefault("sql", "SELECT region, sum(amount) AS revenue\nFROM sales\nGROUP BY region")
    fields.setdefault("connection", Connection.objects.get(workspace=world.workspace))
    return saved_query_save(access=world.access(persona), saved_query=saved_query, **fields)


def finished_execution(world, saved: SavedQuery, *, status: str = "succeeded", rows=None, row_count=None,
                       truncated: bool = False) -> QueryExecution:
    rows = [["EU", 10], ["US", 7]] if rows is None else rows
    execution = QueryExecution.objects.create(
        workspace=world.workspace, user=saved.owner, saved_query=saved, sql=saved.sql, engine="duckdb",
        status=status, columns=[{"name": "region", "type": "VARCHAR"}, {"name": "revenue", "type": "BIGINT"}],
        rows=rows, row_count=len(rows) if row_count is None else row_count, truncated=truncated,
        started_at=timezone.now(), finished_at=timezone.now(), error="boom" if status == "failed" else "")
    saved.last_execution = execution
    saved.save(update_fields=["last_execution"])
    return execution


def chart_post(world, persona: str, saved: SavedQuery, spec):
    body = spec if isinstance(spec, str) else json.dumps(spec)
    return world.client(persona).post(f"{detail_url(saved)}chart/", {"spec": body})


# --- versions --------------------------------------------------------------------------------

def test_each_save_is_a_version_and_the_version_page_shows_the_changed_line(world):
    saved = save(world)
    assert saved.version == 1 and saved.owner == world.users["analyst"]
    save(world, saved_query=saved, sql="SELECT region, sum(amount) AS revenue\nFROM sales_2024\nGROUP BY region")
    saved.refresh_from_db()
    assert saved.version == 2 and "sales_2024" in saved.sql
    versions = list(SavedQueryVersion.objects.filter(saved_query=saved).order_by("number"))
    assert [(v.number, v.created_by.username) for v in versions] == [(1, "analyst"), (2, "analyst")]
    assert "FROM sales\n" in versions[0].sql and "sales_2024" in versions[1].sql  # v1 was not rewritten

    client = world.client("viewer")
    page = client.get(f"{detail_url(saved)}versions/2/").content.decode()
    assert '<span class="del">-FROM sales</span>' in page and '<span class="add">+FROM sales_2024</span>' in page
    assert '<span class="del">-GROUP BY region' not in page  # unchanged lines are context only
    first = client.get(f"{detail_url(saved)}versions/1/").content.decode()
    assert "First version" in first and 'id="diff"' not in first
    assert client.get(f"{detail_url(saved)}versions/3/").status_code == 404
    detail = client.get(detail_url(saved)).content.decode()
    assert f"{detail_url(saved)}versions/1/" in detail and f"{detail_url(saved)}versions/2/" in detail

    events = list(AuditEvent.objects.filter(target_id=str(saved.pk), action__startswith="saved_query.")
                  .order_by("id"))
    assert [(e.action, e.after["version"]) for e in events] == [("saved_query.create", 1), ("saved_query.update", 2)]
    assert events[1].after["title"] == "Revenue by region" and "sales_2024" in events[1].after["sql"]
    assert events[1].before["version"] == 1 and events[1].actor_label == "analyst"


def test_a_save_that_changes_nothing_writes_no_version(world):
    saved = save(world, tags="finance, daily", description="Weekly numbers")
    again = save(world, saved_query=saved, tags=["finance", "daily"], description="Weekly numbers  ")
    assert again.version == 1 and SavedQueryVersion.objects.filter(saved_query=saved).count() == 1
    assert AuditEvent.objects.filter(action="saved_query.update").count() == 0
    changed = save(world, saved_query=saved, tags=["finance"], description="Weekly numbers")
    assert changed.version == 2 and changed.tags == ["finance"]
    assert SavedQueryVersion.objects.filter(saved_query=saved).count() == 2


def test_version_page_lists_title_and_parameter_changes(world):
    saved = save(world, sql="SELECT * FROM t WHERE d >= :since", parameters=[{"name": "since", "type": "date"}])
    save(world, saved_query=saved, title="Since a day", sql=saved.sql,
         parameters=[{"name": "since", "type": "date", "default": "2024-01-01"}])
    page = world.client("viewer").get(f"{detail_url(saved)}versions/2/").content.decode()
    assert "Since a day" in page and "since:date=2024-01-01" in page and "No change in the SQL." in page


# --- who may edit and see --------------------------------------------------------------------

def test_only_the_owner_or_an_admin_changes_a_query(world):
    saved = save(world)
    with pytest.raises(PermissionDenied):
        save(world, "operator", saved_query=saved, title="Hijacked")
    with pytest.raises(PermissionDenied):
        save(world, "viewer")
    edited = save(world, "admin", saved_query=saved, title="Revenue (checked)")
    assert edited.version == 2 and edited.owner == world.users["analyst"]
    assert SavedQueryVersion.objects.get(saved_query=saved, number=2).created_by == world.users["admin"]
    with pytest.raises(ServiceError, match="Only the query's owner may make it private"):
        save(world, "admin", saved_query=edited, title="Revenue (checked)", visibility="private")
    saved.refresh_from_db()
    assert saved.title == "Revenue (checked)" and saved.visibility == "workspace" and saved.version == 2


def test_a_private_query_is_invisible_to_everyone_else_even_admins(world):
    private = save(world, title="My scratch", visibility="private")
    shared = save(world, "operator", title="Team numbers")
    admin = world.access("admin")
    assert list(saved_queries_visible(admin)) == [shared]
    assert set(saved_queries_visible(world.access("analyst"))) == {private, shared}
    for persona in ("admin", "operator", "viewer"):
        client = world.client(persona)
        assert "My scratch" not in client.get(LIST).content.decode()
        assert client.get(detail_url(private)).status_code == 404, persona
        assert client.get(f"{detail_url(private)}versions/1/").status_code == 404, persona
    assert chart_post(world, "admin", private, {"type": "bar", "x": "a", "y": ["b"]}).status_code == 404
    owner = world.client("analyst")
    assert "My scratch" in owner.get(LIST).content.decode()
    assert owner.get(detail_url(private)).status_code == 200
    assert world.client("outsider").get(detail_url(shared)).status_code == 404
    assert world.client("outsider").get("/w/other/sql/saved/").content.decode().count("Team numbers") == 0


def test_viewer_sees_list_detail_and_last_result_but_cannot_save(world):
    saved = save(world, tags="finance", description="Per region, all time.",
                 sql="SELECT region, revenue FROM t WHERE year = :year",
                 parameters=[{"name": "year", "type": "integer", "default": "2024"}])
    execution = finished_execution(world, saved, rows=[["EU", 10], ["US", None]], row_count=5000, truncated=True)
    client = world.client("viewer")
    listing = client.get(LIST).content.decode()
    assert "Revenue by region" in listing and 'class="badge succeeded"' in listing and "5000 rows" in listing
    assert "Open in editor" not in listing  # viewers cannot run
    page = client.get(detail_url(saved)).content.decode()
    assert "Per region, all time." in page and "<code>:year</code>" in page and "<code>2024</code>" in page
    assert "<td>EU</td><td>10</td>" in page and "<td>US</td><td>NULL</td>" in page
    assert "cut at 5000 rows" in page and "Showing the first 2 of 5000 rows" in page
    assert f'href="/w/acme/sql/executions/{execution.pk}/"' in page
    assert f'data-rows-url="/w/acme/sql/executions/{execution.pk}/rows.json"' in page
    assert 'data-save-url=""' in page  # the chart is shown, but a viewer cannot keep it
    assert "Open in editor" not in page
    with pytest.raises(PermissionDenied):
        save(world, "viewer", saved_query=saved, title="Viewer edit")
    assert chart_post(world, "viewer", saved, {"type": "bar", "x": "region", "y": ["revenue"]}).status_code == 403
    saved.refresh_from_db()
    assert saved.version == 1 and saved.chart == {}


def test_owner_gets_the_chart_save_url_and_a_failed_run_has_no_chart(world):
    saved = save(world)
    finished_execution(world, saved)
    page = world.client("analyst").get(detail_url(saved)).content.decode()
    assert f'data-save-url="{detail_url(saved)}chart/"' in page and "Open in editor" in page
    assert 'data-save-url=""' in world.client("operator").get(detail_url(saved)).content.decode()
    finished_execution(world, saved, status="failed", rows=[])
    page = world.client("analyst").get(detail_url(saved)).content.decode()
    assert 'id="chart"' not in page and "boom" in page


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "message"), [
    ({"title": "  "}, "Give the query a title."),
    ({"title": "x" * 201}, "the limit is 200"),
    ({"sql": " \n "}, "A saved query needs SQL."),
    ({"sql": "SELECT 1\x00"}, "NUL character"),
    ({"visibility": "public"}, "Visibility must be one of"),
    ({"tags": [f"t{i}" for i in range(21)]}, "at most 20 tags"),
    ({"tags": ["x" * 41]}, "longer than 40 characters"),
    ({"sql": "SELECT :1x", "parameters": [{"name": "1x"}]}, "Parameter name '1x' is not valid"),
    ({"sql": "SELECT :a", "parameters": [{"name": "a"}, {"name": "a", "type": "integer"}]}, "declared twice"),
    ({"sql": "SELECT :a", "parameters": [{"name": "a", "type": "money"}]}, "unknown type 'money'"),
    ({"sql": "SELECT :d", "parameters": [{"name": "d", "type": "date", "default": "yesterday"}]},
     "Parameter :d must be a date"),
    ({"sql": "SELECT 1", "parameters": [{"name": "top", "type": "integer"}]}, "the SQL does not use :top"),
])
def test_bad_fields_are_refused_with_a_message_naming_the_field(world, fields, message):
    with pytest.raises(ServiceError, match=message):
        save(world, **fields)
    assert not SavedQuery.objects.exists() and not SavedQueryVersion.objects.exists()


def test_connection_of_another_workspace_is_refused(world):
    with pytest.raises(ServiceError, match=r"Choose a connection of this workspace\."):
        save(world, connection=Connection.objects.get(workspace=world.other))


def test_tags_are_trimmed_and_deduplicated_and_parameters_normalised(world):
    saved = save(world, tags=" finance ,Finance, daily,, ", sql="SELECT :top, :on",
                 parameters=[{"name": "top", "type": "integer", "default": " 010 "},
                             {"name": "on", "type": "boolean", "default": "YES"}])
    assert saved.tags == ["finance", "daily"]
    assert saved.parameters == [{"name": "top", "type": "integer", "default": "10"},
                                {"name": "on", "type": "boolean", "default": "true"}]
    assert SavedQueryVersion.objects.get(saved_query=saved).parameters == saved.parameters


# --- the one-line parameter spec -------------------------------------------------------------

def test_parameter_spec_parses_and_round_trips():
    parsed = parse_parameter_spec("since:date=2024-01-01, top:integer=10, region:text, flag:boolean=on, name")
    assert parsed == [
        {"name": "since", "type": "date", "default": "2024-01-01"},
        {"name": "top", "type": "integer", "default": "10"},
        {"name": "region", "type": "text", "default": None},
        {"name": "flag", "type": "boolean", "default": "true"},
        {"name": "name", "type": "text", "default": None},
    ]
    assert format_parameter_spec(parsed) == \
        "since:date=2024-01-01, top:integer=10, region:text, flag:boolean=true, name:text"
    assert parse_parameter_spec(format_parameter_spec(parsed)) == parsed
    tricky = [{"name": "where", "type": "text", "default": 'EU, "west" \\ ok'},
              {"name": "pad", "type": "text", "default": " x "}, {"name": "eq", "type": "text", "default": "a=b"}]
    assert parse_parameter_spec(format_parameter_spec(tricky)) == tricky
    assert parse_parameter_spec("") == [] and parse_parameter_spec(" , ") == []
    assert parse_parameter_spec(":since:DATE") == [{"name": "since", "type": "date", "default": None}]


@pytest.mark.parametrize(("text", "message"), [
    ("top:int=10", r"'top:int=10': the type must be one of text, integer"),
    ("9lives:integer", r"'9lives:integer': '9lives' is not a parameter name"),
    ("top:integer=ten", r"Parameter :top must be a integer; 'ten' is not"),
    ("a, a:integer", "Parameter :a is declared twice"),
    ('region="EU', "unclosed quote"),
    ('region="EU"x', "quoted default is not closed properly"),
    ("since:", r"'since:': the type must be one of"),
])
def test_parameter_spec_errors_name_the_bad_part(text, message):
    with pytest.raises(ServiceError, match=message):
        parse_parameter_spec(text)


# --- charts ----------------------------------------------------------------------------------

def test_chart_save_valid_invalid_and_forbidden(world):
    saved = save(world)
    spec = {"type": "line", "x": "region", "y": ["revenue", "revenue"], "extra": 1}
    response = chart_post(world, "analyst", saved, spec)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "chart": {"type": "line", "x": "region", "y": ["revenue"]}}
    saved.refresh_from_db()
    assert saved.chart == {"type": "line", "x": "region", "y": ["revenue"]} and saved.version == 1
    event = AuditEvent.objects.get(action="saved_query.chart")
    assert event.target_id == str(saved.pk) and event.after["chart"] == saved.chart
    assert event.actor_label == "analyst"

    for bad, message in [({"type": "pie", "x": "a", "y": ["b"]}, "Chart type must be one of"),
                         ({"type": "bar", "x": "", "y": ["b"]}, "Chart x must name one column"),
                         ({"type": "bar", "x": "a", "y": []}, "non-empty list"),
                         ({"type": "bar", "x": "a", "y": [f"c{i}" for i in range(11)]}, "at most 10"),
                         ({"type": "bar", "x": "a", "y": [1]}, "list of column names"),
                         ("{not json", "not valid JSON"), ([1, 2], "must be an object")]:
        response = chart_post(world, "analyst", saved, bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "invalid" and message in response.json()["error"]["message"]

    forbidden = chart_post(world, "operator", saved, {"type": "bar", "x": "region", "y": ["revenue"]})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert world.client("analyst").post("/w/acme/sql/saved/999999/chart/", {"spec": "{}"}).status_code == 404
    assert world.client("analyst").get(f"{detail_url(saved)}chart/").status_code == 405
    admin = chart_post(world, "admin", saved, {"type": "scatter", "x": "region", "y": ["revenue"]})
    assert admin.status_code == 200
    saved.refresh_from_db()
    assert saved.chart["type"] == "scatter"
    assert AuditEvent.objects.filter(action="saved_query.chart").count() == 2
    page = world.client("viewer").get(detail_url(saved)).content.decode()
    assert "scatter of revenue by region" in page


def test_chart_service_refuses_non_owner_and_writes_nothing(world):
    saved = save(world)
    with pytest.raises(PermissionDenied):
        saved_query_chart_save(access=world.access("operator"), saved_query=saved,
                               spec={"type": "bar", "x": "a", "y": ["b"]})
    assert not AuditEvent.objects.filter(action="saved_query.chart").exists()


def test_chart_spec_is_escaped_into_the_page(world):
    saved = save(world)
    finished_execution(world, saved)
    chart_post(world, "analyst", saved, {"type": "bar", "x": "it's", "y": ["<b>"]})
    page = world.client("analyst").get(detail_url(saved)).content.decode()
    attribute = re.search(r"data-spec='([^']*)'", page)  # quotes inside are escaped, so ' ends it
    assert attribute and "&quot;" in attribute.group(1) and "&#x27;" in attribute.group(1)
    # Key order is the database's (jsonb sorts keys): compare the decoded spec.
    assert json.loads(html.unescape(attribute.group(1))) == {"type": "bar", "x": "it's", "y": ["<b>"]}
    assert "<b>" not in page


# --- the list --------------------------------------------------------------------------------

def test_search_tag_and_mine_filters(world):
    save(world, title="Daily revenue", tags=["finance", "daily"])
    save(world, title="Churn", description="customers who left", tags=["growth"], sql="SELECT * FROM churn")
    save(world, "operator", title="Ops load", tags=["ops", "financed"], sql="SELECT * FROM load_stats")

    def titles(query: str) -> set[str]:
        page = world.client("analyst").get(f"{LIST}?{query}")
        assert page.status_code == 200
        return {s.title for s in page.context["page"]}

    assert titles("") == {"Daily revenue", "Churn", "Ops load"}
    assert titles("q=left") == {"Churn"}  # description
    assert titles("q=load_stats") == {"Ops load"}  # SQL
    assert titles("q=growth") == {"Churn"}  # tags
    assert titles("q=REVENUE") == {"Daily revenue"}  # title, any case
    assert titles("tag=finance") == {"Daily revenue"}  # a whole tag, not "financed"
    assert titles("tag=Finance") == {"Daily revenue"}
    assert titles("mine=1") == {"Daily revenue", "Churn"}
    assert titles("mine=1&tag=growth") == {"Churn"}
    assert titles("q=nothing-matches") == set()
    page = world.client("analyst").get(f"{LIST}?tag=finance").content.decode()
    assert "?tag=daily" in page and "Open in editor" in page


def test_list_paginates_keeps_filters_and_has_bounded_queries(world, django_assert_max_num_queries):
    rows = [SavedQuery(workspace=world.workspace, title=f"Query {i:03}", sql="SELECT 1", tags=["bulk"],
                       owner=world.users["analyst"]) for i in range(120)]
    SavedQuery.objects.bulk_create(rows)
    for saved in SavedQuery.objects.all()[:60]:
        finished_execution(world, saved)
    client = world.client("viewer")
    with django_assert_max_num_queries(6):
        page = client.get(f"{LIST}?tag=bulk")
    assert len(page.context["page"]) == 50 and "Page 1 of 3" in page.content.decode()
    assert "?tag=bulk&page=2" in page.content.decode()
    last = client.get(f"{LIST}?tag=bulk&page=3")
    assert [s.title for s in last.context["page"]] == [f"Query {i:03}" for i in range(100, 120)]
