"""Mail settings from one ``EMAIL_URL``.

``smtp://user:pass@host:587`` sends with STARTTLS, ``smtps://user:pass@host:465`` with implicit
TLS; ``?timeout=`` (seconds, default 10) bounds how long a web worker may wait on the server.
``?starttls=false`` turns STARTTLS off for a plain relay on a trusted network; credentials are
then refused, since they would cross the wire in the clear. User and password are
percent-decoded, so a password holding ``@`` or ``/`` is written ``%40`` or ``%2F``.

Every malformed value raises :class:`~django.core.exceptions.ImproperlyConfigured` naming the
variable, never echoing the password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from controlroom.env import parse_bool

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
DEFAULT_TIMEOUT_S = 10
_PORTS = {"smtp": 587, "smtps": 465}


def email_settings_from_url(url: str, *, name: str = "EMAIL_URL") -> dict[str, Any]:
    """Django ``EMAIL_*`` settings for ``url``; ``name`` is the variable quoted in errors."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise ImproperlyConfigured(f"{name} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _PORTS:
        raise ImproperlyConfigured(f"{name} must start with smtp:// (STARTTLS) or smtps:// (implicit TLS), "
                                   f"not {scheme + '://' if scheme else 'nothing'}")
    if not parts.hostname:
        raise ImproperlyConfigured(f"{name} names no host (smtp://user:password@host:587)")
    if parts.path not in ("", "/") or parts.fragment:
        raise ImproperlyConfigured(f"{name} takes no path or fragment after the host")
    options = _options(parts.query, name)
    starttls = scheme == "smtp" and parse_bool(options.pop("starttls", "true"), f"{name} ?starttls")
    timeout = _timeout(options.pop("timeout", str(DEFAULT_TIMEOUT_S)), name)
    if options:
        raise ImproperlyConfigured(f"{name} has unknown options: {', '.join(sorted(options))} "
                                   "(known: timeout, starttls)")
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if scheme == "smtp" and not starttls and (user or password):
        raise ImproperlyConfigured(f"{name} sends a password without TLS; use smtps:// or drop ?starttls=false")
    return {
        "EMAIL_BACKEND": SMTP_BACKEND,
        "EMAIL_HOST": parts.hostname,
        "EMAIL_PORT": port or _PORTS[scheme],
        "EMAIL_HOST_USER": user,
        "EMAIL_HOST_PASSWORD": password,
        "EMAIL_USE_TLS": starttls,
        "EMAIL_USE_SSL": scheme == "smtps",
        "EMAIL_TIMEOUT": timeout,
    }


def _options(query: str, name: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} has a malformed query string") from exc
    repeated = sorted(key for key, values in parsed.items() if len(values) > 1)
    if repeated:
        raise ImproperlyConfigured(f"{name} repeats the option {', '.join(repeated)}")
    return {key: values[0] for key, values in parsed.items()}


def _timeout(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 600:
        raise ImproperlyConfigured(f"{name} ?timeout={value!r} must be a number of seconds between 0 and 600")
    return seconds

