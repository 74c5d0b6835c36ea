#!/usr/bin/env python3
"""Create the compose stack's secret files that are missing, and print the catalog connection.

Usage: python3 compose/make_secrets.py [SECRETS_DIR]     (default: compose/secrets)

Never overwrites a secret: delete one to rotate it (and the files built from it: seaweedfs_s3.json
holds the S3 key pairs). seaweedfs_s3.json only gains the identities it lacks (an upgrade that adds
one), keeping every identity already in it, hand-added ones included. Standard library only, so it
runs on the deploy host.

SeaweedFS gets three identities, each limited to its own buckets:
- ``controlroom`` (artifacts_s3_*): the artifact store, bucket ``controlroom-artifacts``; the
  server's own credentials, never readable through a workspace secret reference;
- ``lakehouse`` (lake_s3_*): the shared lakehouse, buckets ``controlroom-lake`` (JDBC catalog's
  warehouse, Delta root) and the table bucket ``controlroom-lake-rest`` (SeaweedFS's Iceberg
  REST catalog). Trino uses it; workspaces reach its secret key through a secret reference;
- ``mlflow`` (mlflow_s3_*): the MLflow tracking server's artifacts, bucket ``controlroom-mlflow``
  (clients upload through the server, never to S3 directly).

Besides: MLflow's own PostgreSQL role's password, the bearer token Prometheus sends to the web's
``/metrics`` (METRICS_TOKEN_FILE), and Grafana's admin password (the optional ``grafana`` profile).
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

ARTIFACTS_BUCKET = "controlroom-artifacts"
LAKE_BUCKET = "controlroom-lake"
LAKE_TABLE_BUCKET = "controlroom-lake-rest"
MLFLOW_BUCKET = "controlroom-mlflow"
CATALOG_NAME = "controlroom"  # stored in the JDBC catalog's rows: the same name in every engine
CATALOG_DB = "iceberg_catalog"  # the JDBC catalog's own PostgreSQL database and role
# Where the app services see the secrets a workspace may reference (SECRET_FILE_DIRS).
WORKSPACE_SECRETS = "/run/secrets/workspace"

_RANDOM = {
    "django_secret_key": lambda: secrets.token_urlsafe(50),
    "artifacts_s3_access_key": lambda: "CR" + secrets.token_hex(9).upper(),
    "artifacts_s3_secret_key": lambda: secrets.token_urlsafe(30),
    "lake_s3_access_key": lambda: "LK" + secrets.token_hex(9).upper(),
    "lake_s3_secret_key": lambda: secrets.token_urlsafe(30),
    "iceberg_catalog_db_password": lambda: secrets.token_urlsafe(24),
    "mlflow_s3_access_key": lambda: "ML" + secrets.token_hex(9).upper(),
    "mlflow_s3_secret_key": lambda: secrets.token_urlsafe(30),
    "mlflow_db_password": lambda: secrets.token_urlsafe(24),
    # The app refuses a token shorter than 16 characters.
    "metrics_token": lambda: secrets.token_urlsafe(32),
    "grafana_admin_password": lambda: secrets.token_urlsafe(18),
}
_OBJECT_ACTIONS = ("Read", "Write", "List", "Tagging")


def s3_identities(values: dict[str, str]) -> dict:
    """SeaweedFS's ``-s3.config``: one identity per key pair, scoped to its buckets."""

    def identity(name: str, prefix: str, buckets: tuple[str, ...], extra: tuple[str, ...] = ()) -> dict:
        return {"name": name,
                "credentials": [{"accessKey": values[f"{prefix}_s3_access_key"],
                                 "secretKey": values[f"{prefix}_s3_secret_key"]}],
                "actions": [f"{action}:{bucket}" for bucket in buckets for action in _OBJECT_ACTIONS] + list(extra)}

    return {"identities": [
        identity("controlroom", "artifacts", (ARTIFACTS_BUCKET,)),
        # s3tables:*:<bucket>: namespaces and tables of the REST catalog in that table bucket only.
        identity("lakehouse", "lake", (LAKE_BUCKET, LAKE_TABLE_BUCKET), (f"s3tables:*:{LAKE_TABLE_BUCKET}",)),
        identity("mlflow", "mlflow", (MLFLOW_BUCKET,)),
    ]}


def catalog_connection(lake_access_key: str) -> dict:
    """The config of the workspace catalog connection that matches trino/etc/catalog/iceberg.properties."""
    return {"catalog_name": CATALOG_NAME, "type": "jdbc",
            "uri": f"postgresql://{CATALOG_DB}@postgres:5432/{CATALOG_DB}",
            "warehouse": f"s3://{LAKE_BUCKET}/warehouse", "delta_root": f"s3://{LAKE_BUCKET}/delta",
            "s3": {"endpoint": "http://seaweedfs:8333", "region": "us-east-1", "access_key_id": lake_access_key,
                   "secret_key_ref": "lake-s3-secret-key", "path_style": True}}


def _write(path: Path, text: str) -> None:
    # 0644: the containers read them as their own users (app 10001, seaweed 1000, trino 1000);
    # the folder itself is private to the deploy user.
    path.write_text(text)
    path.chmod(0o644)


def make_secrets(directory: Path) -> tuple[list[str], dict]:
    """Create the missing files in ``directory``; (names created, the catalog connection config)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    created, values = [], {}
    for name, generate in _RANDOM.items():
        path = directory / name
        if not path.exists():
            _write(path, generate() + "\n")
            created.append(name)
        values[name] = path.read_text().strip()
    identities = directory / "seaweedfs_s3.json"
    wanted = s3_identities(values)["identities"]
    if not identities.exists():
        _write(identities, json.dumps({"identities": wanted}, indent=2) + "\n")
        created.append(identities.name)
    else:
        # A stack made before an identity existed (MLflow's): add it, keep the rest as it is.
        current = json.loads(identities.read_text())
        present = {identity["name"] for identity in current.get("identities", [])}
        missing = [identity for identity in wanted if identity["name"] not in present]
        if missing:
            current["identities"] = [*current.get("identities", []), *missing]
            _write(identities, json.dumps(current, indent=2) + "\n")
            created += [f"{identities.name} (identity {identity['name']})" for identity in missing]
    return created, catalog_connection(values["lake_s3_access_key"])


def main(argv: list[str]) -> int:
    """CLI: see the module docstring."""
    directory = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "secrets"
    created, connection = make_secrets(directory)
    print(f"created in {directory}: {', '.join(created) or 'nothing (all present)'}", file=sys.stderr)
    if any(name.startswith("seaweedfs_s3.json (") for name in created):
        print("SeaweedFS reads its identities at start: docker compose restart seaweedfs", file=sys.stderr)
    print(f"Catalog connection 'lakehouse' (kind catalog); its password reference: file "
          f"{WORKSPACE_SECRETS}/iceberg_catalog_db_password; a secret reference 'lake-s3-secret-key': "
          f"file {WORKSPACE_SECRETS}/lake_s3_secret_key. Config:", file=sys.stderr)
    print(json.dumps(connection, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
