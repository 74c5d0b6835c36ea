"""The audit log: same transaction as the change, hash-chained, carrying the request id."""

import contextlib
import json
import logging
from collections.abc import Iterator

import pytest
from django.db import transaction
from django.http import HttpResponse
from django.test import RequestFactory

from controlroom.audit import audit_record, audit_verify_chain
from controlroom.logging_json import JsonFormatter
from controlroom.models import AuditEvent
from controlroom.request_id import RequestIdMiddleware
from controlroom.services import workspace_create
from runs.models import Job
from runs.services.jobs import job_create
from runs.spec import SpecError
from tests.conftest import DEMO_SPEC

pytestmark = pytest.mark.django_db


def test_chain_verifies_and_detects_tampering(world, demo_job):
    assert AuditEvent.objects.filter(workspace=world.workspace).count() >= 2
    assert audit_verify_chain(workspace=world.workspace) is None
    victim = AuditEvent.objects.filter(workspace=world.workspace, action="job.create").get()
    AuditEvent.objects.filter(pk=victim.pk).update(actor_label="mallory")
    assert audit_verify_chain(workspace=world.workspace) == victim.pk


def test_deleting_an_event_breaks_the_chain(world, demo_job):
    first = AuditEvent.objects.filter(workspace=world.workspace).order_by("id").first()
    AuditEvent.objects.filter(pk=first.pk).delete()
    assert audit_verify_chain(workspace=world.workspace) is not None


@pytest.mark.django_db(transaction=True)
def test_audit_outside_a_transaction_is_refused(world):
    with pytest.raises(RuntimeError, match=r"inside transaction\.atomic"):
        audit_record(access=world.access("admin"), action="x", target=world.workspace)


def test_failed_change_leaves_neither_rows_nor_audit(world):
    before = AuditEvent.objects.count()
    with pytest.raises(SpecError):
        job_create(access=world.access("operator"), spec_text=DEMO_SPEC.replace("kind: python", "kind: nope"))
    assert AuditEvent.objects.count() == before and not Job.objects.exists()


def test_rolled_back_transaction_takes_its_audit_event_with_it(db):
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        workspace_create(name="Ghost")
        1 / 0  # noqa: B018
    assert not AuditEvent.objects.filter(action="workspace.create").exists()


def test_request_id_round_trip_and_reaches_audit(world):
    client = world.client("operator")
    response = client.post("/w/acme/jobs/new/", {"spec_text": DEMO_SPEC}, HTTP_X_REQUEST_ID="req-abc.123")
    assert response.status_code == 302 and response["X-Request-ID"] == "req-abc.123"
    event = AuditEvent.objects.get(action="job.create")
    assert event.request_id == "req-abc.123" and event.actor_label == "operator" and event.ip == "127.0.0.1"
    minted = client.get("/w/acme/jobs/", HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"]
    assert minted != "bad id with spaces" and len(minted) == 32


@contextlib.contextmanager
def json_lines(logger_name: str) -> Iterator[list[dict]]:
    """Collect what ``logger_name`` logs, formatted at emit time by the JSON formatter."""
    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def test_json_log_lines_carry_the_request_id(world):
    logger = logging.getLogger("controlroom.test")

    def view(request):
        logger.warning("inside the view", extra={"run_id": 7})
        return HttpResponse("ok")

    with json_lines("controlroom.test") as lines:
        RequestIdMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="rid-42"))
    line = lines[-1]
    assert line["request_id"] == "rid-42" and line["message"] == "inside the view" and line["run_id"] == 7


def test_django_error_log_lines_carry_the_request_id(world):
    with json_lines("django.request") as lines:
        response = world.client("outsider").get("/w/acme/jobs/", HTTP_X_REQUEST_ID="rid-404")
    assert response.status_code == 404
    assert lines[-1]["request_id"] == "rid-404" and lines[-1]["status_code"] == 404
