"""The ``trino_server`` session fixture (registered by ``tests/conftest.py`` as a pytest plugin)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.trino_lake import CATALOGS_VAR
from tests.trino_server import SERVICE_USER, TRINO_CA_VAR, TRINO_VAR, TrinoServer, trino_connect


@dataclass(frozen=True)
class TrinoEndpoint:
    """Where the suite's Trino is: ``url`` carries the service user's credentials."""

    url: str  # https://controlroom:<password>@127.0.0.1:<port>
    ca_file: str | None  # the certificate to verify it with
    service_user: str = SERVICE_USER
    # Trino catalog name -> the catalog connection config it was built from (tests/trino_lake.py);
    # empty when this Trino was started without an S3 server.
    catalogs: dict[str, Any] = field(default_factory=dict)

    def connect(self, user: str, **kwargs: Any) -> Any:
        """A ``trino.dbapi`` connection as the service user, impersonating ``user``."""
        return trino_connect(self.url, user=user, ca_file=self.ca_file, **kwargs)


@pytest.fixture(scope="session")
def trino_server(request: pytest.FixtureRequest) -> Iterator[TrinoEndpoint]:
    """The suite's Trino (``python -m tests.servers --s3 --trino``) or one of our own, with its own
    PostgreSQL and the session's S3 server (``s3_server``) under its shared lake catalogs."""
    if os.environ.get(TRINO_VAR):
        yield TrinoEndpoint(url=os.environ[TRINO_VAR], ca_file=os.environ.get(TRINO_CA_VAR),
                            catalogs=json.loads(os.environ.get(CATALOGS_VAR) or "{}"))
        return
    server = TrinoServer(lake=request.getfixturevalue("s3_server"))
    server.start()
    try:
        yield TrinoEndpoint(url=server.credentials_url, ca_file=str(server.ca_file), catalogs=server.lake_configs)
    finally:
        server.stop()
