"""Jobs from the UI and the API: immutable versions, clear errors, no half-created rows."""

import pytest

from controlroom.models import AuditEvent
from runs.models import Job, JobVersion
from tests.conftest import DEMO_SPEC

pytestmark = pytest.mark.django_db
API = "/api/v1/workspaces/acme"


def test_create_and_edit_from_the_ui_keeps_every_version(world):
    client = world.client("operator")
    response = client.post("/w/acme/jobs/new/", {"spec_text": DEMO_SPEC, "git_repo": "git@example.org:d/j.git",
                                                 "git_sha": "ABCDEF1", "git_path": "jobs/m.yaml"})
    assert response.status_code == 302 and response["Location"] == "/w/acme/jobs/medallion/"
    job = Job.objects.get(slug="medallion")
    v1 = job.current_version
    assert (v1.number, v1.git_sha, v1.git_path) == (1, "abcdef1", "jobs/m.yaml")
    edited = DEMO_SPEC.replace("default: 0", "default: 5")
    client.post("/w/acme/jobs/medallion/edit/", {"spec_text": edited})
    job.refresh_from_db()
    assert job.current_version.number == 2 and job.current_version.spec["parameters"]["min_amount"]["default"] == 5
    v1.refresh_from_db()
    assert v1.spec["parameters"]["min_amount"]["default"] == 0  # the old version is untouched
    with pytest.raises(ValueError, match="immutable"):
        v1.save()
    # Saving the same text again is not a new version.
    response = client.post("/w/acme/jobs/medallion/edit/", {"spec_text": edited}, follow=True)
    assert "No changes to save." in response.content.decode() and job.versions.count() == 2
    page = client.get("/w/acme/jobs/medallion/").content.decode()
    assert "v2" in page and "abcdef1" in page


def test_bad_spec_in_the_ui_shows_the_line_and_creates_nothing(world):
    response = world.client("operator").post("/w/acme/jobs/new/", {"spec_text": DEMO_SPEC.replace("kind: python",
                                                                                                   "kind: spark2")})
    assert response.status_code == 200
    assert "line 47, phases[3].kind: unknown phase kind &#x27;spark2&#x27;" in response.content.decode()
    assert not Job.objects.exists() and not JobVersion.objects.exists()
    assert not AuditEvent.objects.filter(action="job.create").exists()


def test_analyst_cannot_create_jobs(world):
    assert world.client("analyst").post("/w/acme/jobs/new/", {"spec_text": DEMO_SPEC}).status_code == 403
    assert not Job.objects.exists()


def test_api_create_update_and_errors(world):
    client, auth = world.client("viewer"), {"HTTP_AUTHORIZATION": f"Bearer {world.token('operator')}"}
    created = client.post(f"{API}/jobs", {"spec": DEMO_SPEC, "git_sha": "b" * 40}, content_type="application/json",
                          **auth)
    assert created.status_code == 201 and created.json()["current_version"]["number"] == 1
    again = client.post(f"{API}/jobs", {"spec": DEMO_SPEC}, content_type="application/json", **auth)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    bad = client.put(f"{API}/jobs/medallion", {"spec": "name: medallion\nphases: []\n"},
                     content_type="application/json", **auth)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_spec"
    assert bad.json()["error"]["errors"] == ["line 2, phases: [] should be non-empty"]
    updated = client.put(f"{API}/jobs/medallion", {"spec": DEMO_SPEC.replace("default: 0", "default: 1")},
                         content_type="application/json", **auth)
    assert updated.status_code == 201 and updated.json()["current_version"]["number"] == 2
    not_json = client.post(f"{API}/jobs", "{nope", content_type="application/json", **auth)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    bad_sha = client.post(f"{API}/jobs", {"spec": DEMO_SPEC.replace("name: medallion", "name: other"),
                                          "git_sha": "zzz"}, content_type="application/json", **auth)
    assert bad_sha.status_code == 400 and "git sha" in bad_sha.json()["error"]["message"]
    assert Job.objects.count() == 1 and JobVersion.objects.count() == 2
    missing = client.get(f"{API}/jobs/nope", **auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
