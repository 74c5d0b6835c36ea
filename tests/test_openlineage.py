"""OpenLineage (lineage/): the seeded demo's lakehouse run, a failing run with a retry and a
cancelled run become START, COMPLETE, FAIL and ABORT documents with the job's namespace and name,
the run ids, the tables read and written (schema, version, row counts) and artifacts, and facets
for the git sha, the phase kind and the SQL text; every document is valid against the
OpenLineage JSON schema (tests/openlineage_spec/, vendored: version and source in its README).
They reach a receiver process over HTTP (tests/openlineage_receiver.py stands in for Marquez,
which does not install here) in order; an endpoint that is down loses nothing and fails no run;
one that refuses a document drops only that one; the file transport writes JSON lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from lineage.delivery import pump
from lineage.events import CONTROLROOM_FACET
from lineage.models import LineageCursor
from runs.models import RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_cancel, run_create
from tests.openlineage_receiver import ReceiverServer
from tests.test_lakehouse_demo import Demo

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SPEC_DIR = Path(__file__).resolve().parent / "openlineage_spec"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def _registry() -> Registry:
    resources = []
    for path in [SPEC_DIR / "OpenLineage.json", *sorted((SPEC_DIR / "facets").glob("*.json"))]:
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def schema_errors(document: dict) -> list[str]:
    """Every way ``document`` breaks the RunEvent schema or one of its facets' own schemas."""
    errors = [e.message for e in Draft202012Validator({"$ref": RUN_EVENT}, registry=REGISTRY).iter_errors(document)]
    facets = [*document["run"].get("facets", {}).values(), *document["job"].get("facets", {}).values()]
    for dataset in document.get("inputs", []) + document.get("outputs", []):
        facets += [*dataset.get("facets", {}).values(), *dataset.get("outputFacets", {}).values()]
    for facet in facets:
        if facet["_schemaURL"] == CONTROLROOM_FACET:
            continue  # ours; its fields are checked by the tests below
        assert facet["_schemaURL"].split("#")[0] in {r for r in REGISTRY}, f"facet schema not vendored: {facet}"
        validator = Draft202012Validator({"$ref": facet["_schemaURL"]}, registry=REGISTRY)
        errors += [f"{facet['_schemaURL']}: {e.message}" for e in validator.iter_errors(facet)]
    return errors


@pytest.fixture
def receiver(settings):
    server = ReceiverServer(api_key="lineage-key")
    server.start()
    settings.OPENLINEAGE_URL, settings.OPENLINEAGE_API_KEY = f"{server.url}/api/v1/lineage", "lineage-key"
    settings.OPENLINEAGE_FILE, settings.OPENLINEAGE_LAG_S = "", 0
    yield server
    server.stop()


@pytest.fixture
def demo(db, settings, tmp_path) -> Demo:
    settings.DATA_DIR = tmp_path / "data"
    call_command("seed_demo", stdout=io.StringIO())
    return Demo()


def by_job(documents: list[dict]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for doc in documents:
        found.setdefault(doc["job"]["name"], []).append(doc["eventType"])
    return found


def test_the_demo_run_emits_valid_lineage_with_tables_and_facets(demo, receiver, eager_celery, settings,
                                                                  django_capture_on_commit_callbacks):
    run = demo.run(django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED
    pump()  # the settle hook's pump may have sent them already (eager Celery): nothing twice either way
    documents = receiver.events()
    for document in documents:
        assert schema_errors(document) == [], document
    events = by_job(documents)
    assert events["lakehouse"] == ["START", "COMPLETE"]  # the run: its first claim, then its end
    phases = [name for name in events if name.startswith("lakehouse.")]
    assert len(phases) == run.phases.count() and all(events[p] == ["START", "COMPLETE"] for p in phases)
    assert documents[0]["eventType"] == "START" and documents[0]["job"]["name"] == "lakehouse"
    assert documents[-1]["job"]["name"] == "lakehouse" and documents[-1]["eventType"] == "COMPLETE"
    assert {d["job"]["namespace"] for d in documents} == {"controlroom/demo/dev"}

    run_end = documents[-1]
    written = {o["name"]: o for o in run_end["outputs"]}
    assert {"bronze.orders", "silver.orders", "gold.revenue_by_country", "gold.daily_revenue"} <= set(written)
    silver = written["silver.orders"]
    assert silver["namespace"] == "controlroom/demo/dev/lakehouse"
    assert silver["outputFacets"]["outputStatistics"]["rowCount"] == 240
    assert any(f["name"] == "amount" and "decimal" in f["type"] for f in silver["facets"]["schema"]["fields"])
    broken = {**run_end, "eventType": "DONE", "producer": 7}
    assert len(schema_errors(broken)) == 2  # the validator does catch a bad document
    version = run.table_edges.get(direction="write", table_version__table__name="orders",
                                  table_version__table__namespace="silver").table_version
    assert silver["facets"]["version"]["datasetVersion"] == str(version.version)
    silver_phase = next(d for d in documents if d["eventType"] == "COMPLETE" and
                        any(i["name"] == "bronze.orders" for i in d["inputs"]) and
                        any(o["name"] == "silver.orders" for o in d["outputs"]))
    facets = silver_phase["run"]["facets"]
    assert facets["parent"]["run"]["runId"] == run_end["run"]["runId"]
    assert facets["controlroom"]["runId"] == run.pk and facets["controlroom"]["phaseKind"]
    assert facets["controlroom"]["gitSha"] == (run.git_sha or run.job_version.git_sha)
    assert any("sql" in d["job"]["facets"] for d in documents)  # SQL text of a phase that has it


def test_failures_retries_and_cancels_become_fail_and_abort(world, receiver, monkeypatch,
                                                            django_capture_on_commit_callbacks):
    from runs.services.phases import phase_execute

    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    job = job_create(access=world.access("operator"), spec_text=(
        "name: shaky\nphases:\n  - {name: load, kind: sql, retries: 1, config: {sql: 'select * from missing'}}\n"))
    with django_capture_on_commit_callbacks(execute=False):
        failing = run_create(access=world.access("operator"), job=job)
    phase = failing.phases.get()
    phase_execute(phase_id=phase.pk, worker="w")
    phase_execute(phase_id=phase.pk, worker="w")  # the retry fails too
    with django_capture_on_commit_callbacks(execute=False):
        cancelled = run_create(access=world.access("operator"), job=job)
    run_cancel(access=world.access("operator"), run=cancelled)
    pump()
    documents = receiver.events()
    assert all(schema_errors(d) == [] for d in documents)
    mine = [d for d in documents if d["run"]["facets"]["controlroom"]["runId"] == failing.pk]
    assert by_job(mine) == {"shaky": ["START", "FAIL"], "shaky.load": ["START", "FAIL", "START", "FAIL"]}
    attempts = [d["run"]["runId"] for d in mine if d["job"]["name"] == "shaky.load"]
    assert attempts[0] == attempts[1] != attempts[2] == attempts[3]  # each attempt is a run of its own
    fail = mine[-1]
    assert "missing" in fail["run"]["facets"]["errorMessage"]["message"]
    assert mine[1]["job"]["facets"]["sql"]["query"] == "select * from missing"
    aborted = [d for d in documents if d["run"]["facets"]["controlroom"]["runId"] == cancelled.pk]
    assert [d["eventType"] for d in aborted] == ["ABORT"]


def test_a_down_endpoint_loses_nothing_and_fails_no_run(world, receiver, django_capture_on_commit_callbacks):
    from runs.services.phases import phase_execute

    job = job_create(access=world.access("operator"), spec_text=(
        "name: steady\nphases:\n  - {name: a, kind: sql, config: {sql: 'select 1'}}\n"))
    receiver.set_status(503)
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    phase_execute(phase_id=run.phases.get().pk, worker="w")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED  # lineage never holds a run up
    assert pump() == 0 and receiver.events() == [] and receiver.refused() == 1
    cursor = LineageCursor.objects.get()
    assert "HTTP 503" in cursor.last_error and cursor.last_event_id == 0
    receiver.set_status(201)
    assert pump() == 3
    assert [d["eventType"] for d in receiver.events()] == ["START", "START", "COMPLETE", "COMPLETE"]
    assert pump() == 0  # nothing twice

    receiver.set_status(400)  # malformed, says the endpoint: that event is dropped, the rest go on
    with django_capture_on_commit_callbacks(execute=False):
        run_cancel(access=world.access("operator"), run=run_create(access=world.access("operator"), job=job))
    assert pump() == 2  # the phase's cancel (never claimed: no document) and the run's ABORT, refused
    assert LineageCursor.objects.get().dropped == 1 and receiver.refused() == 2


def test_the_file_transport_appends_json_lines(world, settings, tmp_path, django_capture_on_commit_callbacks):
    settings.OPENLINEAGE_URL, settings.OPENLINEAGE_LAG_S = "", 0
    settings.OPENLINEAGE_FILE = str(tmp_path / "lineage" / "events.jsonl")
    job = job_create(access=world.access("operator"), spec_text=(
        "name: filed\nphases:\n  - {name: a, kind: sql, config: {sql: 'select 1'}}\n"))
    with django_capture_on_commit_callbacks(execute=False):
        run_cancel(access=world.access("operator"), run=run_create(access=world.access("operator"), job=job))
    assert pump() == 2  # the never-claimed phase's cancel writes nothing; the run's ABORT a line
    lines = Path(settings.OPENLINEAGE_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["eventType"] == "ABORT"
    assert schema_errors(json.loads(lines[0])) == []


def test_young_events_wait_for_the_lag(world, receiver, settings, django_capture_on_commit_callbacks):
    settings.OPENLINEAGE_LAG_S = 3600
    job = job_create(access=world.access("operator"), spec_text=(
        "name: young\nphases:\n  - {name: a, kind: sql, config: {sql: 'select 1'}}\n"))
    with django_capture_on_commit_callbacks(execute=False):
        run_cancel(access=world.access("operator"), run=run_create(access=world.access("operator"), job=job))
    assert pump() == 0 and receiver.events() == []
