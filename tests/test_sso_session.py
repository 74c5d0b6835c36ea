"""A long single sign-on session is re-checked at the IdP (controlroom/sso_session.py), against a
real OpenID Connect provider (node-oidc-provider, tests/oidc_server.py): a refused refresh grant
signs the person out (audited, with a page that says why, an htmx request redirected); an IdP
that cannot be reached leaves the session alone and tries again later; a session not yet due
costs no call. The refresh token is stored encrypted. The client secret can live in OpenBao and
is read at the moment of use (a rotation needs no restart)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlroom import sso
from controlroom.models import AuditEvent, SsoSession
from controlroom.sso_session import ENDED, RETRY_S, SESSION_KEY, _fernet
from tests.oidc_server import CLIENT_ID, CLIENT_SECRET
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def idp(settings, oidc_server):
    settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID = oidc_server.url, CLIENT_ID
    settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_CLIENT_SECRET_VAULT, settings.OIDC_SESSION_RECHECK_S = "", 300
    providers(settings, oidc_server.url, CLIENT_SECRET)
    sso._discovery.clear()
    yield oidc_server
    sso._discovery.clear()


def providers(settings, issuer: str, secret: str) -> None:
    settings.SOCIALACCOUNT_PROVIDERS = {"openid_connect": {"APPS": [{
        "provider_id": "idp", "name": "IdP", "client_id": CLIENT_ID, "secret": secret,
        "settings": {"server_url": issuer}}]}}


def sso_client(world, name: str, *, token: str, checked_ago_s: float):
    """A signed-in client whose session came through SSO with ``token`` as its refresh token."""
    client = world.client(name)
    row = SsoSession.objects.create(key=f"k-{name}", user=world.users[name], refresh_token=_fernet().encrypt(
        token.encode()).decode(), checked_at=timezone.now() - timedelta(seconds=checked_ago_s))
    session = client.session
    session[SESSION_KEY] = row.key
    session.save()
    return client, row


def test_a_refused_refresh_grant_signs_the_person_out(world, idp):
    client, row = sso_client(world, "analyst", token="revoked-or-unknown-token", checked_ago_s=301)
    response = client.get("/w/acme/")
    assert response.status_code == 302 and response.url == "/accounts/login/"
    assert not SsoSession.objects.filter(key=row.key).exists()
    assert "_auth_user_id" not in client.session
    ended = AuditEvent.objects.filter(action="auth.sso_session_ended").get()
    assert ended.actor_label == "analyst"
    assert ENDED in client.get("/accounts/login/").content.decode()  # the page says why
    assert client.get("/w/acme/").status_code == 302  # and stays signed out

    htmx, _ = sso_client(world, "operator", token="another-unknown-token", checked_ago_s=301)
    response = htmx.get("/w/acme/runs/", headers={"HX-Request": "true"})
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/accounts/login/"


def test_a_session_not_yet_due_is_not_checked(world, idp, settings):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"  # nobody there: a call would fail
    client, row = sso_client(world, "analyst", token="whatever", checked_ago_s=10)
    assert client.get("/w/acme/").status_code == 200
    row.refresh_from_db()
    assert timezone.now() - row.checked_at > timedelta(seconds=9)  # untouched


def test_an_unreachable_idp_keeps_the_session_and_tries_again_later(world, idp, settings, caplog):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    client, row = sso_client(world, "analyst", token="whatever", checked_ago_s=3600)
    assert client.get("/w/acme/").status_code == 200
    row.refresh_from_db()
    next_try = row.checked_at + timedelta(seconds=300) - timezone.now()
    assert timedelta(seconds=RETRY_S - 5) < next_try <= timedelta(seconds=RETRY_S)
    assert "could not be re-checked" in caplog.text
    assert not AuditEvent.objects.filter(action="auth.sso_session_ended").exists()


def test_a_wrong_client_secret_is_our_fault_not_the_users(world, idp, settings):
    providers(settings, idp.url, "not-the-secret")  # the IdP answers invalid_client, not invalid_grant
    client, _ = sso_client(world, "analyst", token="whatever", checked_ago_s=3600)
    assert client.get("/w/acme/").status_code == 200


def test_a_session_whose_record_is_gone_is_signed_out(world, idp):
    client, row = sso_client(world, "analyst", token="t", checked_ago_s=0)
    row.delete()  # signed out elsewhere, or the record was purged
    assert client.get("/w/acme/").status_code == 302


def test_the_refresh_token_is_stored_encrypted(world, idp):
    _, row = sso_client(world, "analyst", token="plain-refresh-token-value", checked_ago_s=0)
    row.refresh_from_db()
    assert "plain-refresh-token-value" not in row.refresh_token
    assert _fernet().decrypt(row.refresh_token.encode()) == b"plain-refresh-token-value"


def test_the_client_secret_is_read_from_openbao_at_each_use(world, idp, settings, openbao_server):
    from connections.vault import vault_forget

    settings.VAULT_ADDR, settings.VAULT_TOKEN, settings.SECRET_CACHE_S = openbao_server.url, \
        openbao_server.root_token, 0
    settings.VAULT_ROLE_ID = settings.VAULT_SECRET_ID = settings.VAULT_SECRET_ID_FILE = ""
    providers(settings, idp.url, "")
    settings.OIDC_CLIENT_SECRET, settings.OIDC_CLIENT_SECRET_VAULT = "", "controlroom/oidc#client_secret"
    vault_forget()
    openbao_server.put_secret("controlroom/oidc", {"client_secret": "first-secret"})
    adapter = sso.SsoAdapter()
    assert [a.secret for a in adapter.list_apps(None, provider="idp")] == ["first-secret"]
    openbao_server.put_secret("controlroom/oidc", {"client_secret": CLIENT_SECRET})  # rotated
    assert adapter.get_app(None, "idp").secret == CLIENT_SECRET  # no restart

    # The re-check authenticates with it too: the IdP then judges the grant, not the client.
    client, _ = sso_client(world, "analyst", token="unknown-token", checked_ago_s=3600)
    assert client.get("/w/acme/").status_code == 302  # invalid_grant: the secret was right

    settings.OIDC_CLIENT_SECRET_VAULT = "controlroom/nothing-here#client_secret"
    with pytest.raises(LookupError) as failed:
        sso.client_secret()
    assert "controlroom/nothing-here#client_secret" in str(failed.value) and CLIENT_SECRET not in str(failed.value)
    vault_forget()
