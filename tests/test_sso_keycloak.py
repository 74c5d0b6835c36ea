"""Single sign-on in Chromium through Keycloak (the real server, from Maven, on loopback:
tests/keycloak_server.py), with the client secret read from OpenBao at the moment of use: the user
lands in the workspace their Keycloak group maps to with the mapped role; a group change in
Keycloak changes the role at the next sign-in; a user disabled in Keycloak is signed out at the
next re-check of their session; SSO-only mode refuses a local password. Runs once per ``make
test`` (the PostgreSQL pass), as the other engine-heavy tests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from connections.vault import vault_forget
from controlroom import sso
from controlroom.models import AuditEvent, IdpGroupMapping, Membership, SsoSession
from controlroom.sso_session import ENDED
from tests.chromium import chromium, orm, shot
from tests.keycloak_server import CLIENT_ID, KEYCLOAK_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]
PASSWORD = "kc-Password-for-tests-1"


@pytest.fixture
def keycloak(settings, keycloak_server, openbao_server, world):
    settings.VAULT_ADDR, settings.VAULT_TOKEN, settings.SECRET_CACHE_S = openbao_server.url, \
        openbao_server.root_token, 0
    settings.VAULT_ROLE_ID = settings.VAULT_SECRET_ID = settings.VAULT_SECRET_ID_FILE = ""
    openbao_server.put_secret("controlroom/oidc", {"client_secret": KEYCLOAK_SECRET})
    vault_forget()
    settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID = keycloak_server.issuer, CLIENT_ID
    settings.OIDC_CLIENT_SECRET, settings.OIDC_CLIENT_SECRET_VAULT = "", "controlroom/oidc#client_secret"
    settings.SOCIALACCOUNT_PROVIDERS = {"openid_connect": {
        "OAUTH_PKCE_ENABLED": True, "SCOPE": ["openid", "profile", "email"],  # groups: the client's own mapper
        "APPS": [{"provider_id": "idp", "name": "Keycloak", "client_id": CLIENT_ID, "secret": "",
                  "settings": {"server_url": keycloak_server.issuer}}]}}
    sso._discovery.clear()
    IdpGroupMapping.objects.create(workspace=world.workspace, group="data-analysts", role="analyst")
    IdpGroupMapping.objects.create(workspace=world.workspace, group="data-ops", role="operator")
    yield keycloak_server
    sso._discovery.clear()
    vault_forget()


def sign_in(page: Page, base: str, username: str, issuer: str) -> None:
    page.goto(base + "/accounts/login/")
    page.locator("#sso-login").click()
    page.wait_for_url(lambda url: url.startswith(issuer), timeout=30_000)  # Keycloak's login form
    page.locator("#username").fill(username)
    page.locator("#password").fill(PASSWORD)
    page.locator("#kc-login").click()


def test_keycloak_sign_in_groups_roles_disable_and_sso_only(keycloak, live_server, settings, world):
    keycloak.add_user("kim", PASSWORD, ["data-analysts"])
    base = live_server.url
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
        sign_in(page, base, "kim", keycloak.issuer)
        shot(page, "kc-1-after-login")
        page.wait_for_url(f"{base}/w/acme/", timeout=30_000)
        kim = orm(lambda: Membership.objects.select_related("user").get(user__username="kim"))
        assert (kim.role, kim.source) == ("analyst", "idp")
        uid = orm(lambda: kim.user.socialaccount_set.get().uid)
        assert uid != "kim" and len(uid) >= 32  # keyed by Keycloak's subject (a UUID), not a name or e-mail

        # An admin moves kim to data-ops in Keycloak; at her next sign-in she is an operator.
        keycloak.set_groups("kim", ["data-ops"])
        page.goto(base + "/accounts/logout/")
        page.locator('button[type="submit"]').first.click()
        page.wait_for_url(lambda url: url.startswith(keycloak.url), timeout=30_000)  # RP-initiated logout
        shot(page, "kc-2-keycloak-logout")
        page.locator("#kc-logout").click()
        page.wait_for_url(f"{base}/accounts/login/", timeout=30_000)
        sign_in(page, base, "kim", keycloak.issuer)
        page.wait_for_url(f"{base}/w/acme/", timeout=30_000)
        kim = orm(lambda: Membership.objects.get(user__username="kim"))
        assert kim.role == "operator"
        shot(page, "kc-3-operator")

        # Disabled in Keycloak: her session here ends at its next re-check.
        keycloak.set_enabled("kim", False)
        orm(lambda: SsoSession.objects.update(checked_at=timezone.now() - timedelta(hours=1)))
        page.goto(base + "/w/acme/jobs/")
        page.wait_for_url(lambda url: "/accounts/login/" in url, timeout=30_000)
        expect(page.locator("body")).to_contain_text(ENDED)
        assert orm(lambda: AuditEvent.objects.filter(action="auth.sso_session_ended", actor_label="kim").exists())
        page.locator("#sso-login").click()  # and Keycloak refuses her a new one
        page.locator("#username").fill("kim")
        page.locator("#password").fill(PASSWORD)
        page.locator("#kc-login").click()
        expect(page.locator("body")).to_contain_text("disabled", timeout=30_000)
        shot(page, "kc-4-disabled")

        # SSO-only: the login page offers Keycloak only, and a local password is refused.
        settings.SSO_ONLY, settings.SSO_BREAK_GLASS_USER = True, "admin"
        local = world.users["analyst"]
        local.set_password(PASSWORD)
        orm(local.save)
        other = browser.new_context().new_page()
        other.goto(base + "/accounts/login/")
        expect(other.locator("#sso-login")).to_have_text("Sign in with Keycloak")
        assert other.locator('input[name="password"]').count() == 0
        other.goto(base + "/accounts/login/?local=1")
        other.locator('input[name="login"]').fill("analyst")
        other.locator('input[name="password"]').fill(PASSWORD)
        other.locator('button[type="submit"]').last.click()
        expect(other.locator("body")).to_contain_text("Passwords are off here")
        shot(other, "kc-5-sso-only-refused")


def test_keycloak_authorization_code_flow_with_pkce_from_a_plain_http_client(keycloak, live_server):
    """The same sign-on without a browser (requests), step by step: our app sends the user to
    Keycloak with a PKCE challenge (S256), Keycloak's form takes the password, and the callback
    makes the user with the mapped role. Keycloak marks its login cookies Secure even on plain
    http; a browser keeps them on loopback, this client must clear the flag to send them back."""
    import html
    import re
    from urllib.parse import parse_qs, urlsplit

    import requests

    keycloak.add_user("lee", PASSWORD, ["data-analysts"])
    http = requests.Session()
    base = live_server.url
    http.get(f"{base}/accounts/login/")
    start = http.post(f"{base}/accounts/oidc/idp/login/", allow_redirects=False, headers={"Referer": base},
                      data={"csrfmiddlewaretoken": http.cookies["csrftoken"]})
    assert start.status_code == 302 and start.headers["Location"].startswith(keycloak.issuer)
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]

    form = http.get(start.headers["Location"])
    action = html.unescape(re.search(r'<form[^>]+id="kc-form-login"[^>]+action="([^"]+)"', form.text).group(1))
    for cookie in http.cookies:
        cookie.secure = False  # Keycloak's Secure-on-http cookies (../shared/STACK-NOTES.md)
    back = http.post(action, data={"username": "lee", "password": PASSWORD}, allow_redirects=False)
    assert back.status_code == 302 and back.headers["Location"].startswith(f"{base}/accounts/oidc/idp/login/callback/")
    assert "code=" in back.headers["Location"]
    landed = http.get(back.headers["Location"])
    assert landed.url == f"{base}/w/acme/"
    lee = orm(lambda: Membership.objects.get(user__username="lee"))
    assert (lee.role, lee.source) == ("analyst", "idp")
    assert orm(lambda: SsoSession.objects.filter(user__username="lee").exclude(refresh_token="").exists())
