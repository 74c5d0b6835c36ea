"""The ``s3_server`` session fixture (registered by ``tests/conftest.py`` as a pytest plugin).

SeaweedFS (``tests.servers.SeaweedServer``): the one ``python -m tests.servers --s3`` started, or
one of our own, started once per session. Its S3 checks the key pair; it also serves an Iceberg
REST catalog (OAuth2 client credentials ``key:secret``).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.servers import (
    ICEBERG_REST_VAR,
    S3_KEY_VAR,
    S3_REGION_VAR,
    S3_SECRET_VAR,
    S3_VAR,
    SeaweedServer,
)


@dataclass(frozen=True)
class S3Endpoint:
    """Where the suite's S3 server is, with a key pair it accepts."""

    endpoint: str  # http://127.0.0.1:<port>
    key: str
    secret: str
    region: str
    iceberg_rest_url: str  # http://127.0.0.1:<port>, the Iceberg REST catalog of the same server
    _serial: Iterator[int] = field(default_factory=itertools.count, compare=False, repr=False)

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this server (``kwargs`` override, e.g. a wrong secret)."""
        import boto3

        options = {
            "endpoint_url": self.endpoint,
            "region_name": self.region,
            "aws_access_key_id": self.key,
            "aws_secret_access_key": self.secret,
            **kwargs,
        }
        return boto3.client("s3", **options)

    def bucket(self, name: str = "test") -> str:
        """Create a fresh, empty bucket whose name starts with ``name`` and return its name."""
        unique = f"{name.lower()[:30]}-{next(self._serial)}-{uuid.uuid4().hex[:12]}".replace("_", "-")
        self.client().create_bucket(Bucket=unique)
        return unique

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix`` (for "nothing was left behind" checks)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def pending_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted."""
        found = self.client().list_multipart_uploads(Bucket=bucket)
        return sorted(upload["Key"] for upload in found.get("Uploads", ()))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """The suite's SeaweedFS (``python -m tests.servers --s3``) or one of our own for the session."""
    if os.environ.get(S3_VAR):
        yield S3Endpoint(
            endpoint=os.environ[S3_VAR],
            key=os.environ[S3_KEY_VAR],
            secret=os.environ[S3_SECRET_VAR],
            region=os.environ.get(S3_REGION_VAR, SeaweedServer.region),
            iceberg_rest_url=os.environ[ICEBERG_REST_VAR],
        )
        return
    server = SeaweedServer()
    endpoint = server.start()
    try:
        env = server.environ()
        yield S3Endpoint(
            endpoint=endpoint,
            key=env[S3_KEY_VAR],
            secret=env[S3_SECRET_VAR],
            region=env[S3_REGION_VAR],
            iceberg_rest_url=env[ICEBERG_REST_VAR],
        )
    finally:
        server.stop()


def s3_store_settings(settings: Any, s3: S3Endpoint, bucket: str, prefix: str = "controlroom") -> None:
    """Point the artifact store at ``s3://bucket/prefix`` on ``s3`` (pytest-django ``settings``)."""
    settings.ARTIFACT_STORE_URL = f"s3://{bucket}/{prefix}"
    settings.ARTIFACT_STORE_S3_ENDPOINT = s3.endpoint
    settings.ARTIFACT_STORE_S3_REGION = s3.region
    settings.ARTIFACT_STORE_S3_ACCESS_KEY = s3.key
    settings.ARTIFACT_STORE_S3_SECRET_KEY = s3.secret


@pytest.fixture(params=["local", pytest.param("s3", marks=[pytest.mark.slow, pytest.mark.once])])
def blob_store(request: pytest.FixtureRequest, settings: Any) -> Any:
    """The artifact store a test runs against: local disk (the per-test folder), then S3 on the
    suite's SeaweedFS in a fresh bucket. Returns the store (``get_store()``)."""
    from artifacts.storage import get_store

    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        s3_store_settings(settings, s3, s3.bucket("artifacts"))
    return get_store()
