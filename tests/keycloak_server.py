"""A real Keycloak for the single sign-on tests: the Quarkus distribution from Maven
(``org.keycloak:keycloak-quarkus-dist``), unpacked once into the cache outside the repository,
started in dev mode on a free loopback port with a realm generated for the test server's address.

The realm (``controlroom``) has a confidential client with PKCE whose group-membership mapper puts
the user's groups in the ``groups`` claim of the ID token and userinfo, the groups
``data-analysts`` and ``data-ops``, and users made by the test through ``add_user``. The admin
REST API (the bootstrap admin of the master realm) changes a user's groups or disables them, as
an administrator would in Keycloak's console.

``python -m tests.keycloak_server`` only installs (CI does that before the suite).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import HOST, _Server
from tests.trino_server import CACHE_VAR, _mvn_fetch, _untar

VERSION = "26.7.3"
REALM, CLIENT_ID = "controlroom", "controlroom"
GROUPS = ("data-analysts", "data-ops")
STAMP = ".installed"
# C1 only: starts in ~25 s instead of ~70 s (measured, ../shared/STACK-NOTES.md). The same options
# at every start: a change of build options makes Keycloak rebuild itself first.
JAVA_OPTS_APPEND = "-XX:TieredStopAtLevel=1 -Xmx512m"


def keycloak_install() -> Path:
    """Keycloak's home, fetched with ``mvn`` and unpacked unless done before (a lock makes parallel
    callers share one download)."""
    home = Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "controlroom") / "keycloak" / VERSION
    if (home / STAMP).exists():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f".{VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / STAMP).exists():
            began, work = time.monotonic(), home.with_name(f".{VERSION}.partial")
            for stale in (work, home):
                shutil.rmtree(stale, ignore_errors=True)
            (work / "server").mkdir(parents=True)
            archive = _mvn_fetch(f"org.keycloak:keycloak-quarkus-dist:{VERSION}:tar.gz", work / "m2")
            if archive is None:
                raise RuntimeError(f"org.keycloak:keycloak-quarkus-dist:{VERSION} is not in the Maven repository")
            _untar(archive, work / "server")
            (work / "server" / STAMP).write_text(VERSION)
            (work / "server").rename(home)
            shutil.rmtree(work, ignore_errors=True)
            print(f"keycloak: installed {VERSION} in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return home


def realm(*, client_secret: str, app_url: str) -> dict[str, Any]:
    """The test realm: a confidential client with PKCE and a groups mapper, two groups, no users."""
    return {
        "realm": REALM, "enabled": True, "sslRequired": "none", "registrationAllowed": False,
        "accessTokenLifespan": 300, "ssoSessionIdleTimeout": 3600,
        "groups": [{"name": name, "path": f"/{name}"} for name in GROUPS],
        "clients": [{
            "clientId": CLIENT_ID, "enabled": True, "protocol": "openid-connect", "publicClient": False,
            "clientAuthenticatorType": "client-secret", "secret": client_secret,
            "standardFlowEnabled": True, "directAccessGrantsEnabled": False, "implicitFlowEnabled": False,
            "redirectUris": [f"{app_url}/accounts/oidc/idp/login/callback/"], "webOrigins": [app_url],
            "attributes": {"pkce.code.challenge.method": "S256",
                           "post.logout.redirect.uris": f"{app_url}/accounts/login/"},
            "protocolMappers": [{
                "name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper",
                "config": {"claim.name": "groups", "full.path": "false", "id.token.claim": "true",
                           "access.token.claim": "true", "userinfo.token.claim": "true"}}],
        }],
    }


class KeycloakServer(_Server):
    name = "keycloak"
    start_timeout = 240.0  # ~25 s warm; a first start also builds Keycloak once

    def __init__(self, *, client_secret: str, app_url: str) -> None:
        super().__init__()
        self.client_secret, self.app_url = client_secret, app_url
        self.admin_password = secrets.token_urlsafe(16)
        self._lock: Any = None

    def _start(self) -> str:
        home = keycloak_install()
        self._lock = (home.parent / f".{VERSION}.running").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # one server at a time on this install's data folder
        shutil.rmtree(home / "data", ignore_errors=True)  # yesterday's realm and sessions
        (home / "data" / "import").mkdir(parents=True)
        (home / "data" / "import" / f"{REALM}.json").write_text(
            json.dumps(realm(client_secret=self.client_secret, app_url=self.app_url)))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmpdir),
               "JAVA_OPTS_APPEND": JAVA_OPTS_APPEND, "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
               "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password}
        if os.environ.get("JAVA_HOME"):
            env["JAVA_HOME"] = os.environ["JAVA_HOME"]
        self._spawn([str(home / "bin" / "kc.sh"), "start-dev", f"--http-host={HOST}", f"--http-port={self.port}",
                     "--import-realm", "--health-enabled=false", "--metrics-enabled=false"], env=env)
        self._wait_ready()
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        super().stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{HOST}:{self.port}/realms/{REALM}/.well-known/openid-configuration",
                                timeout=2).ok
        except requests.RequestException:
            return False

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{REALM}"

    def _admin(self, method: str, path: str, **kw: Any) -> requests.Response:
        token = requests.post(f"{self.url}/realms/master/protocol/openid-connect/token", timeout=10, data={
            "grant_type": "password", "client_id": "admin-cli", "username": "admin",
            "password": self.admin_password}).json()["access_token"]
        response = requests.request(method, f"{self.url}/admin/realms/{REALM}{path}", timeout=10,
                                    headers={"Authorization": f"Bearer {token}"}, **kw)
        response.raise_for_status()
        return response

    def _user_id(self, username: str) -> str:
        return self._admin("GET", "/users", params={"username": username, "exact": "true"}).json()[0]["id"]

    def _group_ids(self) -> dict[str, str]:
        return {g["name"]: g["id"] for g in self._admin("GET", "/groups").json()}

    def add_user(self, username: str, password: str, groups: list[str]) -> None:
        """A user with a password (no action required at first login) in ``groups``."""
        self._admin("POST", "/users", json={
            "username": username, "enabled": True, "email": f"{username}@acme.test", "emailVerified": True,
            "firstName": username.title(), "lastName": "Test",
            "credentials": [{"type": "password", "value": password, "temporary": False}]})
        self.set_groups(username, groups)

    def set_groups(self, username: str, groups: list[str]) -> None:
        """Make ``groups`` the user's only groups."""
        user, ids = self._user_id(username), self._group_ids()
        for group in self._admin("GET", f"/users/{user}/groups").json():
            self._admin("DELETE", f"/users/{user}/groups/{group['id']}")
        for name in groups:
            self._admin("PUT", f"/users/{user}/groups/{ids[name]}")

    def set_enabled(self, username: str, enabled: bool) -> None:
        self._admin("PUT", f"/users/{self._user_id(username)}", json={"enabled": enabled})


KEYCLOAK_SECRET = "keycloak-client-" + secrets.token_urlsafe(12)


@pytest.fixture(scope="session")
def keycloak_server(live_server) -> Iterator[KeycloakServer]:
    server = KeycloakServer(client_secret=KEYCLOAK_SECRET, app_url=live_server.url)
    server.start()  # its start time is in the run's summary (tests/conftest.py)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    keycloak_install()
