"""Sign-ins, failed sign-ins and sign-outs, and the changes people make to their own account,
reach the audit log: Django's auth signals (sent by allauth's pages, the admin login and
``Client.login`` alike) and allauth's account signals each call one audited service."""

from __future__ import annotations

from typing import Any

from allauth.account import signals as account_signals
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


def _address(email_address: Any) -> str:
    return getattr(email_address, "email", "") or ""


def _account_receiver(action: str) -> Any:
    # allauth sends request and user (email_confirmed: only the address, whose user it is), and
    # for e-mail changes the addresses concerned; a password never travels with these signals.
    def receive(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
        details = {}
        if "email_address" in kwargs:
            details["email"] = _address(kwargs["email_address"])
            user = user if user is not None else getattr(kwargs["email_address"], "user", None)
        if "to_email_address" in kwargs:
            details.update({"from_email": _address(kwargs.get("from_email_address")),
                            "to_email": _address(kwargs["to_email_address"])})
        auth_event_record(action=action, request=request, user=user, details=details)

    return receive


_ACCOUNT_SIGNALS = {
    "auth.password_change": account_signals.password_changed,
    "auth.password_set": account_signals.password_set,
    "auth.password_reset": account_signals.password_reset,
    "auth.email_add": account_signals.email_added,
    "auth.email_remove": account_signals.email_removed,
    "auth.email_change": account_signals.email_changed,
    "auth.email_confirm": account_signals.email_confirmed,
}
_ACCOUNT_RECEIVERS = {action: _account_receiver(action) for action in _ACCOUNT_SIGNALS}


def connect() -> None:
    """Connect the receivers (once, from the app's ready())."""
    user_logged_in.connect(_logged_in, dispatch_uid="controlroom.audit.logged_in")
    user_logged_out.connect(_logged_out, dispatch_uid="controlroom.audit.logged_out")
    user_login_failed.connect(_login_failed, dispatch_uid="controlroom.audit.login_failed")
    for action, signal in _ACCOUNT_SIGNALS.items():
        signal.connect(_ACCOUNT_RECEIVERS[action], dispatch_uid=f"controlroom.audit.{action}")
