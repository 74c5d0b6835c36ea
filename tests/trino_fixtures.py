"""The ``trino_server`` session fixture (registered by ``tests/conftest.py`` as a pytest plugin)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.trino_server import SERVICE_USER, TRINO_CA_VAR, TRINO_VAR, TrinoServer, trino_connect


@dataclass(frozen=True)
class TrinoEndpoint:
    """Where the suite's Trino is: ``url`` carries the service user's credentials."""

    url: str  # https://controlroom:<password>@127.0.0.1:<port>
    ca_file: str | None  # the certificate to verify it with
    service_user: str = SERVICE_USER

    def connect(self, user: str, **kwargs: Any) -> Any:
        """A ``trino.dbapi`` connection as the service user, impersonating ``user``."""
        return trino_connect(self.url, user=user, ca_file=self.ca_file, **kwargs)


@pytest.fixture(scope="session")
def trino_server() -> Iterator[TrinoEndpoint]:
    """The suite's Trino (``python -m tests.servers --trino``) or one of our own, with its own PostgreSQL."""
    if os.environ.get(TRINO_VAR):
        yield TrinoEndpoint(url=os.environ[TRINO_VAR], ca_file=os.environ.get(TRINO_CA_VAR))
        return
    server = TrinoServer()
    server.start()
    try:
        yield TrinoEndpoint(url=server.credentials_url, ca_file=str(server.ca_file))
    finally:
        server.stop()
