"""Single sign-on in Chromium against a real OpenID Connect provider (node-oidc-provider on
loopback, tests/oidc_server.py): the login page's button, the IdP's login form, authorization
code with PKCE, the user made at first sign-on landing in the workspace its group maps to with
the mapped role (and the matching engine identity), a group change at the IdP changing the role
at the next sign-in, RP-initiated logout, the page for groups that map to nothing, and SSO-only
mode's login page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from controlroom.models import IdpGroupMapping, Membership
from tests.chromium import chromium, orm, shot
from tests.oidc_server import CLIENT_ID, CLIENT_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def idp(settings, oidc_server, world):
    settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID = oidc_server.url, CLIENT_ID
    settings.SOCIALACCOUNT_PROVIDERS = {"openid_connect": {
        "OAUTH_PKCE_ENABLED": True, "SCOPE": ["openid", "profile", "email", "groups"],
        "APPS": [{"provider_id": "idp", "name": "Acme SSO", "client_id": CLIENT_ID, "secret": CLIENT_SECRET,
                  "settings": {"server_url": oidc_server.url}}]}}
    IdpGroupMapping.objects.create(workspace=world.workspace, group="data-analysts", role="analyst")
    IdpGroupMapping.objects.create(workspace=world.workspace, group="data-ops", role="operator")
    oidc_server.set_account("ana", {"claims": {"preferred_username": "ana.lyst", "email": "ana@acme.test",
                                               "groups": ["data-analysts"]}})
    oidc_server.set_account("nomad", {"claims": {"preferred_username": "nomad", "groups": ["elsewhere"]}})
    return oidc_server


def sign_in(page: Page, base: str, login: str, issuer: str) -> None:
    page.goto(base + "/accounts/login/")
    page.locator("#sso-login").click()
    page.wait_for_url(lambda url: url.startswith(issuer), timeout=20_000)  # the IdP's own login form
    page.locator('input[name="login"]').fill(login)
    page.locator('input[name="password"]').fill("any")  # the test IdP's form checks the account only
    page.locator('button[type="submit"]').click()
    consent = page.locator('button[type="submit"]', has_text="Continue")
    if consent.count():
        consent.click()


def test_sign_in_through_the_idp_lands_in_the_mapped_workspace(idp, live_server, settings):
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
        page.goto(live_server.url + "/accounts/login/")
        expect(page.locator("#sso-login")).to_have_text("Sign in with Acme SSO")
        shot(page, "1-login")
        sign_in(page, live_server.url, "ana", idp.url)
        page.wait_for_url(f"{live_server.url}/w/acme/", timeout=20_000)  # the one workspace her group maps to
        shot(page, "2-landed")
        ana = orm(lambda: Membership.objects.select_related("user").get(user__socialaccount__uid="ana"))
        assert (ana.user.username, ana.role, ana.source) == ("ana.lyst", "analyst", "idp")

        from sqlwarehouse.engines.trino import identity

        assert identity(ana.user.username, read_only=True) == "ana.lyst~ro"  # read-only in Trino too

        # The IdP admin moves her to data-ops; her next sign-in makes her an operator.
        idp.set_account("ana", {"claims": {"preferred_username": "ana.renamed", "groups": ["data-ops"]}})
        page.goto(live_server.url + "/accounts/logout/")
        page.locator('button[type="submit"]').first.click()
        end = page.locator('button[type="submit"], input[type="submit"]')  # the IdP asks to confirm its logout
        page.wait_for_url(lambda url: url.startswith(f"{idp.url}/session/end"), timeout=20_000)  # RP-initiated
        shot(page, "3-idp-logout")
        end.first.click()
        page.wait_for_url(f"{live_server.url}/accounts/login/", timeout=20_000)
        sign_in(page, live_server.url, "ana", idp.url)
        page.wait_for_url(f"{live_server.url}/w/acme/", timeout=20_000)
        ana = orm(lambda: Membership.objects.select_related("user").get(user__socialaccount__uid="ana"))
        assert (ana.user.username, ana.role) == ("ana.lyst", "operator")  # the same user: keyed by subject

        other = browser.new_context().new_page()
        sign_in(other, live_server.url, "nomad", idp.url)
        expect(other.locator("#no-mapped-group")).to_contain_text("elsewhere", timeout=20_000)
        shot(other, "4-no-mapped-group")

        settings.SSO_ONLY = True
        third = browser.new_context().new_page()
        third.goto(live_server.url + "/accounts/login/")
        expect(third.locator("#sso-login")).to_be_visible()
        assert third.locator('input[name="password"]').count() == 0
        shot(third, "5-sso-only")


def test_a_long_session_follows_the_idp_groups_and_ends_when_the_account_is_disabled(idp, live_server, settings):
    from datetime import timedelta

    from django.utils import timezone

    from controlroom.models import SsoSession
    from controlroom.sso_session import ENDED

    def due() -> None:  # as if OIDC_SESSION_RECHECK_S had passed since the last check
        orm(lambda: SsoSession.objects.update(checked_at=timezone.now() - timedelta(hours=1)))

    with chromium() as browser:
        page = browser.new_context().new_page()
        sign_in(page, live_server.url, "ana", idp.url)
        page.wait_for_url(f"{live_server.url}/w/acme/", timeout=20_000)
        session = orm(lambda: SsoSession.objects.get(user__socialaccount__uid="ana"))
        assert session.refresh_token  # the IdP's refresh token, kept encrypted

        idp.set_account("ana", {"claims": {"preferred_username": "ana.lyst", "groups": ["data-ops"]}})
        due()
        page.goto(live_server.url + "/w/acme/")  # the re-check redeems the token and reads userinfo
        expect(page).to_have_url(f"{live_server.url}/w/acme/")
        role = orm(lambda: Membership.objects.get(user__socialaccount__uid="ana").role)
        assert role == "operator"  # changed mid-session, without signing in again

        idp.set_account("ana", {"disabled": True, "claims": {"preferred_username": "ana.lyst"}})
        page.goto(live_server.url + "/w/acme/jobs/")  # not due yet: the session goes on
        expect(page).to_have_url(f"{live_server.url}/w/acme/jobs/")
        due()
        page.goto(live_server.url + "/w/acme/jobs/")
        page.wait_for_url(lambda url: "/accounts/login/" in url, timeout=20_000)
        expect(page.locator("body")).to_contain_text(ENDED)
        shot(page, "6-session-ended")
        assert not orm(lambda: SsoSession.objects.filter(user__socialaccount__uid="ana").exists())
