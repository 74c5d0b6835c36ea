"""The IDE API (runs/ide_api.py, sqlwarehouse/compute_api.py): SQL through the editor's own path as
the token (wait for the rows, or poll), jobs and pipelines started through run_create, with the
compute:sql and compute:job scopes, the roles, the workspace's row cap, the audit, a per-token
limit on running executions, and the OpenAPI document that describes it (fuzzed as the executor
contract's is)."""

from __future__ import annotations

import re
import time
from urllib.parse import unquote, urlsplit

import pytest
from django.test import Client
from django.urls import get_resolver

from connections.models import Connection, SecretRef
from controlroom.access import system_access
from controlroom.models import AuditEvent
from controlroom.services import api_token_create
from runs.models import Run, RunStatus
from runs.openapi import IDE_PATHS
from runs.services.jobs import job_create
from runs.services.runs import run_create
from sqlwarehouse import compute_api, inline
from sqlwarehouse.execution import engine_identity
from sqlwarehouse.models import QueryExecution
from tests.test_openapi_fuzz import fuzz_document

pytestmark = pytest.mark.django_db
SQL, JOB, PIPELINE = "/api/v1/compute/sql", "/api/v1/compute/job", "/api/v1/pipelines/run"
NUMBERS = """name: numbers
parameters:
  limit: {type: integer, default: 3}
  label: {type: string, default: none}
phases:
  - name: extract
    kind: sql
    config:
      sql: SELECT range AS n FROM range($limit)
      table: numbers
"""


class Caller:
    """A token of one workspace with a role and scopes, speaking JSON."""

    def __init__(self, workspace, *, role: str = "operator", scopes: list[str] | None = None) -> None:
        self.token, value = api_token_create(access=system_access(workspace), name=f"ide-{role}", role=role,
                                             scopes=scopes)
        self.client, self.auth = Client(), {"HTTP_AUTHORIZATION": f"Bearer {value}"}

    def get(self, path: str):
        return self.client.get(path, **self.auth)

    def post(self, path: str, body=None, **extra):
        return self.client.post(path, body if body is not None else {}, content_type="application/json",
                                **self.auth, **extra)


def error(response) -> dict:
    return response.json()["error"]


@pytest.fixture
def numbers(world):
    return job_create(access=world.access("operator"), spec_text=NUMBERS)


def test_sql_answers_202_then_pages_of_rows_as_the_token(world, eager_celery, django_capture_on_commit_callbacks):
    analyst = Caller(world.workspace, role="analyst", scopes=["compute:sql"])
    with django_capture_on_commit_callbacks(execute=True):
        submitted = analyst.post(SQL, {"sql": "select range as n from range(250)", "wait_ms": 0})
    assert submitted.status_code == 202 and submitted.json()["status"] == "queued"
    execution_id = submitted.json()["id"]
    assert submitted.json()["status_url"] == f"http://testserver{SQL}/{execution_id}" == submitted["Location"]
    first = analyst.get(f"{SQL}/{execution_id}").json()
    assert first["status"] == "succeeded" and first["row_count"] == 250 and first["read_only"] is True
    assert first["rows"][:3] == [[0], [1], [2]] and len(first["rows"]) == 100 and first["next_offset"] == 100
    assert first["columns"][0]["name"] == "n" and first["connection"] == "warehouse"
    last = analyst.get(f"{SQL}/{execution_id}?offset=200&limit=100").json()  # read from the stored file
    assert last["rows"][0] == [200] and len(last["rows"]) == 50 and last["next_offset"] is None
    too_many = analyst.get(f"{SQL}/{execution_id}?limit=5000")
    assert too_many.status_code == 400 and error(too_many)["field"] == "limit"
    execution = QueryExecution.objects.get(pk=execution_id)
    assert execution.api_token_id == analyst.token.pk and engine_identity(execution) == f"token-{analyst.token.pk}"
    audit = AuditEvent.objects.get(action="sql.execute", target_id=str(execution_id))
    assert audit.after["status"] == "succeeded" and audit.after["sql"] == "select range as n from range(250)"
    # Another token of the workspace, and a token of another workspace, do not see it.
    assert Caller(world.workspace, role="analyst", scopes=["compute:sql"]).get(f"{SQL}/{execution_id}").status_code \
        == 404
    assert Caller(world.other, role="admin").get(f"{SQL}/{execution_id}").status_code == 404
    # compute:sql is not the SQL API's history scope.
    assert error(analyst.get("/api/v1/workspaces/acme/sql/executions"))["code"] == "insufficient_scope"


@pytest.mark.django_db(transaction=True)
def test_sql_within_wait_ms_answers_the_rows_in_the_same_request(world, settings):
    settings.SQL_INLINE_RUNS = 1  # as the web process runs them (sqlwarehouse.inline)
    analyst = Caller(world.workspace, role="analyst", scopes=["compute:sql"])
    try:
        answer = analyst.post("/v1/compute/sql", {"sql": "select 42 as answer, 'x' as s", "wait_ms": 10_000})
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert body["status"] == "succeeded" and body["rows"] == [[42, "x"]] and body["next_offset"] is None
        assert body["status_url"] == f"http://testserver/v1/compute/sql/{body['id']}"
    finally:
        deadline = time.monotonic() + 20  # the inline thread has given its slot back
        while inline._running and time.monotonic() < deadline:
            time.sleep(0.02)
    assert AuditEvent.objects.filter(action="sql.execute", target_id=str(body["id"])).exists()


def test_writes_are_refused_for_analysts_and_in_prod_for_operators(world, eager_celery,
                                                                  django_capture_on_commit_callbacks):
    analyst = Caller(world.workspace, role="analyst", scopes=["compute:sql"])
    refused = analyst.post(SQL, {"sql": "create table t as select 1 as x"})
    assert refused.status_code == 200 and refused.json()["status"] == "failed"
    assert "read-only" in refused.json()["error"] and "rows" not in refused.json()
    audit = AuditEvent.objects.get(action="sql.execute", target_id=str(refused.json()["id"]))
    assert audit.after["status"] == "failed" and audit.actor_label == "token:ide-analyst"
    operator = Caller(world.workspace, role="operator", scopes=["compute:sql"])
    prod = operator.post(SQL, {"sql": "create table t as select 1 as x", "environment": "prod"})
    assert prod.json()["status"] == "failed" and "read-only" in prod.json()["error"]
    with django_capture_on_commit_callbacks(execute=True):
        made = operator.post(SQL, {"sql": "create table t as select 1 as x", "wait_ms": 0})
    assert made.status_code == 202
    assert QueryExecution.objects.get(pk=made.json()["id"]).status == "succeeded"
    with django_capture_on_commit_callbacks(execute=True):
        read = analyst.post(SQL, {"sql": "select x from t", "wait_ms": 0}).json()["id"]
    assert analyst.get(f"{SQL}/{read}").json()["rows"] == [[1]]


def test_row_cap_and_limit(world, eager_celery, django_capture_on_commit_callbacks):
    world.workspace.sql_row_cap = 50
    world.workspace.save()
    caller = Caller(world.workspace, role="analyst", scopes=["compute:sql"])
    with django_capture_on_commit_callbacks(execute=True):
        capped = caller.post(SQL, {"sql": "select * from range(1000)", "wait_ms": 0}).json()["id"]
        limited = caller.post(SQL, {"sql": "select * from range(1000)", "limit": 7, "wait_ms": 0}).json()["id"]
    capped_json = caller.get(f"{SQL}/{capped}?limit=1000").json()
    assert capped_json["row_count"] == 50 and capped_json["truncated"] is True and len(capped_json["rows"]) == 50
    assert caller.get(f"{SQL}/{limited}").json()["row_count"] == 7
    over = caller.post(SQL, {"sql": "select 1", "limit": 51})
    assert over.status_code == 400 and error(over)["field"] == "limit"


def test_fields_scopes_roles_and_the_per_token_limit(world, django_capture_on_commit_callbacks):
    caller = Caller(world.workspace, role="analyst", scopes=["compute:sql"])
    for body, field in [({}, "sql"), ({"sql": 5}, "sql"), ({"sql": "select 1", "wait_ms": 10_001}, "wait_ms"),
                        ({"sql": "select 1", "wait_ms": True}, "wait_ms"),
                        ({"sql": "select 1", "environment": "qa"}, "environment"),
                        ({"sql": "select 1", "parameters": [1]}, "parameters")]:
        response = caller.post(SQL, body)
        assert response.status_code == 400 and error(response)["field"] == field, body
    unknown = caller.post(SQL, {"sql": "select 1", "connection": "nope"})
    assert unknown.status_code == 404 and "No SQL connection named 'nope'" in error(unknown)["message"]
    assert Client().post(SQL, {}, content_type="application/json").status_code == 401
    reader = Caller(world.workspace, role="analyst", scopes=["runs:read"])
    assert error(reader.post(SQL, {"sql": "select 1"}))["message"].startswith("This token lacks the 'compute:sql'")
    viewer = Caller(world.workspace, role="viewer", scopes=["compute:sql"])
    assert error(viewer.post(SQL, {"sql": "select 1"}))["code"] == "forbidden"
    # A token made for the SQL API (sql:write, sql:read) may use this one too.
    legacy = Caller(world.workspace, role="analyst", scopes=["sql:read", "sql:write"])
    with django_capture_on_commit_callbacks(execute=False):
        assert legacy.post(SQL, {"sql": "select 1", "wait_ms": 0}).status_code == 202
        # Nobody runs them here: the token's queued executions fill its slots.
        for _ in range(compute_api.ACTIVE_PER_CALLER - 1):
            assert legacy.post(SQL, {"sql": "select 1", "wait_ms": 0}).status_code == 202
        full = legacy.post(SQL, {"sql": "select 1", "wait_ms": 0})
        assert full.status_code == 429 and error(full)["code"] == "too_many_executions"
        assert caller.post(SQL, {"sql": "select 1", "wait_ms": 0}).status_code == 202  # another token's slots
    assert QueryExecution.objects.filter(api_token=legacy.token).count() == compute_api.ACTIVE_PER_CALLER


def test_a_job_started_through_the_api_runs(world, numbers, eager_celery, django_capture_on_commit_callbacks):
    operator = Caller(world.workspace, role="operator", scopes=["compute:job"])
    with django_capture_on_commit_callbacks(execute=True):
        started = operator.post(JOB, {"job": "numbers", "parameters": {"limit": "4"}})
    assert started.status_code == 201, started.content
    body = started.json()
    assert body["status_url"] == f"http://testserver{JOB}/{body['id']}"
    assert body["console_url"] == f"http://testserver/w/acme/runs/{body['id']}/"
    run = Run.objects.get(pk=body["id"])
    assert run.status == RunStatus.SUCCEEDED and run.parameters == {"limit": 4, "label": "none"}
    assert run.trigger == "api" and run.created_by_label == "token:ide-operator"
    status = operator.get(f"{JOB}/{run.pk}").json()
    assert status["status"] == "succeeded" and [p["state"] for p in status["phases"]] == ["succeeded"]
    assert AuditEvent.objects.get(action="run.create", target_id=str(run.pk)).after["parameters"]["limit"] == 4
    with django_capture_on_commit_callbacks(execute=False):
        first = operator.post(JOB, {"job": "numbers"}, HTTP_IDEMPOTENCY_KEY="ide-1")
        again = operator.post(JOB, {"job": "numbers"}, HTTP_IDEMPOTENCY_KEY="ide-1")
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]


def test_job_errors_name_the_field_and_hide_other_workspaces(world, numbers, django_capture_on_commit_callbacks):
    job_create(access=system_access(world.other), spec_text=NUMBERS.replace("name: numbers", "name: theirs"))
    operator = Caller(world.workspace, role="operator", scopes=["compute:job"])
    for body, field in [({}, "job"), ({"job": 7}, "job"), ({"job": "numbers", "parameters": [1]}, "parameters"),
                        ({"job": "numbers", "environment": "qa"}, "environment")]:
        response = operator.post(JOB, body)
        assert response.status_code == 400 and error(response)["field"] == field, body
    bad = operator.post(JOB, {"job": "numbers", "parameters": {"limit": "many", "colour": "red"}})
    assert bad.status_code == 400 and error(bad)["code"] == "invalid_parameters"
    assert any("limit must be an integer" in e for e in error(bad)["errors"])
    assert any("colour" in e for e in error(bad)["errors"])
    missing, foreign = operator.post(JOB, {"job": "nope"}), operator.post(JOB, {"job": "theirs"})
    assert (missing.status_code, foreign.status_code) == (404, 404) and error(foreign)["code"] == "not_found"
    outsider = Caller(world.other, role="admin")
    with django_capture_on_commit_callbacks(execute=False):
        mine = operator.post(JOB, {"job": "numbers"}).json()["id"]
    assert outsider.get(f"{JOB}/{mine}").status_code == 404 and outsider.post(JOB, {"job": "numbers"}).status_code \
        == 404
    analyst = Caller(world.workspace, role="analyst", scopes=["compute:job"])
    assert error(analyst.post(JOB, {"job": "numbers"}))["code"] == "forbidden"
    sql_only = Caller(world.workspace, role="operator", scopes=["compute:sql"])
    assert error(sql_only.post(JOB, {"job": "numbers"}))["code"] == "insufficient_scope"
    assert error(sql_only.get(f"{JOB}/{mine}"))["code"] == "insufficient_scope"
    # Prod: only admins (with the admin scope), as in the console.
    with django_capture_on_commit_callbacks(execute=False):
        assert operator.post(JOB, {"job": "numbers", "environment": "prod"}).status_code == 403
        admin = Caller(world.workspace, role="admin", scopes=["compute:job", "admin"])
        assert admin.post(JOB, {"job": "numbers", "environment": "prod"}).status_code == 201
    assert Run.objects.filter(environment__name="prod").count() == 1


def test_a_pipeline_runs_with_its_inputs(world, numbers, eager_celery, django_capture_on_commit_callbacks):
    operator = Caller(world.workspace, role="operator", scopes=["compute:job"])
    with django_capture_on_commit_callbacks(execute=True):
        started = operator.post("/v1/pipelines/run", {"pipeline": "numbers", "inputs": {"limit": 2}})
    assert started.status_code == 201
    run_id = started.json()["id"]
    assert started.json()["status_url"] == f"http://testserver/v1/pipelines/run/{run_id}"
    status = operator.get(f"{PIPELINE}/{run_id}").json()
    assert status["status"] == "succeeded" and status["parameters"] == {"limit": 2, "label": "none"}
    for body, field in [({"inputs": {}}, "pipeline"), ({"pipeline": "numbers", "inputs": "x"}, "inputs")]:
        response = operator.post(PIPELINE, body)
        assert response.status_code == 400 and error(response)["field"] == field
    legacy = Caller(world.workspace, role="operator", scopes=["runs:read", "runs:write"])  # a CI token
    with django_capture_on_commit_callbacks(execute=False):
        assert legacy.post(PIPELINE, {"pipeline": "numbers"}).status_code == 201
    assert legacy.get(f"{PIPELINE}/{run_id}").status_code == 200


def test_the_openapi_document_matches_the_routes(world):
    document = Client().get("/api/v1/openapi.json").json()
    assert document["paths"] == IDE_PATHS and document["servers"] == [{"url": "http://testserver/api/v1"}]
    assert Client().get("/v1/openapi.json").json()["servers"] == [{"url": "http://testserver/v1"}]
    [mount] = [p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/"]
    routes = {"/" + re.sub(r"<int:(\w+)>", r"{\1}", str(sub.pattern)) for sub in mount.url_patterns}
    assert routes - {"/openapi.json"} == set(IDE_PATHS)
    caller = Caller(world.workspace, role="admin", scopes=["compute:sql", "compute:job", "admin"])
    for path, operations in IDE_PATHS.items():
        concrete = re.sub(r"{\w+}", "1", path)
        for method in ("get", "post", "put", "delete"):
            response = getattr(caller.client, method)(f"/api/v1{concrete}", content_type="application/json",
                                                      **caller.auth)
            assert (response.status_code == 405) == (method not in operations), (method, path)
    assert document["paths"]["/compute/sql"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["wait_ms"]["maximum"] == compute_api.WAIT_MS_MAX


@pytest.mark.slow
def test_no_generated_input_makes_a_5xx(world, numbers, django_capture_on_commit_callbacks):
    """schemathesis against the IDE API's document, as tests/test_openapi_fuzz.py does for the
    executor contract's (its queued executions fill the token's slots: later ones answer 429)."""
    with django_capture_on_commit_callbacks(execute=False):
        run_create(access=world.access("operator"), job=numbers)  # so run id 1 exists
    headers = {"Authorization": f"Bearer {world.token('operator')}"}
    calls, failures = fuzz_document("/api/v1/openapi.json", headers, django_capture_on_commit_callbacks,
                                    operations=sum(len(ops) for ops in IDE_PATHS.values()))
    assert calls >= len(IDE_PATHS) * 5
    assert not failures, "\n".join(failures[:10])
    assert QueryExecution.objects.exists()  # generated statements got through to the service


@pytest.fixture
def trino(world, trino_server, monkeypatch):
    """A Trino connection of 'acme' (the service user and its password from the suite's server)."""
    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_TEST_IDE_TRINO_PASSWORD", unquote(parts.password or ""))
    ref = SecretRef.objects.create(workspace=world.workspace, name="trino-password", source=SecretRef.Source.ENV,
                                   locator="CONTROLROOM_SECRET_TEST_IDE_TRINO_PASSWORD")
    return Connection.objects.create(
        workspace=world.workspace, name="trino", kind=Connection.Kind.TRINO, password_ref=ref,
        config={"host": parts.hostname, "port": parts.port, "user": unquote(parts.username or ""),
                "http_scheme": parts.scheme, "verify": trino_server.ca_file or True, "catalog": "tpch",
                "schema": "tiny"})


def test_sql_on_trino_as_the_token(world, trino, eager_celery, django_capture_on_commit_callbacks):
    analyst = Caller(world.workspace, role="analyst", scopes=["compute:sql"])
    with django_capture_on_commit_callbacks(execute=True):
        submitted = analyst.post(SQL, {"sql": "select count(*) as n from nation", "connection": "trino",
                                       "wait_ms": 0})
    assert submitted.status_code == 202
    found = analyst.get(f"{SQL}/{submitted.json()['id']}").json()
    assert found["status"] == "succeeded", found["error"]
    assert found["engine"] == "trino" and found["rows"] == [[25]] and found["read_only"] is True
    refused = analyst.post(SQL, {"sql": "create table t as select 1 as x", "connection": "trino"})
    assert refused.json()["status"] == "failed" and "read-only" in refused.json()["error"]
