"""Blobs are stored once but seen per workspace: another workspace's hash is neither usable nor
observable, and a location registration never shadows uploaded bytes."""

import hashlib
import io

import pytest

from artifacts.models import Artifact, Blob, BlobGrant
from artifacts.storage import get_store
from controlroom.access import system_access
from controlroom.models import AuditEvent
from controlroom.services import api_token_create
from runs.services.jobs import job_create
from tests.test_contract import DIAMOND, OPS, Agent

pytestmark = pytest.mark.django_db
SECRET = b"acme,quarterly-revenue\nsecret,42\n"
SHA = hashlib.sha256(SECRET).hexdigest()


class Phase:
    """A claimed phase of one workspace's agent: registers artifacts under its lease."""

    def __init__(self, agent: Agent, capture) -> None:
        with capture(execute=False):
            agent.post("/runs", {"job": "diamond"})
        self.agent, self.claim = agent, agent.claim().json()
        self.url = f"/phases/{self.claim['phase']['id']}/artifacts"

    def by_hash(self, **fields):
        body = {"lease_token": self.claim["lease_token"], "name": "x.csv", "sha256": SHA, "size": len(SECRET),
                "media_type": "text/csv", **fields}
        return self.agent.post(self.url, body)

    def upload(self, data: bytes = SECRET, **fields):
        body = {"name": "x.csv", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                "media_type": "text/csv", "file": io.BytesIO(data), **fields}
        return self.agent.client.post(f"{OPS}{self.url}", body, **self.agent.auth,
                                      HTTP_X_LEASE_TOKEN=self.claim["lease_token"])


@pytest.fixture
def acme(world, django_capture_on_commit_callbacks) -> Phase:
    job_create(access=world.access("operator"), spec_text=DIAMOND)
    return Phase(Agent(world.token("operator")), django_capture_on_commit_callbacks)


@pytest.fixture
def hostile(world, django_capture_on_commit_callbacks) -> Phase:
    job_create(access=system_access(world.other), spec_text=DIAMOND)
    _, token = api_token_create(access=system_access(world.other), name="evil", role="operator")
    return Phase(Agent(token, name="evil"), django_capture_on_commit_callbacks)


def test_a_hash_alone_does_not_reach_another_workspaces_blob(acme, hostile, world):
    assert acme.upload().status_code == 201
    stolen = hostile.by_hash()
    unknown = hostile.by_hash(sha256="d" * 64)
    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json()["error"]["message"] == unknown.json()["error"]["message"]
    # A wrong size answers exactly as an unknown hash: no oracle for the real size.
    wrong = hostile.by_hash(size=1)
    assert (wrong.status_code, wrong.json()["error"]["message"]) == (404, unknown.json()["error"]["message"])
    assert not Artifact.objects.filter(workspace=world.other).exists()
    assert not BlobGrant.objects.filter(workspace=world.other).exists()
    # Nothing of theirs to download either.
    assert world.client("outsider").get(f"/w/other/artifacts/{Artifact.objects.get().pk}/download").status_code == 404


def test_the_owner_reuses_its_blob_by_hash_and_sees_its_real_size(acme, world):
    assert acme.upload().status_code == 201
    again = acme.by_hash(name="again.csv")
    assert again.status_code == 201 and again.json()["location"] == ""
    mismatch = acme.by_hash(name="bad.csv", size=len(SECRET) + 1)
    assert mismatch.status_code == 409 and str(len(SECRET)) in mismatch.json()["error"]["message"]
    audited = AuditEvent.objects.filter(workspace=world.workspace, action="artifact.register").order_by("id")
    assert [(e.after["name"], e.after["sha256"], e.after["size"], e.actor_label) for e in audited] == [
        ("x.csv", SHA, len(SECRET), "token:ci-operator"), ("again.csv", SHA, len(SECRET), "token:ci-operator")]


def test_a_foreign_location_never_shadows_uploaded_bytes(acme, hostile, world):
    squat = hostile.by_hash(location="s3://evil/bucket/x.csv", size=7)
    assert squat.status_code == 201 and squat.json()["location"] == "s3://evil/bucket/x.csv"
    assert not Blob.objects.exists()  # a claim about bytes elsewhere makes no shared blob
    uploaded = acme.upload()
    assert uploaded.status_code == 201 and uploaded.json()["location"] == "" and uploaded.json()["size"] == len(SECRET)
    mine = Artifact.objects.get(workspace=world.workspace)
    download = world.client("viewer").get(f"/w/acme/artifacts/{mine.pk}/download")
    assert download.status_code == 200 and b"".join(download.streaming_content) == SECRET
    # The squatter's artifact still says "elsewhere" and serves none of acme's bytes.
    theirs = Artifact.objects.get(workspace=world.other)
    assert not theirs.stored and theirs.size == 7
    assert world.client("outsider").get(f"/w/other/artifacts/{theirs.pk}/download").status_code == 404


def test_uploading_the_same_bytes_gives_each_workspace_its_own_grant_and_one_copy(acme, hostile, world):
    assert acme.upload().status_code == 201 and hostile.upload().status_code == 201
    assert Blob.objects.count() == 1 and BlobGrant.objects.count() == 2
    files = [p for p in (get_store().root / "sha256").rglob("*") if p.is_file()]
    assert len(files) == 1
    assert hostile.by_hash(name="reuse.csv").status_code == 201  # now it is theirs too


def test_a_query_result_is_granted_to_its_workspace_only(world):
    from connections.models import Connection
    from sqlwarehouse.execution import query_execute, query_submit

    conn = Connection.objects.get(workspace=world.workspace, name="warehouse")
    execution = query_submit(access=world.access("analyst"), connection=conn, sql="SELECT 42 AS answer")
    query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    assert BlobGrant.objects.filter(workspace=world.workspace, blob=execution.result).exists()
    assert not BlobGrant.objects.filter(workspace=world.other).exists()


@pytest.mark.parametrize("media_type", ["text/javascript", "application/javascript", "text/html",
                                        "image/svg+xml", "application/xhtml+xml"])
def test_an_artifact_a_browser_could_run_downloads_as_inert_bytes(acme, world, media_type):
    script = b"alert(document.cookie)"
    assert acme.upload(script, name="x.js", media_type=media_type).status_code == 201
    download = world.client("viewer").get(f"/w/acme/artifacts/{Artifact.objects.get().pk}/download")
    assert download.status_code == 200 and download["Content-Type"] == "application/octet-stream"
    assert download["Content-Security-Policy"].startswith("sandbox") and download["X-Content-Type-Options"] == "nosniff"


def test_a_plain_artifact_keeps_its_type(acme, world):
    assert acme.upload(media_type="text/csv").status_code == 201
    download = world.client("viewer").get(f"/w/acme/artifacts/{Artifact.objects.get().pk}/download")
    assert download["Content-Type"] == "text/csv"
