"""Which git URLs a workspace may name, and the environment every git command runs with.

A git URL is a capability on the server that clones it: ``file://`` and bare paths read the
server's own disk (another workspace's repository, the data directory), ``ext::`` runs a
command, other ``transport::address`` forms pick a remote helper, ``http://`` and ``git://``
travel in clear text. So a git source may name only https, ssh and scp-like ``user@host:path``
URLs, and ``file://`` only where the operator turned on ``GIT_ALLOW_FILE_PROTOCOL`` (tests and
local use). The same check runs wherever a URL enters (the admin form, the model's clean, every
sync), and git itself gets ``GIT_ALLOW_PROTOCOL`` so that redirects, submodules and anything
that slipped past the check are refused by git too.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.conf import settings

from controlroom.redact import url_credentials_removed
from controlroom.services import ServiceError

_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)", re.DOTALL)
# scp-like ssh: user@host:path (git reads it as ssh://user@host/path); no option-like parts.
_SCP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?:[A-Za-z0-9_~/.][^:]*")


def git_file_protocol_allowed() -> bool:
    return bool(settings.GIT_ALLOW_FILE_PROTOCOL)


def git_protocols() -> str:
    """The value of GIT_ALLOW_PROTOCOL: the transports git itself may use."""
    return "https:ssh:file" if git_file_protocol_allowed() else "https:ssh"


def git_env() -> dict[str, str]:
    """Variables every git command of ours runs with (on top of the process environment)."""
    return {"GIT_ALLOW_PROTOCOL": git_protocols(), "GIT_TERMINAL_PROMPT": "0"}


def _accepted(url: str) -> bool:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return False  # a newline could inject into git's credential protocol
    match = _SCHEME.fullmatch(url)
    if match is None:
        return _SCP.fullmatch(url) is not None
    scheme = match.group(1)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if scheme in ("https", "ssh"):
        return bool(host) and not host.startswith("-")
    if scheme == "file" and git_file_protocol_allowed():
        return parts.netloc in ("", "localhost") and parts.path.startswith("/")
    return False


def git_url_check(url: str) -> str:
    """The URL stripped, or ServiceError (one sentence) unless it is https://, ssh://, scp-like
    user@host:path, or file:// where GIT_ALLOW_FILE_PROTOCOL allows it."""
    url = (url or "").strip()
    if not url:
        raise ServiceError("The git source has no URL.")
    if not _accepted(url):
        also = "or file:///path" if git_file_protocol_allowed() else "(file:// is off on this server)"
        raise ServiceError("This git URL is refused: use https://host/path, ssh://[user@]host/path, "
                           f"user@host:path {also}.")
    return url


def git_url_display(url: str) -> str:
    """The URL without a password or token, fit for versions, audit events and messages."""
    return url_credentials_removed(url)


def git_redact(text: str, url: str) -> str:
    """``text`` (git's stderr) with the URL's password or token replaced by ***."""
    parts = urlsplit(url)
    for secret in (parts.password, parts.username if parts.scheme in ("http", "https") else None):
        if secret:
            text = text.replace(secret, "***")
    return text
