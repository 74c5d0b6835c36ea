"""Sign-ins, failed sign-ins and sign-outs through the real allauth pages reach the platform's
audit chain, with the request id, address and user agent, and never the password."""

import json

import pytest
from django.test import Client

from controlroom.audit import audit_verify
from controlroom.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
AGENT = "Mozilla/5.0 " + "x" * 500


def test_login_is_audited_on_the_platform_chain(world):
    client = Client(HTTP_USER_AGENT=AGENT)
    response = client.post("/accounts/login/", {"login": "admin", "password": PASSWORD}, HTTP_X_REQUEST_ID="rid-login")
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="auth.login")
    assert event.workspace is None and event.actor_user_id == world.users["admin"].pk and event.actor_label == "admin"
    assert event.request_id == "rid-login" and event.ip == "127.0.0.1"
    assert event.after["username"] == "admin" and event.after["user_agent"] == AGENT[:200]
    assert PASSWORD not in json.dumps(event.after)
    assert audit_verify(workspace=None).ok


def test_failed_login_records_the_username_tried_and_never_the_password(world):
    response = Client().post("/accounts/login/", {"login": "admin", "password": "wrong-guess-123"},
                             HTTP_X_REQUEST_ID="rid-fail")
    assert response.status_code == 200  # the form again, with its error
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.actor_user_id is None and event.actor_label == "anonymous" and event.workspace is None
    assert event.after["username"] == "admin" and event.request_id == "rid-fail"
    assert "wrong-guess-123" not in json.dumps([event.before, event.after, event.target_id])
    assert not AuditEvent.objects.filter(action="auth.login").exists()
    assert audit_verify(workspace=None).ok


def test_logout_is_audited(world):
    Client().post("/accounts/logout/")  # an anonymous visitor: nothing changed, nothing recorded
    client = Client()
    assert client.login(username="viewer", password=PASSWORD)
    assert client.post("/accounts/logout/").status_code == 302
    event = AuditEvent.objects.get(action="auth.logout")
    assert event.actor_user_id == world.users["viewer"].pk and event.workspace is None
    assert "_auth_user_id" not in client.session
    assert audit_verify(workspace=None).ok
