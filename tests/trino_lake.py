"""The shared lakehouse catalogs of the suite's Trino: one catalog, three engines.

When the test Trino starts with an S3 server (``TrinoServer(lake=...)``: the ``SeaweedServer`` of
``python -m tests.servers --s3 --trino``, or the ``s3_server`` fixture's), its Iceberg catalogs
are built by ``lakehouse.trino_catalog`` from the same config a catalog connection holds:

- ``iceberg``: a JDBC catalog in Trino's PostgreSQL, warehouse ``s3://trino-lake/warehouse``;
- ``iceberg_rest``: SeaweedFS's Iceberg REST catalog on the table bucket ``trino-lake-rest``
  (OAuth2 client credentials: the S3 key pair);
- ``delta``: the Delta tables under the JDBC catalog's ``delta_root``, as Control Room registers
  them (``lakehouse.trino_publish``) in a file metastore kept on that S3.

``CONTROLROOM_TEST_TRINO_CATALOGS`` carries those connection configs (no secrets: the S3 secret
is the S3 server's, ``CONTROLROOM_TEST_S3_SECRET``; the JDBC catalog's PostgreSQL trusts any
password), so tests build the same catalog connection (``lakehouse.catalogs``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lakehouse.trino_catalog import trino_catalog_properties, trino_delta_catalog_properties
from tests.servers import ICEBERG_REST_VAR, S3_KEY_VAR, S3_REGION_VAR, S3_SECRET_VAR

CATALOGS_VAR = "CONTROLROOM_TEST_TRINO_CATALOGS"
CATALOG_NAME = "controlroom"  # stored in the JDBC catalog's rows: the same name in every engine
JDBC_BUCKET, REST_TABLE_BUCKET = "trino-lake", "trino-lake-rest"


@dataclass(frozen=True)
class LakeStore:
    """An S3 server with an Iceberg REST catalog, and a key pair it accepts."""

    endpoint: str
    key: str
    secret: str
    region: str
    iceberg_rest_url: str

    @classmethod
    def of(cls, server: Any) -> LakeStore:
        """From a LakeStore, an ``S3Endpoint`` (fixture) or a started ``SeaweedServer``."""
        if isinstance(server, LakeStore):
            return server
        if hasattr(server, "iceberg_rest_url"):
            return cls(server.endpoint, server.key, server.secret, server.region, server.iceberg_rest_url)
        env = server.environ()
        return cls(server.url, env[S3_KEY_VAR], env[S3_SECRET_VAR], env[S3_REGION_VAR], env[ICEBERG_REST_VAR])

    def client(self, service: str = "s3") -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)


def _ensure_buckets(store: LakeStore) -> None:
    from botocore.exceptions import ClientError

    try:
        store.client().create_bucket(Bucket=JDBC_BUCKET)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    tables = store.client("s3tables")
    if REST_TABLE_BUCKET not in {b["name"] for b in tables.list_table_buckets().get("tableBuckets", ())}:
        tables.create_table_bucket(name=REST_TABLE_BUCKET)  # SeaweedFS: one table bucket per REST catalog


def lake_catalogs(store: LakeStore, catalog_database_url: str) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """(Trino catalog properties by catalog name, the matching catalog connection configs)."""
    _ensure_buckets(store)
    database = "postgresql://" + catalog_database_url.split("://", 1)[1]  # a catalog connection's form
    s3 = {"endpoint": store.endpoint, "region": store.region, "access_key_id": store.key,
          "secret_key_ref": "s3-secret", "path_style": True}
    configs: dict[str, Any] = {
        "iceberg": {"catalog_name": CATALOG_NAME, "type": "jdbc", "uri": database,
                    "warehouse": f"s3://{JDBC_BUCKET}/warehouse", "delta_root": f"s3://{JDBC_BUCKET}/delta", "s3": s3},
        "iceberg_rest": {"catalog_name": "lake_rest", "type": "rest", "uri": store.iceberg_rest_url,
                         "warehouse": f"s3://{REST_TABLE_BUCKET}", "delta_root": f"s3://{JDBC_BUCKET}/delta-rest",
                         "s3": s3},
    }
    properties = {
        "iceberg": trino_catalog_properties(configs["iceberg"], s3_secret_key=store.secret),
        "iceberg_rest": trino_catalog_properties(configs["iceberg_rest"], s3_secret_key=store.secret,
                                                 rest_credential=f"{store.key}:{store.secret}"),
        # The Delta tables beside the JDBC catalog, listed by a file metastore on the same S3.
        "delta": trino_delta_catalog_properties(configs["iceberg"], s3_secret_key=store.secret),
    }
    return properties, configs


def catalogs_environ(configs: dict[str, Any]) -> dict[str, str]:
    """The variable that tells test processes the lake catalogs' configs (empty without a lake)."""
    return {CATALOGS_VAR: json.dumps(configs)} if configs else {}
