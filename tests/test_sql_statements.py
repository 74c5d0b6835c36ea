"""A multi-statement run lists each statement with its outcome; a saved query's last result
names the version that produced it."""

import pytest
from django.test import TestCase

from connections.models import Connection
from sqlwarehouse.execution import query_submit
from sqlwarehouse.models import QueryExecution
from sqlwarehouse.services import saved_query_save

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _eager(eager_celery):
    """The worker's part runs in-process when the submit commits."""


def submit(world, persona: str, sql: str, **kwargs) -> QueryExecution:
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    with TestCase.captureOnCommitCallbacks(execute=True):
        execution = query_submit(access=world.access(persona), connection=connection, sql=sql, **kwargs)
    execution.refresh_from_db()
    return execution


def test_each_statement_of_a_run_is_listed_with_its_outcome(world):
    done = submit(world, "operator", "CREATE TABLE x AS SELECT 1 AS a; DROP TABLE x; SELECT 1 AS one")
    assert done.status == "succeeded"
    assert [(s["n"], s["status"], s["shown"]) for s in done.statements] == [
        (1, "succeeded", False), (2, "succeeded", False), (3, "succeeded", True)]
    assert done.statements[2]["rows"] == 1 and done.rows == [[1]]
    assert done.statements[1]["sql"] == "DROP TABLE x"
    page = world.client("operator").get(f"/w/acme/sql/executions/{done.pk}/").content.decode()
    table = page[page.index('id="statements"'):].split("</table>")[0]
    assert table.count('class="statement succeeded"') == 3 and "DROP TABLE x" in table and "result below" in table

    broken = submit(world, "operator", "SELECT 1 AS a; SELECT * FROM no_such_table; SELECT 3 AS c")
    assert broken.status == "failed"
    assert [s["status"] for s in broken.statements] == ["succeeded", "failed", "not_run"]
    assert "no_such_table" in broken.statements[1]["error"] and not broken.statements[2]["error"]
    assert broken.statements[0]["rows"] == 1 and broken.statements[0]["shown"]
    page = world.client("operator").get(f"/w/acme/sql/executions/{broken.pk}/").content.decode()
    assert "not run" in page and 'class="statement failed"' in page

    single = submit(world, "analyst", "SELECT 1 AS a")
    assert len(single.statements) == 1
    assert 'id="statements"' not in world.client("analyst").get(f"/w/acme/sql/executions/{single.pk}/").content.decode()


def test_a_saved_querys_last_result_names_its_version(world):
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    analyst = world.access("analyst")
    saved = saved_query_save(access=analyst, title="ones", sql="SELECT 1 AS one", connection=connection)
    saved = saved_query_save(access=analyst, title="ones", sql="SELECT 2 AS two", connection=connection,
                             saved_query=saved)
    assert saved.version == 2
    ran = submit(world, "analyst", "SELECT 2 AS two", saved_query=saved)
    assert ran.saved_query_version == 2
    page = world.client("analyst").get(f"/w/acme/sql/saved/{saved.pk}/").content.decode()
    assert 'id="last-run-version">from <a href="/w/acme/sql/saved/' in page and "version 2</a>" in page
    edited = submit(world, "analyst", "SELECT 3 AS three", saved_query=saved)
    assert edited.saved_query_version is None
    page = world.client("analyst").get(f"/w/acme/sql/saved/{saved.pk}/").content.decode()
    assert "from unsaved edits" in page
    assert "unsaved edits" in world.client("analyst").get("/w/acme/sql/saved/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_status_wait_returns_when_the_execution_ends_not_at_its_timeout(world):
    import threading
    import time

    from sqlwarehouse.execution import execution_wait

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    execution = query_submit(access=world.access("analyst"), connection=connection, sql="SELECT 1")
    QueryExecution.objects.filter(pk=execution.pk).update(status="queued")  # as if no worker had it yet
    began = time.monotonic()
    execution_wait(execution_id=execution.pk, timeout_s=0.3)
    assert time.monotonic() - began >= 0.3  # still queued: the wait ran out

    def finish() -> None:
        time.sleep(0.2)
        QueryExecution.objects.filter(pk=execution.pk).update(status="succeeded")

    ender = threading.Thread(target=finish)
    began = time.monotonic()
    ender.start()
    execution_wait(execution_id=execution.pk, timeout_s=8)
    waited = time.monotonic() - began
    ender.join()
    assert 0.2 <= waited < 4, waited  # it returned when the execution ended, long before its 8 s
    from sqlwarehouse import execution as module

    QueryExecution.objects.filter(pk=execution.pk).update(status="queued")
    for _ in range(module.STATUS_WAITS_PER_PROCESS):  # every slot taken: the next answers at once
        module._waits.acquire()
    try:
        began = time.monotonic()
        assert execution_wait(execution_id=execution.pk, timeout_s=5) is False
        assert time.monotonic() - began < 1
    finally:
        for _ in range(module.STATUS_WAITS_PER_PROCESS):
            module._waits.release()


@pytest.mark.django_db(transaction=True)
def test_the_editors_results_panel_waits_for_the_end_instead_of_polling(world):
    import threading
    import time

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    execution = query_submit(access=world.access("analyst"), connection=connection, sql="SELECT 42 AS answer")
    QueryExecution.objects.filter(pk=execution.pk).update(status="running")  # as if a worker had it

    def finish() -> None:
        time.sleep(0.3)
        QueryExecution.objects.filter(pk=execution.pk).update(status="succeeded")

    ender = threading.Thread(target=finish)
    client = world.client("analyst")
    ender.start()
    began = time.monotonic()
    page = client.get(f"/w/acme/sql/executions/{execution.pk}/?embed=1").content.decode()
    ender.join()
    assert time.monotonic() - began >= 0.3  # held until the execution ended
    assert 'data-status="succeeded"' in page and "hx-trigger" not in page.split(">")[0]
    QueryExecution.objects.filter(pk=execution.pk).update(status="running")
    held = client.get(f"/w/acme/sql/executions/{execution.pk}/?embed=1").content.decode()
    assert 'hx-trigger="load"' in held  # after a full wait it asks again at once
