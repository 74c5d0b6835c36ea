"""The SeaweedFS test server and the ``s3_server`` fixture: S3 with checked keys, Iceberg REST."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

pytestmark = [pytest.mark.slow, pytest.mark.once]


def test_bucket_helper_gives_fresh_empty_buckets(s3_server) -> None:
    first, second = s3_server.bucket("Same_Name"), s3_server.bucket("Same_Name")
    assert first != second
    client = s3_server.client()
    client.put_object(Bucket=first, Key="a/b", Body=b"x")
    assert s3_server.keys(first) == ["a/b"]
    assert s3_server.keys(second) == []


def test_wrong_secret_is_refused(s3_server) -> None:
    bucket = s3_server.bucket("creds")
    with pytest.raises(ClientError) as caught:
        s3_server.client(aws_secret_access_key="not-the-secret").list_objects_v2(Bucket=bucket)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_iceberg_rest_catalog_answers(s3_server) -> None:
    request = urllib.request.Request(f"{s3_server.iceberg_rest_url}/v1/config")  # noqa: S310 (http only)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:  # unauthenticated: refused, but by the catalog
        status, body = error.code, error.read()
    assert status in (200, 401, 403)
    json.loads(body or b"{}")
