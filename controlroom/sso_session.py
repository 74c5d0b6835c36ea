"""A long single sign-on session is re-checked at the identity provider.

At sign-on the IdP's refresh token is kept, encrypted, in an ``SsoSession`` row named by the
session (``sso_session`` in its data). Every ``OIDC_SESSION_RECHECK_S`` seconds, the first request
of that session redeems the token at the IdP's token endpoint:

- the IdP answers with new tokens: the session goes on (the new refresh token replaces the old
  one), and when the IdP's userinfo carries the groups claim the memberships follow it at once;
- the IdP refuses the grant (``invalid_grant``: the account was disabled or deleted, its IdP
  session ended or was revoked): the person is signed out here, the event is audited, and the
  next page is the login page saying why;
- the IdP cannot be reached or answers otherwise (an outage, our own client misconfigured): the
  session goes on, the failure is logged, and the check is tried again after ``RETRY_S``. An IdP
  outage must not sign everyone out; the break-glass account exists for the reverse case.

One request checks at a time (the row is locked; others go on with the session as it was).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import requests
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.contrib import auth, messages
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, resolve_url
from django.utils import timezone

from controlroom.models import SsoSession

log = logging.getLogger(__name__)
SESSION_KEY = "sso_session"
RETRY_S = 60
TIMEOUT_S = 5.0
ENDED = "Your single sign-on session ended at the identity provider; sign in again."


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"controlroom.sso_session:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def sso_session_open(request: HttpRequest, user: Any, refresh_token: str) -> None:
    """Keep the IdP's refresh token for this new session (called at sign-on)."""
    if not refresh_token:
        log.warning("the identity provider gave no refresh token: this session cannot be re-checked",
                    extra={"user": user.get_username()})
    key, now = secrets.token_urlsafe(32), timezone.now()
    # Records of sessions long gone (expired without a sign-out; a live one is checked often).
    SsoSession.objects.filter(user=user, checked_at__lt=now - timedelta(seconds=settings.SESSION_COOKIE_AGE)).delete()
    SsoSession.objects.create(key=key, user=user, checked_at=now,
                              refresh_token=_fernet().encrypt(refresh_token.encode()).decode() if refresh_token else "")
    request.session[SESSION_KEY] = key


def sso_session_close(request: HttpRequest) -> None:
    """Forget this session's refresh token (sign-out)."""
    key = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    if key:
        SsoSession.objects.filter(key=key).delete()


def _refresh(refresh_token: str) -> tuple[str, dict[str, Any]]:
    """Redeem the token: ("ok", tokens), ("ended", {"error": …}) or ("unknown", {"error": …})."""
    from allauth.socialaccount.adapter import get_adapter
    from allauth.socialaccount.models import SocialApp

    from controlroom.sso import discovery

    try:
        app = get_adapter().get_app(None, "idp")  # its secret as sign-on uses it (settings or Vault)
        endpoints = discovery()
        response = requests.post(endpoints["token_endpoint"], timeout=TIMEOUT_S, data={
            "grant_type": "refresh_token", "refresh_token": refresh_token}, auth=(app.client_id, app.secret))
    except (requests.RequestException, KeyError, LookupError, SocialApp.DoesNotExist) as exc:
        return "unknown", {"error": f"{type(exc).__name__}: {exc}"}
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.ok and isinstance(body, dict) and body.get("access_token"):
        return "ok", body
    error = body.get("error", "") if isinstance(body, dict) else ""
    if response.status_code in (400, 401) and error == "invalid_grant":
        return "ended", {"error": f"{error}: {body.get('error_description', '')}"}
    described = body.get("error_description", "") if isinstance(body, dict) else ""
    return "unknown", {"error": f"HTTP {response.status_code} {error} {described}".strip()}


def _groups_now(access_token: str) -> list[str] | None:
    """The groups claim from the IdP's userinfo, or None when it does not carry the claim."""
    from controlroom.sso import discovery, groups_of

    try:
        endpoint = discovery().get("userinfo_endpoint")
        if not endpoint:
            return None
        response = requests.get(endpoint, timeout=TIMEOUT_S, headers={"Authorization": f"Bearer {access_token}"})
        info = response.json() if response.ok else {}
    except (requests.RequestException, ValueError, LookupError):
        return None
    if not isinstance(info, dict) or settings.OIDC_GROUPS_CLAIM not in info:
        return None
    return groups_of({"userinfo": info})


def sso_session_check(request: HttpRequest) -> bool:
    """Re-check this session at the IdP when it is due; False when the IdP ended it."""
    key = request.session.get(SESSION_KEY)
    now = timezone.now()
    due = now - timedelta(seconds=settings.OIDC_SESSION_RECHECK_S)
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: a refused lock leaves the transaction usable
                row = SsoSession.objects.select_for_update(nowait=True).filter(key=key).first()
        except DatabaseError:  # another request of this session is checking it
            return True
        if row is None or row.user_id != request.user.pk:
            log.warning("an SSO session has no refresh-token record: signed out", extra={"user_id": request.user.pk})
            return False
        if row.checked_at > due or not row.refresh_token:
            return True
        try:
            token = _fernet().decrypt(row.refresh_token.encode()).decode()
        except InvalidToken:  # SECRET_KEY changed since: the token cannot be used
            row.delete()
            return False
        verdict, answer = _refresh(token)
        if verdict == "unknown":
            log.warning("the SSO session could not be re-checked at the identity provider: %s", answer["error"],
                        extra={"user": request.user.get_username()})
            row.checked_at = due + timedelta(seconds=RETRY_S)
            row.save(update_fields=["checked_at"])
            return True
        if verdict == "ended":
            log.info("the identity provider ended an SSO session: %s", answer["error"],
                     extra={"user": request.user.get_username()})
            row.delete()
            return False
        row.checked_at = now
        if answer.get("refresh_token"):
            row.refresh_token = _fernet().encrypt(answer["refresh_token"].encode()).decode()
        row.save(update_fields=["checked_at", "refresh_token"])
    groups = _groups_now(answer["access_token"])
    if groups is not None:
        from controlroom.sso import memberships_sync

        memberships_sync(request.user, groups)
        request.session["sso_groups"] = groups
    return True


class SsoSessionMiddleware:
    """Re-checks single sign-on sessions (see the module); signs out those the IdP ended."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (settings.OIDC_SESSION_RECHECK_S > 0 and request.user.is_authenticated
                and request.session.get(SESSION_KEY) and not sso_session_check(request)):
            return self._signed_out(request)
        return self.get_response(request)

    @staticmethod
    def _signed_out(request: HttpRequest) -> HttpResponse:
        from controlroom.services import auth_event_record

        user = request.user
        auth_event_record(action="auth.sso_session_ended", request=request, user=user)
        auth.logout(request)
        messages.warning(request, ENDED)
        login = resolve_url(settings.LOGIN_URL)
        if request.headers.get("HX-Request"):
            return HttpResponse(status=204, headers={"HX-Redirect": login})
        if request.path.startswith("/api/"):
            return HttpResponse(ENDED, status=401, content_type="text/plain")
        return redirect(login)
