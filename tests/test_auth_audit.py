"""Sign-ins, failed sign-ins, sign-outs and changes to one's own account (password changed, set or
reset, e-mail addresses) through the real allauth pages reach the platform's audit chain, with
the request id, the client's address (behind our proxies too) and user agent, and never the
password."""

import json
import re

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client, RequestFactory

from controlroom.audit import audit_verify
from controlroom.models import AuditEvent
from controlroom.request_id import client_ip
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


NEW_PASSWORD = "a-new-and-longer-passphrase-42"


def assert_account_event(action: str, user, request_id: str):
    event = AuditEvent.objects.get(action=action)
    assert event.workspace is None and event.actor_user_id == user.pk and event.actor_label == user.username
    assert event.target_type == "user" and event.target_id == str(user.pk)
    assert event.request_id == request_id and event.ip == "127.0.0.1"
    assert PASSWORD not in json.dumps(event.after) and NEW_PASSWORD not in json.dumps(event.after)
    assert audit_verify(workspace=None).ok
    return event


@pytest.fixture
def fresh_cache():
    cache.clear()  # allauth's rate limits count in the shared cache, which outlives a test
    yield
    cache.clear()


def test_a_password_change_is_audited(world, fresh_cache):
    client = world.client("analyst")
    response = client.post("/accounts/password/change/", {
        "oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}, HTTP_X_REQUEST_ID="rid-pw")
    assert response.status_code == 302
    assert_account_event("auth.password_change", world.users["analyst"], "rid-pw")
    assert Client().login(username="analyst", password=NEW_PASSWORD)


def test_a_password_reset_through_the_mailed_link_is_audited(world, fresh_cache):
    user = world.users["viewer"]
    user.email = "viewer@example.com"
    user.save()
    assert Client().post("/accounts/password/reset/", {"email": user.email}).status_code == 302
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", mail.outbox[0].body).group(1)
    client = Client()
    form = client.get(link)
    assert form.status_code == 302
    done = client.post(form["Location"], {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
                       HTTP_X_REQUEST_ID="rid-reset")
    assert done.status_code == 302
    event = assert_account_event("auth.password_reset", user, "rid-reset")
    assert link.split("/")[-2] not in json.dumps(event.after)  # nor the reset key


def test_setting_a_first_password_is_audited(world, fresh_cache):
    user = world.users["viewer"]
    user.set_unusable_password()
    user.save()
    client = Client()
    client.force_login(user)
    response = client.post("/accounts/password/set/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
                           HTTP_X_REQUEST_ID="rid-set")
    assert response.status_code == 302
    assert_account_event("auth.password_set", user, "rid-set")


def test_e_mail_addresses_added_made_primary_and_removed_are_audited(world, fresh_cache):
    user = world.users["operator"]
    client = world.client("operator")
    for address in ("first@example.com", "second@example.com"):
        assert client.post("/accounts/email/", {"action_add": "", "email": address},
                           HTTP_X_REQUEST_ID="rid-add").status_code == 302
    added = AuditEvent.objects.filter(action="auth.email_add").order_by("id")
    assert [e.after["email"] for e in added] == ["first@example.com", "second@example.com"]
    assert all(e.actor_user_id == user.pk and e.request_id == "rid-add" for e in added)
    for address in ("first@example.com", "second@example.com"):
        assert client.post("/accounts/email/", {"action_primary": "", "email": address},
                           HTTP_X_REQUEST_ID="rid-primary").status_code == 302
    changed = AuditEvent.objects.filter(action="auth.email_change").order_by("id")
    assert [(e.after["from_email"], e.after["to_email"]) for e in changed] == [
        ("", "first@example.com"), ("first@example.com", "second@example.com")]
    assert all(e.actor_user_id == user.pk and e.request_id == "rid-primary" for e in changed)
    assert client.post("/accounts/email/", {"action_remove": "", "email": "first@example.com"},
                       HTTP_X_REQUEST_ID="rid-remove").status_code == 302
    removed = assert_account_event("auth.email_remove", user, "rid-remove")
    assert removed.after["email"] == "first@example.com"


def test_an_ipv6_address_with_a_scope_is_hashed_as_stored(world):
    Client().post("/accounts/login/", {"login": "admin", "password": "wrong-guess-123"}, REMOTE_ADDR="fe80::1%eth0")
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.ip == "fe80::1"
    assert audit_verify(workspace=None).ok


def test_the_client_address_behind_trusted_proxies(world, settings, fresh_cache):
    # The client forged the first entry; each of our proxies appended the address it saw.
    for proxies in (0, 1, 2):
        settings.ALLAUTH_TRUSTED_PROXY_COUNT = proxies
        Client().post("/accounts/login/", {"login": "admin", "password": "wrong-guess-123"}, REMOTE_ADDR="10.0.0.2",
                      HTTP_X_FORWARDED_FOR="192.0.2.66, 203.0.113.9, 198.51.100.7")
    failures = AuditEvent.objects.filter(action="auth.login_failed").order_by("id")
    assert [event.ip for event in failures] == ["10.0.0.2", "198.51.100.7", "203.0.113.9"]
    assert audit_verify(workspace=None).ok


def test_the_client_address_read_as_allauth_reads_it(settings):
    def seen(forwarded: str, remote: str = "10.0.0.2") -> str | None:
        return client_ip(RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded))

    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 2
    assert seen("192.0.2.66, [2001:db8::7]:4711, 198.51.100.7") == "2001:db8::7"  # a port goes
    assert seen(" 203.0.113.9:80 ,198.51.100.7") == "203.0.113.9"
    assert seen("198.51.100.7") == "10.0.0.2"  # shorter than the proxies: it did not come through them
    assert seen("not-an-address, 198.51.100.7") is None
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 0
    assert seen("203.0.113.9") == "10.0.0.2" and seen("", remote="") is None
