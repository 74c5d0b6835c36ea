"""The executor contract over HTTP (/api/v1/ops): claims, leases, events, artifacts, outcomes."""

import hashlib
import io
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import get_resolver
from django.utils import timezone

from artifacts.models import Artifact, Blob
from runs.models import Phase, Run, RunEvent
from runs.openapi import PATHS
from runs.services.jobs import job_create

pytestmark = pytest.mark.django_db
OPS = "/api/v1/ops"
DIAMOND = """name: diamond
phases:
  - {name: a, kind: python, config: {callable: sleep, args: {seconds: 0}}}
  - {name: b, kind: python, depends_on: [a], config: {callable: sleep, args: {seconds: 0}}}
  - {name: c, kind: python, depends_on: [a], config: {callable: sleep, args: {seconds: 0}}}
  - {name: d, kind: python, depends_on: [b, c], config: {callable: sleep, args: {seconds: 0}}}
"""


class Agent:
    """An outside executor speaking only HTTP."""

    def __init__(self, token: str, name: str = "agent-1") -> None:
        self.client, self.auth, self.name = Client(), {"HTTP_AUTHORIZATION": f"Bearer {token}"}, name

    def post(self, path: str, body=None, **extra):
        return self.client.post(f"{OPS}{path}", body or {}, content_type="application/json", **self.auth, **extra)

    def get(self, path: str):
        return self.client.get(f"{OPS}{path}", **self.auth)

    def claim(self, **body):
        return self.post("/claim", {"executor": self.name, "kinds": ["python", "sql"], **body})

    def complete(self, claim, outcome="succeeded", **body):
        return self.post(f"/phases/{claim['phase']['id']}/complete",
                         {"lease_token": claim["lease_token"], "outcome": outcome, **body})


@pytest.fixture
def agent(world) -> Agent:
    job_create(access=world.access("operator"), spec_text=DIAMOND)
    return Agent(world.token("operator"))


def test_a_run_driven_entirely_over_http(agent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        created = agent.post("/runs", {"job": "diamond", "parameters": {}}, HTTP_IDEMPOTENCY_KEY="ci-42")
        again = agent.post("/runs", {"job": "diamond"}, HTTP_IDEMPOTENCY_KEY="ci-42")
    assert (created.status_code, again.status_code) == (201, 200)
    run_id = created.json()["id"]
    assert again.json()["id"] == run_id and Run.objects.count() == 1
    order = []
    first = agent.claim(run=run_id).json()
    assert first["phase"]["name"] == "a" and first["phase"]["attempt"] == 1
    assert agent.claim(run=run_id).status_code == 204  # b and c wait for a
    assert agent.post(f"/phases/{first['phase']['id']}/heartbeat",
                      {"lease_token": first["lease_token"]}).json()["cancel_requested"] is False
    order.append("a")
    assert agent.complete(first).json()["run"]["status"] == "running"
    b, c = agent.claim(run=run_id).json(), agent.claim(run=run_id).json()  # both runnable at once
    assert {b["phase"]["name"], c["phase"]["name"]} == {"b", "c"}
    assert agent.claim(run=run_id).status_code == 204  # d waits for both
    agent.complete(b)
    assert agent.claim(run=run_id).status_code == 204
    agent.complete(c)
    d = agent.claim(run=run_id).json()
    assert d["phase"]["name"] == "d"
    done = agent.complete(d, output={"rows": 3})
    assert done.json() == {"phase": {"id": d["phase"]["id"], "state": "succeeded", "attempt": 1},
                           "run": {"id": run_id, "status": "succeeded"}}
    detail = agent.get(f"/runs/{run_id}").json()
    assert detail["status"] == "succeeded" and detail["phases"][3]["output"] == {"rows": 3}


def test_events_batch_dedupes_and_is_all_or_nothing(agent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run_id = agent.post("/runs", {"job": "diamond"}).json()["id"]
    claim = agent.claim().json()
    batch = [{"event_id": str(uuid.uuid4()), "phase_id": claim["phase"]["id"], "type": "PHASE_LOG",
              "lease_token": claim["lease_token"], "message": f"line {i}"} for i in range(3)]
    first = agent.post(f"/runs/{run_id}/events", {"events": batch}).json()
    retried = agent.post(f"/runs/{run_id}/events", {"events": batch}).json()
    assert (first["appended"], first["duplicates"], retried["appended"], retried["duplicates"]) == (3, 0, 0, 3)
    logs = list(RunEvent.objects.filter(run_id=run_id, type="PHASE_LOG").values_list("message", "seq"))
    assert [m for m, _ in logs] == ["line 0", "line 1", "line 2"]
    assert [s for _, s in logs] == sorted(s for _, s in logs)
    before = RunEvent.objects.count()
    mixed = [{**batch[0], "event_id": str(uuid.uuid4())}, {**batch[1], "event_id": str(uuid.uuid4()),
                                                            "lease_token": "stale"}]
    refused = agent.post(f"/runs/{run_id}/events", {"events": mixed})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "stale_lease"
    assert RunEvent.objects.count() == before  # the good first event was not kept either
    outcome = agent.post(f"/runs/{run_id}/events", {"events": [{**batch[0], "event_id": str(uuid.uuid4()),
                                                                "type": "PHASE_SUCCEEDED"}]})
    assert outcome.status_code == 400 and "complete" in outcome.json()["error"]["message"]
    events = agent.get(f"/runs/{run_id}/events?after=0").json()
    assert events["events"][0]["type"] == "RUN_CREATED" and events["next_after"] == events["events"][-1]["seq"]


def test_a_stale_token_writes_nothing_anywhere(agent, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    with django_capture_on_commit_callbacks(execute=False):
        agent.post("/runs", {"job": "diamond"})
    old = agent.claim().json()
    phase_id = old["phase"]["id"]
    Phase.objects.filter(pk=phase_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1),
                                             max_attempts=2)
    from runs.services.phases import phases_reap

    phases_reap()
    new = Agent(agent.auth["HTTP_AUTHORIZATION"][7:], name="agent-2").claim().json()
    assert new["phase"]["id"] == phase_id and new["phase"]["attempt"] == 2
    counts = (RunEvent.objects.count(), Artifact.objects.count(), Blob.objects.count())
    stale = {"lease_token": old["lease_token"]}
    responses = [
        agent.post(f"/phases/{phase_id}/heartbeat", stale),
        agent.post(f"/phases/{phase_id}/complete", {**stale, "outcome": "succeeded"}),
        agent.post(f"/phases/{phase_id}/artifacts", {**stale, "name": "x.txt", "sha256": "0" * 64, "size": 1,
                                                     "location": "s3://bucket/x"}),
    ]
    assert [r.status_code for r in responses] == [409, 409, 409]
    assert all(r.json()["error"]["code"] == "stale_lease" for r in responses)
    assert (RunEvent.objects.count(), Artifact.objects.count(), Blob.objects.count()) == counts
    assert Phase.objects.get(pk=phase_id).state == "running"  # still agent-2's


def test_artifacts_upload_verified_dedupe_and_location(agent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        agent.post("/runs", {"job": "diamond"})
    claim = agent.claim().json()
    url, token = f"/phases/{claim['phase']['id']}/artifacts", claim["lease_token"]
    data = b"country,revenue\nDE,1\n"
    sha = hashlib.sha256(data).hexdigest()
    fields = {"lease_token": token, "name": "out.csv", "sha256": sha, "size": len(data), "media_type": "text/csv"}
    up = agent.client.post(f"{OPS}{url}", {**fields, "file": io.BytesIO(data)}, **agent.auth,
                           HTTP_X_LEASE_TOKEN=token)
    assert up.status_code == 201 and up.json()["sha256"] == sha
    lying = agent.client.post(f"{OPS}{url}", {**fields, "sha256": "f" * 64, "file": io.BytesIO(data)}, **agent.auth,
                              HTTP_X_LEASE_TOKEN=token)
    assert lying.status_code == 400 and "hash to" in lying.json()["error"]["message"]
    by_hash = agent.post(url, {**fields, "name": "copy.csv"})  # same bytes, no upload needed
    assert by_hash.status_code == 201 and Blob.objects.count() == 1
    unknown = agent.post(url, {**fields, "sha256": "e" * 64})
    assert unknown.status_code == 404
    remote = agent.post(url, {**fields, "sha256": "e" * 64, "location": "s3://lake/run/out.csv"})
    assert remote.status_code == 201 and remote.json()["location"] == "s3://lake/run/out.csv"
    assert list(Artifact.objects.order_by("id").values_list("name", flat=True)) == ["out.csv", "copy.csv", "out.csv"]


def test_cancel_pending_at_once_running_at_next_heartbeat(agent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run_id = agent.post("/runs", {"job": "diamond"}).json()["id"]
    claim = agent.claim().json()
    cancelled = agent.post(f"/runs/{run_id}/cancel").json()
    assert cancelled["status"] == "running"
    assert {p["name"]: p["state"] for p in cancelled["phases"]} == {"a": "running", "b": "cancelled",
                                                                    "c": "cancelled", "d": "cancelled"}
    beat = agent.post(f"/phases/{claim['phase']['id']}/heartbeat", {"lease_token": claim["lease_token"]})
    assert beat.json()["cancel_requested"] is True
    assert agent.claim().status_code == 204
    assert agent.complete(claim, outcome="cancelled").json()["run"]["status"] == "cancelled"
    types = list(RunEvent.objects.filter(run_id=run_id).values_list("type", flat=True))
    assert types.count("PHASE_CANCELLED") == 4 and types[-1] == "RUN_CANCELLED"
    again = agent.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]


def test_a_phase_of_a_cancelled_run_never_ends_succeeded(agent, django_capture_on_commit_callbacks):
    """The executor finished before it heard of the cancel: the attempt is recorded cancelled (not
    succeeded), its outputs kept, and a failure after the cancel schedules no retry."""
    with django_capture_on_commit_callbacks(execute=False):
        run_id = agent.post("/runs", {"job": "diamond"}).json()["id"]
    claim = agent.claim().json()
    agent.post(f"/runs/{run_id}/cancel")
    done = agent.complete(claim, outcome="succeeded", output={"rows": 3})
    assert done.status_code == 200, done.content
    phase = Phase.objects.get(pk=claim["phase"]["id"])
    assert phase.state == "cancelled" and phase.output == {"rows": 3}
    assert "after the run was asked to cancel" in phase.error
    assert Run.objects.get(pk=run_id).status == "cancelled"
    assert not RunEvent.objects.filter(run_id=run_id, type="PHASE_SUCCEEDED").exists()

    with django_capture_on_commit_callbacks(execute=False):
        second = agent.post("/runs", {"job": "diamond"}).json()["id"]
    Phase.objects.filter(run_id=second).update(max_attempts=3)
    claim = agent.claim().json()
    agent.post(f"/runs/{second}/cancel")
    assert agent.complete(claim, outcome="failed", error="killed").status_code == 200
    phase = Phase.objects.get(pk=claim["phase"]["id"])
    assert (phase.state, phase.error, phase.attempt) == ("cancelled", "killed", 1)
    assert Run.objects.get(pk=second).status == "cancelled"


def test_contract_input_errors_are_4xx_json(world, agent):
    viewer = Agent(world.token("viewer"))
    assert viewer.claim().status_code == 403
    assert agent.post("/claim", {"executor": "x", "kinds": "python"}).status_code == 400
    assert agent.post("/claim", {"executor": "x", "kinds": ["python"], "wait": 99}).status_code == 400
    assert agent.post("/runs", {"job": "nope"}).status_code == 404
    assert agent.post("/runs", {"job": "diamond", "git_sha": "abc1234"}).status_code == 409
    assert agent.post("/phases/999/complete", {"lease_token": "x", "outcome": "succeeded"}).status_code == 404
    assert agent.post("/phases/1/complete", {"outcome": "done"}).status_code in (400, 404)
    assert Client().post(f"{OPS}/claim").status_code == 401
    assert agent.get("/claim").status_code == 405
    nul = agent.post("/claim", {"executor": "a\x00b", "kinds": ["sql"]})  # PostgreSQL text cannot hold NUL
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]["message"]
    assert agent.get("/runs?status=x%00").status_code == 400


def test_openapi_document_is_served_and_matches_the_routes(agent):
    doc = Client().get(f"{OPS}/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and doc["paths"] == PATHS
    resolver = get_resolver()
    ops_routes = set()
    for pattern in resolver.url_patterns:
        if str(pattern.pattern) == "api/v1/ops/":
            for sub in pattern.url_patterns:
                route = "/" + str(sub.pattern).replace("<int:", "{").replace(">", "}")
                ops_routes.add(route)
    ops_routes.discard("/openapi.json")
    documented = {path.replace("{run_id}", "{run_id}").replace("{phase_id}", "{phase_id}") for path in PATHS}
    assert ops_routes == documented
    for path, operations in PATHS.items():
        for method in ("get", "post", "put", "delete"):
            concrete = path.replace("{run_id}", "1").replace("{phase_id}", "1")
            response = getattr(agent.client, method)(f"{OPS}{concrete}", content_type="application/json",
                                                     **agent.auth)
            if method in operations:
                assert response.status_code != 405, (method, path)
            else:
                assert response.status_code == 405, (method, path)


def test_rerun_over_http(agent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run_id = agent.post("/runs", {"job": "diamond"}).json()["id"]
        claim = agent.claim().json()
        agent.complete(claim, outcome="failed", error="boom")
        assert agent.get(f"/runs/{run_id}").json()["status"] == "failed"
        rerun = agent.post(f"/runs/{run_id}/rerun", {"mode": "retry"})
    assert rerun.status_code == 201 and rerun.json()["rerun_of"] == run_id and rerun.json()["rerun_mode"] == "retry"
    assert agent.post(f"/runs/{run_id}/rerun", {"mode": "sideways"}).status_code == 400
