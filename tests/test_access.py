"""One authorization path: outsiders get 404, members below the role get 403."""

import pytest
from django.test import Client
from django.urls import reverse

from controlroom.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db

PAGES = [
    ("runs:job_list", {}, "viewer"),
    ("runs:overview", {}, "viewer"),
    ("runs:run_list", {}, "viewer"),
    ("artifacts:list", {}, "viewer"),
    ("sqlwarehouse:saved", {}, "viewer"),
    ("sqlwarehouse:editor", {}, "analyst"),
    ("sqlwarehouse:history", {}, "analyst"),
    ("runs:job_new", {}, "operator"),
    ("token_list", {}, "admin"),
    ("workspace_admin:members", {}, "admin"),
    ("workspace_admin:audit", {}, "admin"),
    ("workspace_admin:audit_export", {}, "admin"),
    ("workspace_admin:settings", {}, "admin"),
    ("workspace_admin:connections", {}, "admin"),
    ("workspace_admin:connection_new", {"kind": "trino"}, "admin"),
    ("workspace_admin:secrets", {}, "admin"),
]
ORDER = ["viewer", "analyst", "operator", "admin"]
# Pages of one run (kwargs get its run_id): the run page, its log fragments and the log download.
RUN_PAGES = [
    ("runs:run_detail", "", "viewer"),
    ("runs:run_log", "?after=0", "viewer"),
    ("runs:run_log", "?before=2", "viewer"),
    ("runs:run_log_download", "", "viewer"),
    ("runs:run_log_download", "?phase=a&attempt=1", "viewer"),
]


@pytest.mark.parametrize(("name", "kwargs", "minimum"), PAGES)
def test_every_page_by_persona(world, name, kwargs, minimum):
    url = reverse(name, kwargs={"workspace": "acme", **kwargs})
    for persona in ORDER:
        expected = 200 if ORDER.index(persona) >= ORDER.index(minimum) else 403
        assert world.client(persona).get(url).status_code == expected, (persona, url)
    assert world.client("outsider").get(url).status_code == 404
    response = Client().get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(("name", "query", "minimum"), RUN_PAGES)
def test_every_run_page_by_persona(world, django_capture_on_commit_callbacks, name, query, minimum):
    from runs.services.jobs import job_create
    from runs.services.runs import run_create
    from tests.test_contract import DIAMOND

    job = job_create(access=world.access("operator"), spec_text=DIAMOND)
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    url = reverse(name, kwargs={"workspace": "acme", "run_id": run.pk}) + query
    for persona in ORDER:
        expected = 200 if ORDER.index(persona) >= ORDER.index(minimum) else 403
        assert world.client(persona).get(url).status_code == expected, (persona, url)
    assert world.client("outsider").get(url).status_code == 404
    response = Client().get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_objects_of_another_workspace_are_404(world, demo_job):
    other_job_url = reverse("runs:job_detail", kwargs={"workspace": "other", "job": "medallion"})
    assert world.client("admin").get(other_job_url).status_code == 404
    own = reverse("runs:job_detail", kwargs={"workspace": "acme", "job": "medallion"})
    assert world.client("viewer").get(own).status_code == 200
    assert world.client("outsider").get(own).status_code == 404


def test_token_is_shown_once_and_stored_hashed(world):
    client = world.client("admin")
    response = client.post(reverse("token_list", kwargs={"workspace": "acme"}), {"name": "ci", "role": "operator",
                                                                                  "scopes": ["runs:read"]})
    value = response.context["new_value"]
    assert value.startswith("crt_") and value in response.content.decode()
    token = ApiToken.objects.get(name="ci")
    assert value not in (token.token_hash, token.prefix) and len(token.token_hash) == 64
    assert value not in client.get(reverse("token_list", kwargs={"workspace": "acme"})).content.decode()
    assert AuditEvent.objects.filter(action="api_token.create", target_id=str(token.pk)).exists()


def test_api_token_scope_role_and_revocation(world, demo_job):
    url = "/api/v1/workspaces/acme/jobs"
    viewer = world.token("viewer")
    assert world.client("viewer").get(url).status_code == 401  # a session is not a token
    response = world.client("viewer").get(url, HTTP_AUTHORIZATION=f"Bearer {viewer}")
    assert response.status_code == 200 and response.json()["jobs"][0]["slug"] == "medallion"
    denied = world.client("viewer").post(f"{url}/medallion/runs", {}, content_type="application/json",
                                         HTTP_AUTHORIZATION=f"Bearer {viewer}")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    wrong_ws = world.client("viewer").get("/api/v1/workspaces/other/jobs", HTTP_AUTHORIZATION=f"Bearer {viewer}")
    assert wrong_ws.status_code == 404
    token = ApiToken.objects.get(role="viewer")
    world.client("admin").post(reverse("token_list", kwargs={"workspace": "acme"}), {"revoke": token.pk})
    revoked = world.client("viewer").get(url, HTTP_AUTHORIZATION=f"Bearer {viewer}")
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "unauthenticated"


def test_login_page_and_signup_closed(db):
    assert Client().get("/accounts/login/").status_code == 200
    signup = Client().get("/accounts/signup/")
    assert b"Sign Up Closed" in signup.content or signup.status_code in (403, 404)
