"""Bad input answers a 4xx in the API's JSON shape, never a 500, and writes nothing: racing
idempotent requests, numbers no column holds, over-long text, oversized bodies and uploads,
unknown API paths."""

import hashlib
import io
import threading

import pytest
from django.db import connections
from django.test import Client

from artifacts.models import Artifact
from artifacts.storage import get_store
from runs.models import Run
from runs.services.jobs import job_create
from tests.test_contract import OPS, Agent

PARAMS = """name: params
parameters:
  amount: {type: number, default: 0}
  count: {type: integer, default: 1}
phases:
  - {name: a, kind: python, config: {callable: sleep, args: {seconds: 0}}}
"""


@pytest.fixture
def agent(world) -> Agent:
    job_create(access=world.access("operator"), spec_text=PARAMS)
    return Agent(world.token("operator"))


@pytest.mark.django_db(transaction=True)
def test_racing_requests_with_one_idempotency_key_make_one_run(agent):
    for round_ in range(3):
        barrier, answers, key = threading.Barrier(8), [None] * 8, f"race-{round_}"

        def post(i: int, barrier=barrier, answers=answers, key=key) -> None:
            try:
                client = Client()
                barrier.wait()
                answers[i] = client.post(f"{OPS}/runs", {"job": "params"}, content_type="application/json",
                                         HTTP_IDEMPOTENCY_KEY=key, **agent.auth)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] * 7 + [201], f"round {round_}: {codes}"
        assert len({a.json()["id"] for a in answers}) == 1
        assert Run.objects.filter(idempotency_key=f"race-{round_}").count() == 1


@pytest.mark.django_db
def test_one_key_for_another_request_is_refused(agent):
    first = agent.post("/runs", {"job": "params", "parameters": {"count": 2}}, HTTP_IDEMPOTENCY_KEY="k1")
    same = agent.post("/runs", {"job": "params", "parameters": {"count": 2}}, HTTP_IDEMPOTENCY_KEY="k1")
    other = agent.post("/runs", {"job": "params", "parameters": {"count": 3}}, HTTP_IDEMPOTENCY_KEY="k1")
    assert (first.status_code, same.status_code, other.status_code) == (201, 200, 422)
    assert other.json()["error"]["code"] == "idempotency_key_reused" and Run.objects.count() == 1
    workspace_api = agent.client.post("/api/v1/workspaces/acme/jobs/params/runs", {"parameters": {"count": 9}},
                                      content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1", **agent.auth)
    assert workspace_api.status_code == 422


@pytest.mark.django_db
@pytest.mark.parametrize("body", [
    b'{"job": "params", "parameters": {"amount": 1e400}}',
    b'{"job": "params", "parameters": {"amount": NaN}}',
    b'{"job": "params", "parameters": {"amount": -Infinity}}',
    b'{"job": "params", "parameters": {"amount": "nan"}}',
    b'{"job": "params", "parameters": {"amount": "1e400"}}',
    b'{"job": "params", "parameters": {"count": 10000000000000000000000000000000000000000}}',
    b'{"job": "params", "parameters": {"count": "10000000000000000000000000000000000000000"}}',
    b'{"job": "params", "parameters": {"count": 1e300}}',
    b'{"job": "params", "input_manifest": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
], ids=["1e400", "NaN", "-Infinity", "nan-text", "1e400-text", "int-1e40", "int-1e40-text", "int-1e300", "deep"])
def test_numbers_no_column_holds_are_refused(agent, body):
    answer = agent.client.post(f"{OPS}/runs", body, content_type="application/json", **agent.auth)
    assert 400 <= answer.status_code < 500 and answer.json()["error"]["message"], answer.content
    assert not Run.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["1e400", "nan", "inf", "-1e999", "1" * 5000])
def test_the_web_trigger_refuses_non_finite_numbers(world, agent, value):
    page = world.client("operator").post("/w/acme/jobs/params/trigger/", {"environment": "dev", "param_amount": value,
                                                                          "param_count": value}, follow=True)
    assert page.status_code == 200 and "Could not start the run" in page.content.decode()
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_number_past_int64_is_kept_as_a_float_and_a_big_integer_refused(agent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        ok = agent.post("/runs", {"job": "params", "parameters": {"amount": 10**40, "count": 2**63 - 1}})
    assert ok.status_code == 201 and ok.json()["parameters"]["count"] == 2**63 - 1
    # Stored as the float 1e40 (PostgreSQL's jsonb hands it back as an integer); phases bind a double.
    assert float(ok.json()["parameters"]["amount"]) == 1e40
    claim = agent.claim().json()
    assert claim["run"]["parameters"]["amount"] == 1e40 and isinstance(claim["run"]["parameters"]["amount"], float)
    assert agent.post("/runs", {"job": "params", "parameters": {"count": 2**63}}).status_code == 400


@pytest.mark.django_db
def test_a_body_over_the_limit_is_413_json(agent, settings):
    big = b'{"job": "params", "pad": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b'"}'
    answer = agent.client.post(f"{OPS}/runs", big, content_type="application/json", **agent.auth)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"


@pytest.fixture
def phase(agent, django_capture_on_commit_callbacks) -> dict:
    with django_capture_on_commit_callbacks(execute=False):
        agent.post("/runs", {"job": "params"})
    return agent.claim().json()


def store_files() -> list:
    root = get_store().root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.django_db
@pytest.mark.parametrize("change, message", [
    ({"size": 10**40}, "'size' must be a whole number"),
    ({"size": -1}, "'size' must be a whole number"),
    ({"size": True}, "'size' must be a whole number"),
    ({"location": "s3://x/" + "y" * 100_000}, "'location' is 100,007 characters long; the limit is 1,000"),
    ({"media_type": "text/" + "c" * 10_000}, "'media_type' is 10,005 characters long; the limit is 100"),
    ({"name": "n" * 300}, "'name' is 300 characters long; the limit is 255"),
    ({"name": "../etc/passwd"}, "'name' must be a file name"),
    ({"sha256": "z" * 64}, "'sha256' must be 64 hexadecimal characters"),
])
def test_artifact_fields_are_checked_at_the_edge(agent, phase, change, message):
    body = {"lease_token": phase["lease_token"], "name": "x.csv", "sha256": "a" * 64, "size": 3,
            "location": "s3://lake/x.csv", **change}
    answer = agent.post(f"/phases/{phase['phase']['id']}/artifacts", body)
    assert answer.status_code == 400 and message in answer.json()["error"]["message"]
    assert not Artifact.objects.exists()


@pytest.mark.django_db
def test_an_upload_whose_size_or_hash_is_wrong_leaves_nothing(agent, phase):
    data = b"0123456789" * 1000
    url = f"{OPS}/phases/{phase['phase']['id']}/artifacts"
    for fields in ({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data) + 1},
                   {"sha256": "b" * 64, "size": len(data)}):
        answer = agent.client.post(url, {"name": "d.bin", **fields, "file": io.BytesIO(data)}, **agent.auth,
                                   HTTP_X_LEASE_TOKEN=phase["lease_token"])
        assert answer.status_code == 400, answer.content
    assert not Artifact.objects.exists() and not store_files()


@pytest.mark.django_db
def test_an_upload_checks_its_declared_sha256_header(agent, phase):
    """X-Content-SHA256 lets the store write in place; bytes that do not match it are refused
    with nothing kept, a malformed header is refused before the body is read, and a true one
    stores the artifact."""
    data = b"declared" * 1000
    url, sha = f"{OPS}/phases/{phase['phase']['id']}/artifacts", hashlib.sha256(data).hexdigest()

    def post(header: str):
        return agent.client.post(url, {"name": "d.bin", "sha256": sha, "size": len(data), "file": io.BytesIO(data)},
                                 **agent.auth, HTTP_X_LEASE_TOKEN=phase["lease_token"], HTTP_X_CONTENT_SHA256=header)

    lying = post("c" * 64)
    assert lying.status_code == 400 and "do not match the sha256 declared" in lying.json()["error"]["message"]
    malformed = post(sha.upper())
    assert malformed.status_code == 400 and "X-Content-SHA256" in malformed.json()["error"]["message"]
    assert not Artifact.objects.exists() and not store_files()
    honest = post(sha)
    assert honest.status_code == 201, honest.content
    assert Artifact.objects.get().sha256 == sha and get_store().open(sha).read() == data


@pytest.mark.django_db
def test_uploads_have_a_limit_checked_before_the_body_is_read(agent, phase, settings, monkeypatch):
    settings.ARTIFACT_UPLOAD_MAX_BYTES = 1000
    read = []
    monkeypatch.setattr("artifacts.uploads.StagingUploadHandler.receive_data_chunk",
                        lambda self, data, start: read.append(len(data)))
    data = b"z" * 5000
    answer = agent.client.post(f"{OPS}/phases/{phase['phase']['id']}/artifacts",
                               {"name": "z.bin", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "file": io.BytesIO(data)}, **agent.auth, HTTP_X_LEASE_TOKEN=phase["lease_token"])
    assert answer.status_code == 413 and "ARTIFACT_UPLOAD_MAX_BYTES" in answer.json()["error"]["message"]
    assert read == [] and not store_files()
    missing = agent.client.post(f"{OPS}/phases/{phase['phase']['id']}/artifacts", {"name": "z.bin"}, **agent.auth)
    assert missing.status_code == 400 and "X-Lease-Token" in missing.json()["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/ops/runs/abc"), ("get", "/api/v1/ops/nothing-here"), ("post", "/api/v1/ops/phases/x/complete"),
    ("get", "/api/v1/workspaces/acme/runs/abc/events"), ("get", "/api/v2/"), ("get", "/api/"),
    ("post", "/hooks/git/"),
])
def test_everything_under_api_answers_json(agent, method, path):
    answer = getattr(agent.client, method)(path, **agent.auth)
    assert answer.status_code == 404 and answer["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("field, limit", [("git_repo", 500), ("git_path", 500), ("git_sha", 40)])
def test_job_git_fields_over_their_column_are_refused_on_every_database(agent, field, limit):
    spec = PARAMS.replace("name: params", "name: longer")
    answer = agent.client.post("/api/v1/workspaces/acme/jobs", {"spec": spec, field: "a" * (limit + 1)},
                               content_type="application/json", **agent.auth)
    assert answer.status_code == 400 and f"the limit is {limit}" in answer.json()["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("path, body", [
    ("/runs", '{"job": "params\\ud800"}'),
    ("/runs", '{"job": "params", "environment": "\\ud800"}'),
    ("/runs", '{"job": "params", "parameters": {"count": 1, "amount": 2}, "input_manifest": {"k": "\\ud800"}}'),
    ("/claim", '{"executor": "x\\ud800", "kinds": ["python"]}'),
    ("/claim", '{"executor": "x", "kinds": ["\\u0000"]}'),
    ("/runs/1/events", '{"events": [{"event_id": "9d7c7f5e-4c1f-4d9a-9b7e-1d2f3a4b5c6d", "phase_id": [], '
                       '"type": "PHASE_LOG", "lease_token": "x"}]}'),
    ("/runs/1/events", '{"events": [{"event_id": "9d7c7f5e-4c1f-4d9a-9b7e-1d2f3a4b5c6d", "phase_id": {}, '
                       '"type": "PHASE_LOG", "lease_token": "x"}]}'),
    ("/phases/1/complete", '{"lease_token": "\\ud800", "outcome": "succeeded"}'),
    ("/phases/1/complete", '{"lease_token": "x", "outcome": "failed", "output": {"k": "\\ud800"}}'),
    ("/phases/1/artifacts", '{"lease_token": "x", "name": "a\\ud800", "sha256": "' + "a" * 64 + '", "size": 1}'),
], ids=lambda v: v if v.startswith("/") else "")
def test_text_no_database_stores_is_refused_with_a_4xx(agent, path, body, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        agent.post("/runs", {"job": "params"})
    runs = Run.objects.count()
    answer = agent.client.post(f"{OPS}{path}", body, content_type="application/json", **agent.auth)
    assert 400 <= answer.status_code < 500 and answer["Content-Type"] == "application/json", answer.content
    assert Run.objects.count() == runs


@pytest.mark.django_db
@pytest.mark.parametrize("yaml_text, message", [
    ("  - {name: a, kind: python, config: {callable: sleep, args: {2024-01-01: 1}}}", 'the key "2024-01-01"'),
    ("  - {name: a, kind: python, config: {callable: sleep, args: {~: 1}}}", "the key null"),
    ("  - {name: a, kind: python, config: {callable: sleep, 1: x, b: y}}", "the key 1"),
    ("  - {name: a, kind: python, config: {callable: sleep, args: {seconds: .nan}}}", "not a finite number"),
    ('  - {name: a, kind: python, config: {callable: sleep, args: {x: "a\\0b"}}}', "NUL"),
    ("  - {name: a, kind: python, config: {callable: sleep, args: " + "[" * 3000 + "]" * 3000 + "}}",
     "nests deeper"),
])
def test_specs_no_database_stores_are_refused_with_their_line(agent, yaml_text, message):
    spec = "name: odd\nphases:\n" + yaml_text + "\n"
    api = agent.client.post("/api/v1/workspaces/acme/jobs", {"spec": spec}, content_type="application/json",
                            **agent.auth)
    assert api.status_code == 400 and message in str(api.json()["error"]["errors"]), api.content
    page = Client()
    page.force_login(__import__("django.contrib.auth", fromlist=["x"]).get_user_model().objects.get(
        username="operator"))
    form = page.post("/w/acme/jobs/new/", {"spec_text": spec})
    assert form.status_code == 200 and message in form.content.decode().replace("&quot;", '"')


@pytest.mark.django_db
@pytest.mark.parametrize("url", [
    "/w/acme/runs/?job=%00", "/w/acme/runs/?environment=%00", "/w/acme/sql/history/?q=%00",
    "/w/acme/sql/saved/?q=%00", "/w/acme/sql/?environment=%00", "/w/acme/sql/schema/?environment=%00",
])
def test_nul_in_a_query_or_form_is_a_400_on_every_page(agent, world, url):
    client = world.client("admin")
    assert client.get(url).status_code == 400
    posted = client.post("/w/acme/jobs/params/trigger/", {"environment": "dev\x00", "param_count": "1"})
    assert posted.status_code == 400 and not Run.objects.exists()
    api = client.get("/api/v1/ops/runs?status=%00")
    assert api.status_code == 400 and api.json()["error"]["code"] == "invalid"


@pytest.mark.django_db
def test_a_media_type_with_a_line_break_is_refused(agent, phase):
    answer = agent.post(f"/phases/{phase['phase']['id']}/artifacts", {
        "lease_token": phase["lease_token"], "name": "x.csv", "sha256": "a" * 64, "size": 3,
        "location": "s3://lake/x.csv", "media_type": "text/csv\n"})
    assert answer.status_code == 400 and "media_type" in answer.json()["error"]["message"]


@pytest.mark.django_db
def test_api_without_its_slash_is_json_too(agent):
    answer = agent.client.get("/api", **agent.auth)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_a_null_wait_is_the_default(agent):
    answer = agent.post("/claim", {"executor": "x", "kinds": ["python"], "wait": None})
    assert answer.status_code == 204
