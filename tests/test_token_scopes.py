"""API token scopes beside the role: runs:read, runs:write, executor, sql:read, sql:write, admin.
An executor token cannot read the SQL history nor trigger runs; a CI token that triggers runs
cannot act as an executor; a SQL token runs statements (as token-<id> in the engines) and sees
only its own history; an admin token without the admin scope acts as an operator. Tokens made
before scopes existed keep every scope (the migration's default)."""

from __future__ import annotations

import pytest
from django.test import Client

from controlroom.access import system_access
from controlroom.models import AuditEvent
from controlroom.services import ServiceError, api_token_create
from runs.services.jobs import job_create
from sqlwarehouse.models import QueryExecution
from tests.test_contract import DIAMOND

pytestmark = pytest.mark.django_db
OPS, API = "/api/v1/ops", "/api/v1/workspaces/acme"


class Caller:
    def __init__(self, world, *, role: str = "operator", scopes: list[str] | None = None) -> None:
        self.token, value = api_token_create(access=system_access(world.workspace), name=f"t-{role}",
                                             role=role, scopes=scopes)
        self.client, self.auth = Client(), {"HTTP_AUTHORIZATION": f"Bearer {value}"}

    def get(self, path: str):
        return self.client.get(path, **self.auth)

    def post(self, path: str, body=None):
        return self.client.post(path, body or {}, content_type="application/json", **self.auth)


def refused(response, scope: str) -> bool:
    error = response.json()["error"] if response.status_code == 403 else {}
    return error.get("code") == "insufficient_scope" and f"'{scope}' scope" in error.get("message", "")


@pytest.fixture
def diamond(world):
    job_create(access=world.access("operator"), spec_text=DIAMOND)


def test_an_executor_token_works_phases_but_reads_no_sql_and_triggers_nothing(world, diamond,
                                                                               django_capture_on_commit_callbacks):
    ci = Caller(world, scopes=["runs:read", "runs:write"])
    executor = Caller(world, scopes=["executor"])
    with django_capture_on_commit_callbacks(execute=False):
        created = ci.post(f"{OPS}/runs", {"job": "diamond"})
    assert created.status_code == 201
    run_id = created.json()["id"]

    claim = executor.post(f"{OPS}/claim", {"executor": "x", "kinds": ["python", "sql"], "run": run_id})
    assert claim.status_code == 200
    claimed = claim.json()
    token = {"lease_token": claimed["lease_token"]}
    assert executor.post(f"{OPS}/phases/{claimed['phase']['id']}/heartbeat", token).status_code == 200
    assert executor.get(f"{OPS}/runs/{run_id}").status_code == 200  # it polls its run for a cancel
    assert executor.post(f"{OPS}/phases/{claimed['phase']['id']}/complete",
                         {**token, "outcome": "succeeded"}).status_code == 200

    assert refused(executor.get(f"{API}/sql/executions"), "sql:read")
    assert refused(executor.post(f"{OPS}/runs", {"job": "diamond"}), "runs:write")
    assert refused(executor.get(f"{API}/jobs"), "runs:read")
    # The CI token triggers and reads runs, but cannot act as an executor.
    assert refused(ci.post(f"{OPS}/claim", {"executor": "ci", "kinds": ["python"]}), "executor")
    assert refused(ci.post(f"{OPS}/runs/{run_id}/events", {"events": []}), "executor")
    assert ci.get(f"{OPS}/runs/{run_id}/events").status_code == 200
    assert refused(ci.get(f"{API}/sql/executions"), "sql:read")


def test_a_sql_token_runs_statements_as_itself_and_sees_its_own_history(world, eager_celery,
                                                                        django_capture_on_commit_callbacks):
    analyst = Caller(world, role="analyst", scopes=["sql:read", "sql:write"])
    reader = Caller(world, role="analyst", scopes=["sql:read"])
    with django_capture_on_commit_callbacks(execute=True):
        submitted = analyst.post(f"{API}/sql/executions", {"connection": "warehouse",
                                                           "sql": "select range as n from range(3)"})
    assert submitted.status_code == 202
    execution_id = submitted.json()["id"]
    found = analyst.get(f"{API}/sql/executions/{execution_id}").json()
    assert found["status"] == "succeeded" and found["rows"] == [[0], [1], [2]] and found["read_only"] is True
    execution = QueryExecution.objects.get(pk=execution_id)
    assert execution.api_token_id == analyst.token.pk and execution.user is None
    from sqlwarehouse.execution import engine_identity

    assert engine_identity(execution) == f"token-{analyst.token.pk}"

    assert [e["id"] for e in analyst.get(f"{API}/sql/executions").json()["executions"]] == [execution_id]
    assert reader.get(f"{API}/sql/executions").json()["executions"] == []  # another token's: not listed
    assert reader.get(f"{API}/sql/executions/{execution_id}").status_code == 404
    assert refused(reader.post(f"{API}/sql/executions", {"connection": "warehouse", "sql": "select 1"}), "sql:write")
    assert refused(analyst.get(f"{API}/runs"), "runs:read")
    bad = analyst.post(f"{API}/sql/executions", {"connection": "nope", "sql": "select 1"})
    assert bad.status_code == 404 and "No SQL connection named 'nope'" in bad.json()["error"]["message"]
    # A viewer-role token with sql:write still cannot run SQL: the role limits it too.
    viewer = Caller(world, role="viewer", scopes=["sql:write"])
    assert viewer.post(f"{API}/sql/executions", {"connection": "warehouse", "sql": "select 1"}).status_code == 403


def test_an_admin_token_needs_the_admin_scope_to_act_as_admin(world, eager_celery, diamond,
                                                              django_capture_on_commit_callbacks):
    plain = Caller(world, role="admin", scopes=["runs:read", "runs:write", "sql:read", "sql:write"])
    full = Caller(world, role="admin", scopes=["runs:read", "runs:write", "sql:read", "sql:write", "admin"])
    with django_capture_on_commit_callbacks(execute=False):
        assert plain.post(f"{OPS}/runs", {"job": "diamond", "environment": "prod"}).status_code == 403
        assert full.post(f"{OPS}/runs", {"job": "diamond", "environment": "prod"}).status_code == 201
    with django_capture_on_commit_callbacks(execute=True):
        mine = plain.post(f"{API}/sql/executions", {"connection": "warehouse", "sql": "select 1"}).json()["id"]
    assert [e["id"] for e in full.get(f"{API}/sql/executions").json()["executions"]] == [mine]  # admins: all
    assert full.get(f"{API}/sql/executions/{mine}").status_code == 200


def test_scopes_are_checked_and_audited_when_a_token_is_made(world):
    with pytest.raises(ServiceError, match="Unknown scope 'runs:delete'"):
        api_token_create(access=world.access("admin"), name="x", role="operator", scopes=["runs:delete"])
    with pytest.raises(ServiceError, match="at least one scope"):
        api_token_create(access=world.access("admin"), name="x", role="operator", scopes=[])
    token, _ = api_token_create(access=world.access("admin"), name="ci", role="operator",
                                scopes=["runs:write", "runs:read", "runs:write"])
    assert token.scopes == ["runs:read", "runs:write"]
    assert AuditEvent.objects.filter(action="api_token.create").last().after["scopes"] == ["runs:read", "runs:write"]


def test_the_tokens_page_makes_a_scoped_token_and_lists_scopes(world):
    admin = world.client("admin")
    page = admin.get("/w/acme/tokens/").content.decode()
    assert 'name="scopes" value="executor"' in page and 'value="runs:read" checked' in page
    made = admin.post("/w/acme/tokens/", {"name": "runner", "role": "operator", "scopes": ["executor"]})
    assert made.status_code == 200 and "<code>executor</code>" in made.content.decode()
    assert world.workspace.api_tokens.get(name="runner").scopes == ["executor"]
    none = admin.post("/w/acme/tokens/", {"name": "empty", "role": "operator"}, follow=True).content.decode()
    assert "Choose at least one scope" in none and not world.workspace.api_tokens.filter(name="empty").exists()
