"""Sign-ins, failed sign-ins and sign-outs reach the audit log: Django's auth signals (sent by
allauth's pages, the admin login and ``Client.login`` alike) each call one audited service."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.http import HttpRequest

from controlroom.services import auth_event_record

# The credential keys that may name who tried; anything else (the password) is never read.
_USERNAME_KEYS = ("username", "login", "email")


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    auth_event_record(action="auth.login", request=request, user=user)


def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:  # an anonymous visitor pressing "sign out" changed nothing
        auth_event_record(action="auth.logout", request=request, user=user)


def _login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None,
                  **kwargs: Any) -> None:
    username = next((str(credentials[key]) for key in _USERNAME_KEYS if credentials.get(key)), "")
    auth_event_record(action="auth.login_failed", request=request, username=username)


def connect() -> None:
    """Connect the receivers (once, from the app's ready())."""
    user_logged_in.connect(_logged_in, dispatch_uid="controlroom.audit.logged_in")
    user_logged_out.connect(_logged_out, dispatch_uid="controlroom.audit.logged_out")
    user_login_failed.connect(_login_failed, dispatch_uid="controlroom.audit.login_failed")
