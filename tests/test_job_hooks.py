"""Inbound job webhooks (runs/job_hooks.py, runs/services/job_hooks.py, runs/hook_views.py): a signed
URL per job and environment made on the job page (secret shown once), HMAC over
``<timestamp>.<body>``, a replay window and one use per signature, the body mapped to the job's
typed parameters with errors naming each, rotation, revocation, roles and the audit."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from controlroom.models import AuditEvent
from runs.models import JobHook, JobHookDelivery, Run, RunStatus
from runs.services.job_hooks import REPLAY_WINDOW_S, hook_signature, job_hook_secret
from runs.services.jobs import job_create
from tests.test_ide_api import NUMBERS

pytestmark = pytest.mark.django_db
HOOKS = "/w/acme/jobs/numbers/hooks/"


@pytest.fixture
def numbers(world):
    return job_create(access=world.access("operator"), spec_text=NUMBERS)


def make_hook(world, persona: str = "operator", environment: str = "dev") -> tuple[JobHook, str]:
    page = world.client(persona).post(HOOKS, {"action": "create", "environment": environment})
    assert page.status_code == 200, page.content
    return JobHook.objects.get(public_id=page.context["hook"].public_id), page.context["secret"]


def send(hook: JobHook, secret: str | None, payload, *, at: float | None = None, raw: bytes | None = None,
         headers: dict | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    stamp = str(int(time.time() if at is None else at))
    signed = {} if secret is None else {"HTTP_X_CONTROLROOM_TIMESTAMP": stamp,
                                         "HTTP_X_CONTROLROOM_SIGNATURE": hook_signature(secret, stamp, body)}
    return Client().post(f"/hooks/jobs/{hook.public_id}", body, content_type="application/json",
                         **{**signed, **(headers or {})})


def error(response) -> dict:
    return response.json()["error"]


def test_a_signed_delivery_starts_a_typed_run(world, numbers, eager_celery, django_capture_on_commit_callbacks):
    created = world.client("operator").post(HOOKS, {"action": "create", "environment": "dev"})
    secret = created.context["secret"]
    assert secret.startswith("crh_") and secret in created.content.decode()
    assert "no-cache" in created["Cache-Control"]
    hook = JobHook.objects.get()
    assert secret not in hook.secret_encrypted and job_hook_secret(hook) == secret and hook.role == "operator"
    job_page = world.client("operator").get("/w/acme/jobs/numbers/").content.decode()
    assert f"/hooks/jobs/{hook.public_id}" in job_page and secret not in job_page
    with django_capture_on_commit_callbacks(execute=True):
        answer = send(hook, secret, {"limit": "4", "label": "from n8n"})
    assert answer.status_code == 202, answer.content
    run = Run.objects.get(pk=answer.json()["run"])
    assert run.status == RunStatus.SUCCEEDED and run.parameters == {"limit": 4, "label": "from n8n"}
    assert run.environment.name == "dev" and run.created_by_label == f"hook:{hook.public_id[:8]}"
    assert answer.json()["console_url"] == f"http://testserver/w/acme/runs/{run.pk}/"
    delivered = AuditEvent.objects.get(action="job_hook.deliver")
    assert delivered.after["run"] == run.pk and delivered.actor_label == run.created_by_label
    assert AuditEvent.objects.filter(action="job_hook.create", target_id=str(hook.pk)).exists()
    hook.refresh_from_db()
    assert hook.last_used_at is not None


def test_signatures_timestamps_and_replays(world, numbers, django_capture_on_commit_callbacks):
    hook, secret = make_hook(world)
    assert error(send(hook, None, {}))["code"] == "bad_signature"
    assert send(hook, None, {}).status_code == 401
    assert send(hook, "crh_wrong", {}).status_code == 401
    tampered = send(hook, secret, {"limit": 1}, headers={"HTTP_X_CONTROLROOM_SIGNATURE": "v1=" + "0" * 64})
    assert tampered.status_code == 401
    assert send(hook, secret, {}, headers={"HTTP_X_CONTROLROOM_TIMESTAMP": "soon"}).status_code == 401
    stale = send(hook, secret, {}, at=time.time() - REPLAY_WINDOW_S - 5)
    assert stale.status_code == 400 and error(stale)["code"] == "stale_timestamp"
    assert send(hook, secret, {}, at=time.time() + REPLAY_WINDOW_S + 60).status_code == 400
    body, stamp = b'{"limit": 2}', str(int(time.time()))
    signed = {"HTTP_X_CONTROLROOM_TIMESTAMP": stamp,
              "HTTP_X_CONTROLROOM_SIGNATURE": hook_signature(secret, stamp, body)}
    with django_capture_on_commit_callbacks(execute=False):
        first = Client().post(f"/hooks/jobs/{hook.public_id}", body, content_type="application/json", **signed)
        again = Client().post(f"/hooks/jobs/{hook.public_id}", body, content_type="application/json", **signed)
    assert first.status_code == 202 and again.status_code == 409 and error(again)["code"] == "replayed"
    assert Run.objects.count() == 1 and JobHookDelivery.objects.get().run_id == first.json()["run"]
    unknown = Client().post("/hooks/jobs/nope", body, content_type="application/json", **signed)
    assert unknown.status_code == 404 and error(unknown)["code"] == "not_found"
    assert Client().get(f"/hooks/jobs/{hook.public_id}").status_code == 405


def test_the_body_must_fit_the_jobs_parameters(world, numbers):
    hook, secret = make_hook(world)
    unknown = send(hook, secret, {"limit": 2, "colour": "red"})
    assert unknown.status_code == 400 and error(unknown)["code"] == "invalid_parameters"
    assert error(unknown)["errors"] == ["unknown parameter 'colour'"]
    assert "numbers takes label (string), limit (integer)" in error(unknown)["message"]
    wrong = send(hook, secret, {"limit": "many"})
    assert wrong.status_code == 400 and "parameter limit must be an integer" in error(wrong)["errors"][0]
    assert send(hook, secret, {"limit": {"n": 1}}).status_code == 400
    assert error(send(hook, secret, None, raw=b"[1, 2]"))["code"] == "invalid"
    assert error(send(hook, secret, None, raw=b"{nope"))["message"] == "The request body is not valid JSON."
    assert not Run.objects.exists() and not JobHookDelivery.objects.exists()


def test_rotate_and_revoke(world, numbers, django_capture_on_commit_callbacks):
    hook, old = make_hook(world)
    rotated = world.client("operator").post(HOOKS, {"action": "rotate", "hook": hook.pk})
    new = rotated.context["secret"]
    assert rotated.status_code == 200 and new != old and rotated.context["hook"].public_id == hook.public_id
    assert send(hook, old, {}).status_code == 401
    with django_capture_on_commit_callbacks(execute=False):
        assert send(hook, new, {}).status_code == 202
    world.client("operator").post(HOOKS, {"action": "revoke", "hook": hook.pk})
    assert send(hook, new, {}).status_code == 404
    assert list(AuditEvent.objects.filter(target_type="jobhook").order_by("id").values_list("action", flat=True)) == [
        "job_hook.create", "job_hook.rotate", "job_hook.deliver", "job_hook.revoke"]
    assert "No webhooks." in world.client("operator").get("/w/acme/jobs/numbers/").content.decode()
    again, _ = make_hook(world)  # a revoked hook frees its environment; the new URL differs
    assert again.public_id != hook.public_id


def test_who_may_manage_hooks(world, numbers):
    for persona, status in [("viewer", 403), ("analyst", 403), ("outsider", 404)]:
        response = world.client(persona).post(HOOKS, {"action": "create", "environment": "dev"})
        assert response.status_code == status, persona
    anonymous = Client().post(HOOKS, {"action": "create", "environment": "dev"})
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert "Create webhook" not in world.client("viewer").get("/w/acme/jobs/numbers/").content.decode()
    assert "Create webhook" in world.client("operator").get("/w/acme/jobs/numbers/").content.decode()
    refused = world.client("operator").post(HOOKS, {"action": "create", "environment": "prod"}, follow=True)
    assert "Only workspace admins may start runs in prod" in refused.content.decode()
    make_hook(world)
    twice = world.client("operator").post(HOOKS, {"action": "create", "environment": "dev"}, follow=True)
    assert "already has a hook in dev" in twice.content.decode()
    prod, _ = make_hook(world, "admin", "prod")
    assert prod.role == "admin" and JobHook.objects.count() == 2
    # An operator may not rotate or revoke the prod hook either; another workspace's job is not found.
    assert "Only workspace admins" in world.client("operator").post(
        HOOKS, {"action": "revoke", "hook": prod.pk}, follow=True).content.decode()
    assert world.client("outsider").post("/w/other/jobs/numbers/hooks/", {"action": "create"}).status_code == 404


def test_a_prod_hook_runs_in_prod_as_its_makers_role(world, numbers, django_capture_on_commit_callbacks):
    hook, secret = make_hook(world, "admin", "prod")
    with django_capture_on_commit_callbacks(execute=False):
        answer = send(hook, secret, {"limit": 1})
    assert answer.status_code == 202 and answer.json()["environment"] == "prod"
    assert Run.objects.get().environment.name == "prod"
