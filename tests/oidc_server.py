"""A real OpenID Connect provider for the tests: node-oidc-provider (tests/oidc/idp.mjs), installed
from npm into a cache outside the repository on first use (``npm install oidc-provider@9``, no
lock file), started on a free loopback port in about a second.

``oidc_server`` (session fixture) yields it; ``set_account`` changes an account's groups or
disables it, as an admin would in the IdP."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import HOST, _Server

HERE = Path(__file__).resolve().parent
VERSION = "9.13.3"
CACHE = Path(os.environ.get("CONTROLROOM_CACHE", Path.home() / ".cache" / "controlroom")) / f"oidc-provider-{VERSION}"


def install() -> Path:
    """The folder whose node_modules holds oidc-provider (installed once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE.parent / f"{CACHE.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test workers started at once install it once
        if not (CACHE / "node_modules" / "oidc-provider" / "package.json").exists():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("npm not found: the test IdP needs node and npm (scripts/system_deps.sh)")
            subprocess.run([npm, "install", "--no-package-lock", "--no-save", "--no-audit", "--no-fund", "--silent",
                            f"oidc-provider@{VERSION}"], cwd=CACHE, check=True, timeout=600)
    return CACHE


class OidcServer(_Server):
    name = "oidc"

    def __init__(self, *, clients: list[dict[str, Any]], accounts: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.clients, self.accounts, self.key = clients, accounts, secrets.token_urlsafe(16)

    def _start(self) -> str:
        issuer = f"http://{HOST}:{self.port}"
        config = {"issuer": issuer, "port": self.port, "clients": self.clients, "accounts": self.accounts,
                  "cookie_key": self.key}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IDP_CONFIG": json.dumps(config),
               "IDP_MODULES": str(install() / "node_modules"), "NODE_ENV": "test"}
        self._spawn([shutil.which("node") or "node", str(HERE / "oidc" / "idp.mjs")], env=env)
        self._wait_ready()
        return issuer

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{HOST}:{self.port}/.well-known/openid-configuration", timeout=1).ok
        except requests.RequestException:
            return False

    def set_account(self, account_id: str, account: dict[str, Any]) -> None:
        response = requests.put(f"{self.url}/test/accounts/{account_id}", data=json.dumps(account), timeout=5,
                                headers={"X-Test-Key": self.key})
        response.raise_for_status()


CLIENT_ID, CLIENT_SECRET = "controlroom", "controlroom-test-secret"


@pytest.fixture(scope="session")
def oidc_server(live_server) -> Iterator[OidcServer]:
    live_server_url = live_server.url
    server = OidcServer(
        clients=[{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                  "redirect_uris": [f"{live_server_url}/accounts/oidc/idp/login/callback/"],
                  "post_logout_redirect_uris": [f"{live_server_url}/accounts/login/"],
                  "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}],
        accounts={})
    server.start()
    try:
        yield server
    finally:
        server.stop()
