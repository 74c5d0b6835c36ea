"""How django-allauth behaves here: closed sign-up, and login limits that one Host header cannot split."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest


class ClosedSignupAdapter(DefaultAccountAdapter):
    """Accounts are created by admins (or OIDC later), not by open sign-up."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False

    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth keys the per-username failure count by the site's domain, which without the
        # sites framework is the request's Host header, port included: every Host value (an
        # allowed host with any port, upper case, a trailing dot) would count apart. One key per
        # username, case-folded as the login is matched.
        login = credentials.get("email", credentials.get("username", "")) or ""
        return f"controlroom-login:{str(login).casefold()}"
