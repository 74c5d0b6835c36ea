"""Secret values from Vault or OpenBao (the same HTTP API): a KV version 2 secret's key.

A reference's locator is ``<path>#<key>``: ``controlroom/acme/trino#password`` reads the key
``password`` of the secret at ``controlroom/acme/trino`` in the KV v2 engine mounted at
``SECRET_VAULT_MOUNT`` (``GET /v1/<mount>/data/<path>``). The backend's own credentials come from
the environment, never from a workspace: ``VAULT_ADDR``, then a token (``VAULT_TOKEN`` or
``VAULT_TOKEN_FILE``) or an AppRole (``VAULT_ROLE_ID`` with ``VAULT_SECRET_ID`` or
``VAULT_SECRET_ID_FILE``, logged in when needed and again before its token expires), and
``VAULT_CACERT`` for a private CA.

Values are read at the moment of use and kept in this process's memory for at most
``SECRET_CACHE_S`` seconds (0: not kept), so a rotated secret takes effect on the next use after
that, without a restart; nothing is written anywhere. Errors raise ``VaultError`` whose message
names the path and the backend's answer (for the log and admins), never a value.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests
from django.conf import settings

TIMEOUT_S = 5.0
_lock = threading.Lock()
_values: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}  # (addr, mount, path) -> (until, data)
_approle: dict[str, tuple[float, str]] = {}  # addr -> (until, client token)


class VaultError(Exception):
    """The backend could not give the value: the message says why (a path, a status), never a value."""


def vault_read(path: str, key: str) -> str:
    """The value of ``key`` in the KV v2 secret at ``path`` (cached at most SECRET_CACHE_S)."""
    address = _address()
    mount = settings.SECRET_VAULT_MOUNT.strip("/")
    cache_key = (address, mount, path)
    now = time.monotonic()
    with _lock:
        cached = _values.get(cache_key)
    if cached is not None and cached[0] > now:
        data = cached[1]
    else:
        data = _fetch(address, mount, path)
        if settings.SECRET_CACHE_S > 0:
            with _lock:
                _values[cache_key] = (now + settings.SECRET_CACHE_S, data)
    if key not in data:
        raise VaultError(f"the secret at {mount}/{path} has no key '{key}'")
    value = data[key]
    if not isinstance(value, str):
        raise VaultError(f"the key '{key}' of {mount}/{path} is not a string")
    return value


def vault_forget() -> None:
    """Drop every cached value and token (tests; a rotation that must show at once)."""
    with _lock:
        _values.clear()
        _approle.clear()


def _address() -> str:
    address = (settings.VAULT_ADDR or "").rstrip("/")
    if not address:
        raise VaultError("VAULT_ADDR is not set: this server has no Vault or OpenBao to read from")
    return address


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy or CA bundle from the environment in between
    session.verify = settings.VAULT_CACERT or True
    return session


def _fetch(address: str, mount: str, path: str) -> dict[str, Any]:
    with _session() as session:
        for attempt in (1, 2):
            token = _token(address, session, fresh=attempt == 2)
            try:
                response = session.get(f"{address}/v1/{mount}/data/{path}", headers={"X-Vault-Token": token},
                                       timeout=TIMEOUT_S)
            except requests.RequestException as exc:
                raise VaultError(f"{address} could not be reached ({type(exc).__name__})") from None
            if response.status_code == 403 and attempt == 1 and _uses_approle():
                continue  # the AppRole token may have been revoked: log in again, once
            break
    if response.status_code == 404:
        raise VaultError(f"there is no secret at {mount}/{path}")
    if response.status_code == 403:
        raise VaultError(f"the backend refused to read {mount}/{path} (permission denied)")
    if response.status_code != 200:
        raise VaultError(f"reading {mount}/{path} answered HTTP {response.status_code}")
    try:
        return dict(response.json()["data"]["data"] or {})
    except (ValueError, KeyError, TypeError):
        raise VaultError(f"{mount}/{path} is not a KV version 2 secret") from None


def _uses_approle() -> bool:
    return bool(settings.VAULT_ROLE_ID)


def _token(address: str, session: requests.Session, *, fresh: bool = False) -> str:
    if not _uses_approle():
        token = settings.VAULT_TOKEN or _read_file(settings.VAULT_TOKEN_FILE, "VAULT_TOKEN_FILE")
        if not token:
            raise VaultError("neither VAULT_TOKEN, VAULT_TOKEN_FILE nor VAULT_ROLE_ID is set")
        return token
    now = time.monotonic()
    with _lock:
        cached = _approle.get(address)
    if cached is not None and cached[0] > now and not fresh:
        return cached[1]
    secret_id = settings.VAULT_SECRET_ID or _read_file(settings.VAULT_SECRET_ID_FILE, "VAULT_SECRET_ID_FILE")
    try:
        response = session.post(f"{address}/v1/auth/approle/login", timeout=TIMEOUT_S,
                                json={"role_id": settings.VAULT_ROLE_ID, "secret_id": secret_id})
    except requests.RequestException as exc:
        raise VaultError(f"{address} could not be reached ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise VaultError(f"the AppRole login was refused (HTTP {response.status_code})")
    auth = response.json().get("auth") or {}
    token, lease = auth.get("client_token"), int(auth.get("lease_duration") or 0)
    if not token:
        raise VaultError("the AppRole login gave no token")
    with _lock:  # renewed well before it expires (a lease of 0 never expires)
        _approle[address] = (now + (lease * 0.8 if lease else 3600), token)
    return token


def _read_file(path: str, name: str) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise VaultError(f"{name} cannot be read ({exc.strerror})") from None
