"""Trino's Iceberg connector properties for a catalog connection: one catalog, read by every engine.

A catalog connection's config (``lakehouse.catalogs``) is
``{"catalog_name", "type": "jdbc" | "rest", "uri", "warehouse": "s3://…", "delta_root",
"s3": {"endpoint", "region", "access_key_id", "secret_key_ref", "path_style"}}``; secrets are
resolved by the caller and passed in, so this module needs no database and also serves the test
tooling (``tests/trino_server.py``) and the compose files' documentation.

The catalog NAME must be the same in every engine: Java's JDBC catalog (Trino, Spark) stores it
in ``catalog_name`` and PyIceberg's ``SqlCatalog(name)`` filters on it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "jdbc:postgresql"}


class CatalogConfigError(ValueError):
    """The catalog's config cannot be expressed for Trino; the message says what to change."""


def jdbc_postgres(uri: str) -> tuple[str, str, str]:
    """(JDBC URL, user, password) from a PostgreSQL URL in SQLAlchemy, libpq or JDBC form."""
    parts = urlsplit(uri[len("jdbc:"):] if uri.startswith("jdbc:") else uri)
    scheme = ("jdbc:" if uri.startswith("jdbc:") else "") + parts.scheme
    if scheme not in _POSTGRES_SCHEMES or not parts.hostname:
        raise CatalogConfigError("Trino reads JDBC catalogs kept in PostgreSQL only: the catalog's 'uri' must be "
                                 "a postgresql:// URL with a host.")
    database = parts.path.lstrip("/") or "postgres"
    url = f"jdbc:postgresql://{parts.hostname}:{parts.port or 5432}/{database}"
    return url, unquote(parts.username or ""), unquote(parts.password or "")


def _s3_properties(s3: dict[str, Any], secret_key: str | None) -> dict[str, str]:
    if not s3.get("endpoint") and not s3.get("region"):
        raise CatalogConfigError("The catalog's S3 settings need an 'endpoint' or a 'region'.")
    props = {"fs.native-s3.enabled": "true"}
    if s3.get("endpoint"):
        props["s3.endpoint"] = str(s3["endpoint"])
    props["s3.region"] = str(s3.get("region") or "us-east-1")
    if s3.get("path_style", True):
        props["s3.path-style-access"] = "true"
    if s3.get("access_key_id"):
        if not secret_key:
            raise CatalogConfigError("The catalog names an S3 access key but its secret key could not be resolved.")
        props["s3.aws-access-key"], props["s3.aws-secret-key"] = str(s3["access_key_id"]), secret_key
    return props


def trino_catalog_properties(config: dict[str, Any], *, s3_secret_key: str | None = None,
                             jdbc_password: str | None = None, rest_credential: str | None = None) -> dict[str, str]:
    """The ``etc/catalog/<name>.properties`` of a Trino Iceberg catalog for the catalog ``config``.

    ``s3_secret_key``: the resolved ``s3.secret_key_ref``; ``jdbc_password``: the JDBC catalog
    database's password when the URI carries none; ``rest_credential``: an OAuth2 client
    credential ``id:secret`` for a REST catalog (SeaweedFS's takes the S3 key pair).
    Raises CatalogConfigError for what Trino cannot read (a SQLite catalog, a local warehouse).
    """
    kind, warehouse = config.get("type"), str(config.get("warehouse") or "")
    name = str(config.get("catalog_name") or "")
    if not name:
        raise CatalogConfigError("The catalog needs a 'catalog_name' (the same in every engine).")
    if not warehouse.startswith("s3://"):
        raise CatalogConfigError("Trino reads catalogs whose warehouse is on S3 (an s3:// location) only.")
    props: dict[str, str] = {"connector.name": "iceberg"}
    if kind == "jdbc":
        url, user, password = jdbc_postgres(str(config.get("uri") or ""))
        props |= {
            "iceberg.catalog.type": "jdbc",
            "iceberg.jdbc-catalog.catalog-name": name,
            "iceberg.jdbc-catalog.driver-class": "org.postgresql.Driver",
            "iceberg.jdbc-catalog.connection-url": url,
            "iceberg.jdbc-catalog.default-warehouse-dir": warehouse.rstrip("/"),
        }
        if user:
            props["iceberg.jdbc-catalog.connection-user"] = user
        if password or jdbc_password:
            props["iceberg.jdbc-catalog.connection-password"] = password or str(jdbc_password)
    elif kind == "rest":
        if not str(config.get("uri") or "").startswith(("http://", "https://")):
            raise CatalogConfigError("A REST catalog's 'uri' must be an http(s):// URL.")
        props |= {
            "iceberg.catalog.type": "rest",
            "iceberg.rest-catalog.uri": str(config["uri"]).rstrip("/"),
            "iceberg.rest-catalog.warehouse": warehouse,
            "iceberg.rest-catalog.vended-credentials-enabled": "false",
        }
        if rest_credential:
            props |= {"iceberg.rest-catalog.security": "OAUTH2",
                      "iceberg.rest-catalog.oauth2.credential": rest_credential,
                      "iceberg.rest-catalog.oauth2.server-uri": f"{str(config['uri']).rstrip('/')}/v1/oauth/tokens"}
    else:
        raise CatalogConfigError(f"The catalog's 'type' must be 'jdbc' or 'rest', not {kind!r}.")
    return props | _s3_properties(dict(config.get("s3") or {}), s3_secret_key)


METASTORE_DIR = ".trino-metastore"  # under the Delta root; not an identifier, so never a namespace's folder


def trino_delta_catalog_properties(config: dict[str, Any], *, s3_secret_key: str | None = None) -> dict[str, str]:
    """The ``etc/catalog/<name>.properties`` of a Trino Delta Lake catalog for the catalog ``config``.

    Delta tables have no catalog of their own here: they are folders under ``delta_root``. Trino's
    Delta connector needs a metastore to list them, so it gets a file metastore kept on the same S3
    beside the tables (``<delta_root>/.trino-metastore``), and Control Room registers each Delta
    table a phase commits into it (``lakehouse.trino_publish``) with ``register_table``.
    """
    root = str(config.get("delta_root") or "").rstrip("/")
    if not root.startswith("s3://"):
        raise CatalogConfigError("Trino reads Delta tables whose root is on S3 (an s3:// 'delta_root') only.")
    props = {
        "connector.name": "delta_lake",
        "hive.metastore": "file",
        "hive.metastore.catalog.dir": f"{root}/{METASTORE_DIR}",
        "delta.register-table-procedure.enabled": "true",
    }
    return props | _s3_properties(dict(config.get("s3") or {}), s3_secret_key)


def properties_text(props: dict[str, str], *, header: str = "") -> str:
    """``props`` as a Java properties file (values must not contain line breaks)."""
    if any("\n" in f"{k}{v}" or "\r" in f"{k}{v}" for k, v in props.items()):
        raise CatalogConfigError("A catalog property contains a line break.")
    # A backslash starts an escape in Java's properties format: double it to keep it literal.
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{k}={v.replace(chr(92), chr(92) * 2)}" for k, v in props.items()]
    return "\n".join(lines) + "\n"
