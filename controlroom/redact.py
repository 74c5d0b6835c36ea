"""Credentials written into URLs, removed before a value is recorded (audit events, messages).

A URL carries a secret in its user part: ``scheme://user:password@host`` for any scheme, and for
http(s) a bare ``https://token@host`` too (git and most HTTP clients send it as the password).
An ssh or scp-like user (``ssh://git@host``) names an account, not a secret, and stays.
"""

from __future__ import annotations

import re
from typing import Any

# A scheme and an authority up to the path, query or fragment; the user part ends at its last "@"
# (a password with an unescaped "@" is still cut whole, as urlsplit reads it).
_URL_AUTHORITY = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://([^/?#\s]*@)")


def _authority_without_credentials(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)[:-1]
    if ":" in userinfo or scheme.lower() in ("http", "https"):
        return f"{scheme}://"
    return match.group(0)


def url_credentials_removed(text: str) -> str:
    """``text`` with the credentials of every URL in it removed: ``user:password@`` whatever
    the scheme, and a bare ``user@`` (a token) for http and https."""
    if "@" not in text or "://" not in text:
        return text
    return _URL_AUTHORITY.sub(_authority_without_credentials, text)


def json_url_credentials_removed(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with ``url_credentials_removed``
    applied to every string inside it; keys stay as they are."""
    if isinstance(value, str):
        return url_credentials_removed(value)
    if isinstance(value, dict):
        return {key: json_url_credentials_removed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_url_credentials_removed(item) for item in value]
    return value
