"""MLflow linkage (runs/mlflow.py) against a real ``mlflow server`` (tests/mlflow_server.py): a
python phase of the seeded demo workspace trains a tiny model on the gold table the demo's
lakehouse run made, in an MLflow run tagged with the Control Room run, phase, attempt and git
sha, and logs its parameters, metrics and the model; the run page lists it with its metrics and
a link; a failing phase ends its MLflow run FAILED; a wrong or unreachable connection fails the
phase with a clear message; the connection's test button asks the real server."""

from __future__ import annotations

import io
import os

import pytest
import requests
from django.core.management import call_command

from connections.models import Connection
from connections.probe import connection_test
from runs.models import MlflowRun, RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_create
from tests.servers import free_port
from tests.test_lakehouse_demo import Demo

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo(db, settings, tmp_path) -> Demo:
    settings.DATA_DIR = tmp_path / "data"
    call_command("seed_demo", stdout=io.StringIO())
    return Demo()


def api(server, endpoint: str, **params) -> dict:
    response = requests.get(f"{server.url}/api/2.0/mlflow/{endpoint}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def ml_job(demo: Demo, name: str, callable_: str, args: str, connection: str = "tracking"):
    return job_create(access=demo.access, spec_text=(
        f"name: {name}\nphases:\n  - name: train\n    kind: python\n"
        f"    config: {{callable: {callable_}, mlflow: {connection}, args: {args}}}\n"), git_sha="c" * 40)


def run_to_end(demo: Demo, job, capture):
    with capture(execute=True):
        run = run_create(access=demo.access, job=job, environment="dev")
    run.refresh_from_db()
    return run


def test_a_phase_trains_on_gold_and_logs_to_mlflow(demo, mlflow_server, eager_celery, live_server,
                                                   django_capture_on_commit_callbacks):
    lakehouse = demo.run(django_capture_on_commit_callbacks)  # makes gold.daily_revenue
    assert lakehouse.status == RunStatus.SUCCEEDED
    conn = Connection.objects.create(workspace=demo.workspace, name="tracking", kind="mlflow",
                                     config={"tracking_uri": mlflow_server.url})
    conn.full_clean()
    test = connection_test(access=demo.access, connection=conn)
    assert test.ok and "answered" in test.message

    job = ml_job(demo, "revenue-model", "train_revenue_trend", "{table: gold.daily_revenue}")
    run = run_to_end(demo, job, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, run.error
    link = MlflowRun.objects.get(run=run)
    found = api(mlflow_server, "runs/get", run_id=link.mlflow_run_id)["run"]
    tags = {t["key"]: t["value"] for t in found["data"]["tags"]}
    assert tags["controlroom.run_id"] == str(run.pk) and tags["controlroom.phase"] == "train"
    assert tags["controlroom.attempt"] == "1" and tags["controlroom.git_sha"] == "c" * 40
    assert tags["mlflow.source.git.commit"] == "c" * 40 and tags["controlroom.environment"] == "dev"
    assert found["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in found["data"]["metrics"]}
    assert set(metrics) == {"slope", "intercept", "rmse", "r2"}
    output = run.phases.get().output
    assert metrics["slope"] == pytest.approx(output["slope"]) and 0 <= metrics["r2"] <= 1
    params = {p["key"]: p["value"] for p in found["data"]["params"]}
    assert params["table"] == "gold.daily_revenue" and int(params["rows"]) == output["rows"] > 1
    files = api(mlflow_server, "artifacts/list", run_id=link.mlflow_run_id, path="model")["files"]
    assert {f["path"] for f in files} == {"model/MLmodel", "model/model.json"}
    experiment = api(mlflow_server, "experiments/get", experiment_id=link.experiment_id)["experiment"]
    assert experiment["name"] == "controlroom/demo/revenue-model"

    page = demo.client(demo.user).get(f"/w/demo/runs/{run.pk}/").content.decode()
    assert 'id="mlflow-runs"' in page and f"{mlflow_server.url}/#/experiments/{link.experiment_id}/runs/" in page
    assert "slope" in page and "finished" in page
    if os.environ.get("MLFLOW_SHOTS"):  # a look at the run page's MLflow table
        from django.test import Client

        from tests.chromium import chromium

        client = Client()
        client.force_login(demo.user)
        with chromium() as browser:
            context = browser.new_context(viewport={"width": 1300, "height": 900})
            context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                                  "url": live_server.url}])
            shown = context.new_page()
            shown.goto(f"{live_server.url}/w/demo/runs/{run.pk}/")
            shown.locator("#mlflow-runs").scroll_into_view_if_needed()
            shown.screenshot(path=os.path.join(os.environ["MLFLOW_SHOTS"], "run-page-mlflow.png"), full_page=True)

    # A phase that fails ends its MLflow run FAILED; the page still shows it.
    failing = run_to_end(demo, ml_job(demo, "broken-model", "fail", "{message: bad features}"),
                         django_capture_on_commit_callbacks)
    assert failing.status == RunStatus.FAILED
    failed_link = MlflowRun.objects.get(run=failing)
    assert api(mlflow_server, "runs/get", run_id=failed_link.mlflow_run_id)["run"]["info"]["status"] == "FAILED"

    # MLflow away: the page says so instead of failing.
    Connection.objects.filter(pk=conn.pk).update(config={"tracking_uri": f"http://127.0.0.1:{free_port()}"})
    page = demo.client(demo.user).get(f"/w/demo/runs/{run.pk}/")
    assert page.status_code == 200 and "MLflow did not answer" in page.content.decode()


def test_a_wrong_or_unreachable_mlflow_connection_fails_the_phase_clearly(demo, eager_celery,
                                                                          django_capture_on_commit_callbacks):
    Connection.objects.create(workspace=demo.workspace, name="tracking", kind="mlflow",
                              config={"tracking_uri": f"http://127.0.0.1:{free_port()}"})
    run = run_to_end(demo, ml_job(demo, "nowhere", "sleep", "{seconds: 0}"), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert "MLflow run for this phase could not be made: MLflow at http://127.0.0.1:" in run.phases.get().error
    run = run_to_end(demo, ml_job(demo, "not-mlflow", "sleep", "{seconds: 0}", connection="warehouse"),
                     django_capture_on_commit_callbacks)
    assert "Connection 'warehouse' is duckdb, not mlflow." in run.phases.get().error


def test_a_spark_driver_gets_the_mlflow_run_in_its_environment(world, mlflow_server, eager_celery, settings,
                                                               django_capture_on_commit_callbacks):
    from tests.lakehouse_helpers import errors, phase, spec, trigger

    settings.SPARK_MODULES = ["tests.spark_scripts.mlflow_log"]
    Connection.objects.create(workspace=world.workspace, name="tracking", kind="mlflow",
                              config={"tracking_uri": mlflow_server.url})
    run = trigger(world, spec(phase("count", "spark", module="tests.spark_scripts.mlflow_log", mlflow="tracking")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    link = MlflowRun.objects.get(run=run)
    found = api(mlflow_server, "runs/get", run_id=link.mlflow_run_id)["run"]
    assert {p["key"]: p["value"] for p in found["data"]["params"]} == {"engine": "spark"}
    assert {m["key"]: m["value"] for m in found["data"]["metrics"]} == {"rows": 5.0}
    assert found["info"]["status"] == "FINISHED"
    assert {t["key"]: t["value"] for t in found["data"]["tags"]}["controlroom.phase"] == "count"
