"""The ``trino_server`` session fixture (registered by ``tests/conftest.py`` as a pytest plugin)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.trino_lake import CATALOGS_VAR
from tests.trino_server import BI_USER, SERVICE_USER, TRINO_BI_VAR, TRINO_CA_VAR, TRINO_VAR, TrinoServer, trino_connect


@dataclass(frozen=True)
class TrinoEndpoint:
    """Where the suite's Trino is: ``url`` carries the service user's credentials, ``bi_url`` those
    of the read-only BI login (``superset~ro``)."""

    url: str  # https://controlroom:<password>@127.0.0.1:<port>
    ca_file: str | None  # the certificate to verify it with
    bi_url: str = ""  # https://superset~ro:<password>@127.0.0.1:<port>
    service_user: str = SERVICE_USER
    bi_user: str = BI_USER
    # Trino catalog name -> the catalog connection config it was built from (tests/trino_lake.py);
    # empty when this Trino was started without an S3 server.
    catalogs: dict[str, Any] = field(default_factory=dict)

    def connect(self, user: str, **kwargs: Any) -> Any:
        """A ``trino.dbapi`` connection as the service user, impersonating ``user``."""
        return trino_connect(self.url, user=user, ca_file=self.ca_file, **kwargs)

    def connect_bi(self, user: str = BI_USER, **kwargs: Any) -> Any:
        """A ``trino.dbapi`` connection logged in as the BI login, running queries as ``user``."""
        assert self.bi_url, f"this Trino was started without {TRINO_BI_VAR}"
        return trino_connect(self.bi_url, user=user, ca_file=self.ca_file, **kwargs)


@pytest.fixture(scope="session")
def trino_server(request: pytest.FixtureRequest) -> Iterator[TrinoEndpoint]:
    """The suite's Trino (``python -m tests.servers --s3 --trino``) or one of our own, with its own
    PostgreSQL and the session's S3 server (``s3_server``) under its shared lake catalogs."""
    if os.environ.get(TRINO_VAR):
        yield TrinoEndpoint(url=os.environ[TRINO_VAR], ca_file=os.environ.get(TRINO_CA_VAR),
                            bi_url=os.environ.get(TRINO_BI_VAR, ""),
                            catalogs=json.loads(os.environ.get(CATALOGS_VAR) or "{}"))
        return
    server = TrinoServer(lake=request.getfixturevalue("s3_server"))
    server.start()
    try:
        yield TrinoEndpoint(url=server.credentials_url, ca_file=str(server.ca_file), bi_url=server.bi_credentials_url,
                            catalogs=server.lake_configs)
    finally:
        server.stop()
