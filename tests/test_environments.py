"""Environments keep their data apart, and prod's rules hold on every path: writes in prod by
admins only (also through a connection whose one dataset serves prod too), runs in prod started
by admins unless the workspace lets operators, for UI, API, schedules and reruns alike."""

import pytest
from django.core.exceptions import PermissionDenied

from connections.models import Connection
from controlroom.models import Environment, Workspace
from runs.models import Run, RunStatus
from runs.services.jobs import job_create
from runs.services.reruns import run_rerun
from runs.services.runs import run_create
from runs.services.schedules import schedule_set
from sqlwarehouse.execution import may_write, query_execute, query_submit
from sqlwarehouse.models import QueryExecution

pytestmark = pytest.mark.django_db
ONE = "name: one\nphases:\n  - {name: a, kind: sql, config: {table: made_here, sql: \"SELECT 1 AS n\"}}\n"


def env(world, name: str) -> Environment:
    return world.workspace.environments.get(name=name)


def sql(world, persona: str, text: str, environment: str, connection: str = "warehouse") -> QueryExecution:
    conn = Connection.objects.get(workspace=world.workspace, name=connection)
    execution = query_submit(access=world.access(persona), connection=conn, sql=text,
                             environment=env(world, environment))
    if execution.status == QueryExecution.Status.QUEUED:
        query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    return execution


def tables(world, persona: str, environment: str) -> set[str]:
    execution = sql(world, persona, "SELECT table_name FROM information_schema.tables", environment)
    assert execution.status == "succeeded", execution.error
    return {row[0] for row in execution.rows}


def test_each_environment_has_its_own_warehouse(world):
    made = sql(world, "operator", "CREATE TABLE dev_only AS SELECT 1 AS n", "dev")
    assert made.status == "succeeded", made.error
    assert "dev_only" in tables(world, "analyst", "dev")
    assert "dev_only" not in tables(world, "analyst", "prod") and "dev_only" not in tables(world, "analyst", "stage")
    # The operator cannot change prod, and dropping in dev leaves prod's table of the same name.
    assert sql(world, "operator", "CREATE TABLE dev_only AS SELECT 2 AS n", "prod").status == "failed"
    assert sql(world, "admin", "CREATE TABLE dev_only AS SELECT 2 AS n", "prod").status == "succeeded"
    assert sql(world, "operator", "DROP TABLE dev_only", "dev").status == "succeeded"
    assert sql(world, "analyst", "SELECT n FROM dev_only", "prod").rows == [[2]]


def test_runs_write_into_their_environment(world, eager_celery, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=ONE)
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(access=world.access("operator"), job=job, environment="stage")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert "made_here" in tables(world, "analyst", "stage") and "made_here" not in tables(world, "analyst", "dev")


def test_a_connection_shared_across_environments_writes_only_by_prod_rules(world):
    Connection.objects.create(workspace=world.workspace, name="shared", kind=Connection.Kind.DUCKDB,
                              shared_across_environments=True, config={"database": "shared.duckdb"})
    refused = sql(world, "operator", "CREATE TABLE t AS SELECT 1 AS n", "dev", connection="shared")
    assert refused.status == "failed" and refused.read_only
    done = sql(world, "admin", "CREATE TABLE t AS SELECT 1 AS n", "dev", connection="shared")
    assert done.status == "succeeded"
    assert sql(world, "analyst", "SELECT n FROM t", "prod", connection="shared").rows == [[1]]


def test_who_may_write_where(world):
    trino_all = Connection(workspace=world.workspace, kind=Connection.Kind.TRINO, name="lake")
    trino_dev = Connection(workspace=world.workspace, kind=Connection.Kind.TRINO, name="lake_dev",
                           environment=env(world, "dev"))
    duck = Connection.objects.get(workspace=world.workspace, name="warehouse")
    operator, admin = world.access("operator"), world.access("admin")
    assert may_write(operator, env(world, "dev"), duck) and not may_write(operator, env(world, "prod"), duck)
    # A Trino connection for every environment writes into the one lake prod reads too.
    assert not may_write(operator, env(world, "dev"), trino_all) and may_write(admin, env(world, "dev"), trino_all)
    assert may_write(operator, env(world, "dev"), trino_dev)


@pytest.fixture
def job(world):
    return job_create(access=world.access("operator"), spec_text=ONE)


def test_operators_start_prod_runs_only_when_the_workspace_allows(world, job, django_capture_on_commit_callbacks):
    with pytest.raises(PermissionDenied, match="Only workspace admins may start runs in prod"):
        run_create(access=world.access("operator"), job=job, environment="prod")
    with django_capture_on_commit_callbacks(execute=False):
        assert run_create(access=world.access("admin"), job=job, environment="prod").environment.name == "prod"
        Workspace.objects.filter(pk=world.workspace.pk).update(operators_run_in_prod=True)
        assert run_create(access=world.access("operator"), job=job, environment="prod").pk
    assert Run.objects.filter(environment__name="prod").count() == 2


def test_prod_rule_holds_for_ui_api_schedules_and_reruns(world, job, django_capture_on_commit_callbacks):
    page = world.client("operator").post("/w/acme/jobs/one/trigger/", {"environment": "prod"}, follow=True)
    assert page.status_code == 200 and "Only workspace admins may start runs in prod" in page.content.decode()
    token = world.token("operator")
    api = world.client("viewer").post("/api/v1/workspaces/acme/jobs/one/runs", {"environment": "prod"},
                                      content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.status_code == 403 and api.json()["error"]["code"] == "forbidden"
    ops = world.client("viewer").post("/api/v1/ops/runs", {"job": "one", "environment": "prod"},
                                      content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ops.status_code == 403
    with pytest.raises(PermissionDenied):
        schedule_set(access=world.access("operator"), job=job, environment="prod", cron="0 * * * *")
    with django_capture_on_commit_callbacks(execute=False):
        prod_run = run_create(access=world.access("admin"), job=job, environment="prod")
    Run.objects.filter(pk=prod_run.pk).update(status=RunStatus.FAILED)
    prod_run.refresh_from_db()
    with pytest.raises(PermissionDenied):
        run_rerun(access=world.access("operator"), run=prod_run, mode="rebuild")
    assert Run.objects.filter(environment__name="prod").count() == 1
    assert world.client("operator").post(f"/w/acme/runs/{prod_run.pk}/rerun/", {"mode": "rebuild"}).status_code == 302
    assert Run.objects.filter(environment__name="prod").count() == 1
    assert schedule_set(access=world.access("admin"), job=job, environment="prod", cron="0 * * * *").pk


def test_the_schema_browser_shows_the_chosen_environments_tables(world):
    assert sql(world, "operator", "CREATE TABLE stage_only AS SELECT 1 AS n", "stage").status == "succeeded"
    client = world.client("analyst")
    conn = Connection.objects.get(workspace=world.workspace, name="warehouse")
    dev = client.get(f"/w/acme/sql/schema/{conn.pk}/tables/?catalog=warehouse&schema=main").content.decode()
    stage = client.get(f"/w/acme/sql/schema/{conn.pk}/tables/?catalog=warehouse&schema=main&environment=stage")
    assert "stage_only" not in dev and "stage_only" in stage.content.decode()
    page = client.get(f"/w/acme/sql/schema/?connection={conn.pk}&environment=stage").content.decode()
    assert '<option value="stage" selected>' in page and "environment=stage" in page
    completion = client.get(f"/w/acme/sql/schema/{conn.pk}/completion.json?environment=stage").json()
    assert "stage_only" in str(completion)


def test_a_dev_run_cannot_write_a_dataset_prod_reads(world, eager_celery, django_capture_on_commit_callbacks):
    """A job's phases follow the same rule as the editor: a connection whose one dataset every
    environment reads is changed only by a prod run (which only admins, or operators where the
    workspace allows it, start)."""
    Connection.objects.create(workspace=world.workspace, name="shared", kind=Connection.Kind.DUCKDB,
                              shared_across_environments=True, config={"database": "shared.duckdb"})
    spec = ("name: plant\nphases:\n  - {name: a, kind: sql, config: {connection: shared, table: planted, "
            "sql: \"SELECT 'from dev' AS msg\"}}\n")
    job = job_create(access=world.access("operator"), spec_text=spec)
    with django_capture_on_commit_callbacks(execute=True):
        dev = run_create(access=world.access("operator"), job=job, environment="dev")
    dev.refresh_from_db()
    assert dev.status == RunStatus.FAILED and "read-only" in dev.phases.get().error
    assert sql(world, "analyst", "SELECT * FROM planted", "prod", connection="shared").status == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        prod = run_create(access=world.access("admin"), job=job, environment="prod")
    prod.refresh_from_db()
    assert prod.status == RunStatus.SUCCEEDED, prod.error
    assert sql(world, "analyst", "SELECT msg FROM planted", "dev", connection="shared").rows == [["from dev"]]
