"""How django-allauth behaves here: closed sign-up, and login limits that one Host header cannot split."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest


class ClosedSignupAdapter(DefaultAccountAdapter):
    """Accounts are created by admins (or OIDC later), not by open sign-up."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False

    def pre_authenticate(self, request: HttpRequest, **credentials: Any) -> None:
        """In SSO-only mode a password works for the break-glass account alone."""
        from controlroom.sso import local_login_allowed

        if not local_login_allowed(str(credentials.get("username", "") or "")):
            raise ValidationError(f"Passwords are off here: sign in with {settings.OIDC_NAME}.")
        super().pre_authenticate(request, **credentials)

    def get_logout_redirect_url(self, request: HttpRequest) -> str:
        """After a single sign-on session: the IdP's end-session endpoint too (RP-initiated logout),
        which comes back to the login page."""
        from controlroom.sso import end_session_url

        # allauth asks before it ends the session: a single sign-on session still says so.
        if request.session.get("sso_groups") is not None and (url := end_session_url(request)):
            return url
        return super().get_logout_redirect_url(request)

    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth keys the per-username failure count by the site's domain, which without the
        # sites framework is the request's Host header, port included: every Host value (an
        # allowed host with any port, upper case, a trailing dot) would count apart. One key per
        # username, case-folded as the login is matched.
        login = credentials.get("email", credentials.get("username", "")) or ""
        return f"controlroom-login:{str(login).casefold()}"
