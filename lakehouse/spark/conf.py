"""The Spark session configuration of a workspace's lakehouse: its Iceberg catalog and Delta root.

``session_conf(lakehouse)`` gives what a PySpark script's session needs to read and write the
same tables as PyIceberg, delta-rs and Trino (``lakehouse.catalogs.Lakehouse``), following
STACK-NOTES "Spark with Iceberg and Delta":

- **Iceberg**: ``spark.sql.catalog.<catalog_name>`` is an Iceberg ``SparkCatalog`` under the SAME
  name as PyIceberg's ``SqlCatalog(name)`` and Trino's ``iceberg.jdbc-catalog.catalog-name`` (Java's
  JDBC catalog stores it in each row). ``jdbc`` keeps it in PostgreSQL (``jdbc.schema-version=V1``,
  as PyIceberg expects); ``rest`` is SeaweedFS's REST catalog with OAuth2 client credentials
  ``key:secret``; the embedded default is the same SQLite file PyIceberg uses, with its local
  ``file://`` warehouse. Table data on S3 goes through Iceberg's own ``S3FileIO`` with the
  ``s3.*`` catalog properties and ``s3://`` locations, exactly what PyIceberg and Trino write:
  Hadoop's S3A is not involved, so the classpath needs one AWS SDK only.
- **Delta**: ``spark_catalog`` is Delta's ``DeltaCatalog``; a Delta table is named by its path,
  ``delta.`s3a://bucket/delta/<namespace>/<name>``` (see ``delta_path``): the same folder as
  ``Lakehouse.delta_uri`` (``s3://`` for delta-rs, ``s3a://`` for Hadoop). There is no metastore:
  ``CREATE TABLE x USING delta`` without a location would land in a local ``spark-warehouse``.
- **S3A** (Delta's Hadoop file system): endpoint, path style, region, keys, SSL by the
  endpoint's scheme; ``s3://`` is mapped to S3A too, so a path in either form works.
- The driver binds to 127.0.0.1, the session time zone is UTC, and Spark's redaction pattern
  also hides ``credential`` (the REST catalog's ``key:secret``) on the UI's environment page and
  in the event log.

Secrets (S3 keys, the catalog database's password, the REST credential) are kept apart in
``SessionConf.secret`` so the caller hands them to Spark at the moment of use and never on a
command line: NOT through ``SparkSession.builder.config`` (pyspark launches the JVM with every
builder setting as a ``--conf`` argument, visible in ``ps``), but in a 0600 properties file
(``SessionConf.secret_properties_text``, passed as ``--properties-file``, also through
``PYSPARK_SUBMIT_ARGS``), or for Spark Connect with ``spark.conf.set`` once connected
(``SessionConf.connect_settings``).
``SessionConf.masks()`` lists the values a log must not show.

Two public entries tell a script where things are: ``spark.controlroom.iceberg_catalog`` (the
Iceberg catalog's name: ``<catalog>.<namespace>.<table>`` in SQL) and
``spark.controlroom.delta_root``; ``script_delta_path(spark, namespace, name)`` reads the latter.
This module imports neither Django nor pyspark, so a driver can import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lakehouse.trino_catalog import jdbc_postgres, properties_text

if TYPE_CHECKING:
    from lakehouse.catalogs import Lakehouse

ICEBERG_CATALOG_KEY = "spark.controlroom.iceberg_catalog"
DELTA_ROOT_KEY = "spark.controlroom.delta_root"
EXTENSIONS = ("org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions,"
              "io.delta.sql.DeltaSparkSessionExtension")
# Spark's default pattern ``(?i)secret|password|token|access[.]?key``, plus Iceberg's
# "access-key-id" and "credential" (the REST catalog's OAuth2 client credential).
REDACTION_REGEX = r"(?i)secret|password|token|access[.-]?key|credential"
# The rule of lakehouse.catalogs.IDENT, repeated because that module needs Django.
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class SparkConfError(ValueError):
    """The lakehouse cannot be expressed as a Spark configuration; the message says why."""


@dataclass(frozen=True)
class SessionConf:
    """A Spark session's configuration: ``public`` entries may be shown and passed on a command
    line; ``secret`` ones only at the moment of use. Every value is a string."""

    catalog_name: str  # the Iceberg catalog's name in Spark SQL
    delta_root: str  # s3a://bucket/prefix or file:///path: Delta tables are <root>/<namespace>/<name>
    public: dict[str, str] = field(default_factory=dict)
    secret: dict[str, str] = field(default_factory=dict)

    def merged(self) -> dict[str, str]:
        """Every entry, secrets included: for ``SparkSession.builder.config(map=...)`` in-process."""
        return {**self.public, **self.secret}

    def masks(self) -> list[str]:
        """Secret values a log must not show, longest first (so a value containing another one is
        masked whole): every secret entry and, for ``key:secret`` credentials, each half."""
        values = set(self.secret.values())
        values |= {part for value in self.secret.values() if ":" in value for part in value.split(":", 1)}
        return sorted((value for value in values if value), key=lambda value: (-len(value), value))

    def secret_properties_text(self) -> str:
        """The secret entries as a Java properties file, for ``spark-submit --properties-file`` (write
        it mode 0600; pyspark's ``PYSPARK_SUBMIT_ARGS`` takes the option too). Not ``builder.config``:
        pyspark passes every builder setting as ``--conf key=value`` on the JVM's command line."""
        return properties_text(dict(sorted(self.secret.items())))

    def submit_args(self) -> list[str]:
        """``--conf key=value`` arguments for ``spark-submit``: the public entries only."""
        return [arg for key, value in sorted(self.public.items()) for arg in ("--conf", f"{key}={value}")]

    def connect_settings(self) -> tuple[dict[str, str], dict[str, str]]:
        """For Spark Connect: (``static``, ``per_session``). ``static`` goes to the server at its start
        (SQL extensions, the Delta session catalog, driver binding, redaction: Spark refuses or
        ignores them later); ``per_session`` is what a client sets with ``spark.conf.set`` once
        connected, secrets included: the Iceberg catalog (catalogs load lazily, per session) and
        the S3A settings under their bare Hadoop names (a session's Hadoop configuration copies its
        SQL settings verbatim: a ``spark.hadoop.`` prefix would stay on the key and S3A would not
        see it). Hadoop caches one S3A client per bucket in the server's JVM, so sessions with
        different S3 keys on the same bucket share whichever came first."""
        runtime = (f"spark.sql.catalog.{self.catalog_name}", "spark.controlroom.", "spark.sql.session.timeZone",
                   "spark.hadoop.fs.s3a.")
        static, per_session = {}, {}
        for key, value in self.merged().items():
            if key == "spark.hadoop.fs.s3a.impl" or not key.startswith(runtime):
                static[key] = value
            else:
                per_session[key.removeprefix("spark.hadoop.")] = value
        return static, per_session

    def delta_path(self, namespace: str, name: str) -> str:
        """Where the Delta table ``namespace.name`` lives, as Spark addresses it."""
        return delta_path(self.delta_root, namespace, name)


def session_conf(lake: Lakehouse) -> SessionConf:
    """The Spark configuration of ``lake``'s Iceberg catalog and Delta root (secrets apart).

    Raises SparkConfError for a catalog type this module does not know.
    """
    if lake.type not in ("embedded", "jdbc", "rest"):
        raise SparkConfError(f"A Spark session cannot use a catalog of type {lake.type!r}.")
    _check(lake.catalog_name, "catalog name")
    if lake.catalog_name == "spark_catalog":
        raise SparkConfError("The Iceberg catalog cannot be named 'spark_catalog': Spark's session catalog is Delta's.")
    delta_root = _delta_root(lake)
    public = {
        "spark.sql.extensions": EXTENSIONS,
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.session.timeZone": "UTC",
        "spark.redaction.regex": REDACTION_REGEX,
        ICEBERG_CATALOG_KEY: lake.catalog_name,
        DELTA_ROOT_KEY: delta_root,
    }
    secret: dict[str, str] = {}
    iceberg_public, iceberg_secret = _iceberg(lake)
    prefix = f"spark.sql.catalog.{lake.catalog_name}"
    public[prefix] = "org.apache.iceberg.spark.SparkCatalog"
    public |= {f"{prefix}.{key}": value for key, value in iceberg_public.items()}
    secret |= {f"{prefix}.{key}": value for key, value in iceberg_secret.items()}
    if not lake.embedded:
        s3a_public, s3a_secret = _s3a(lake.s3, lake.secret_key)
        public |= s3a_public
        secret |= s3a_secret
    _check_values(public, secret)
    return SessionConf(catalog_name=lake.catalog_name, delta_root=delta_root, public=public, secret=secret)


def delta_path(delta_root: str, namespace: str, name: str) -> str:
    """``<delta_root>/<namespace>/<name>``: the folder of a Delta table (``delta_root`` as in
    ``SessionConf.delta_root``); use it as ``delta.`<path>``` in SQL or with ``DeltaTable.forPath``."""
    return f"{delta_root.rstrip('/')}/{_check(namespace, 'namespace')}/{_check(name, 'table name')}"


def script_delta_path(spark: Any, namespace: str, name: str) -> str:
    """In a PySpark script: where the Delta table ``namespace.name`` of this session's lakehouse lives."""
    root = spark.conf.get(DELTA_ROOT_KEY, None)
    if not root:
        raise SparkConfError(f"This Spark session has no {DELTA_ROOT_KEY}: it was not configured by Control Room.")
    return delta_path(root, namespace, name)


def _check(value: Any, what: str) -> str:
    if not (isinstance(value, str) and _IDENT.fullmatch(value)):
        raise SparkConfError(f"The {what} {value!r} is not a plain identifier (lower-case letters, digits and _).")
    return value


def _delta_root(lake: Lakehouse) -> str:
    if lake.embedded:
        return Path(lake.delta_root).resolve().as_uri()
    if not lake.delta_root.startswith("s3://"):
        raise SparkConfError("A catalog's Delta root must be an s3:// location.")
    return "s3a://" + lake.delta_root[len("s3://"):].rstrip("/")


def _iceberg(lake: Lakehouse) -> tuple[dict[str, str], dict[str, str]]:
    """(public, secret) properties of the Iceberg SparkCatalog, without the catalog prefix."""
    if lake.embedded:
        # The same SQLite file as PyIceberg's SqlCatalog, data on local disk (Hadoop's file://).
        if not lake.uri.startswith("sqlite:///"):
            raise SparkConfError("The embedded catalog must be a SQLite file (sqlite:///path).")
        path = lake.uri[len("sqlite:///"):]
        return {"type": "jdbc", "uri": f"jdbc:sqlite:{path}", "jdbc.schema-version": "V1",
                "warehouse": lake.warehouse}, {}
    public = {"warehouse": lake.warehouse, "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
              "s3.endpoint": lake.s3["endpoint"], "client.region": lake.s3["region"],
              "s3.path-style-access": "true" if lake.s3.get("path_style", True) else "false"}
    secret = {"s3.access-key-id": lake.s3["access_key_id"], "s3.secret-access-key": lake.secret_key}
    if lake.type == "jdbc":
        url, user, _ = jdbc_postgres(lake.uri)
        public |= {"type": "jdbc", "uri": url, "jdbc.user": user, "jdbc.schema-version": "V1"}
        if lake.password:
            secret["jdbc.password"] = lake.password
    else:
        uri = lake.uri.rstrip("/")
        # Named, not inferred (Iceberg warns when it guesses the auth type or the token endpoint).
        public |= {"type": "rest", "uri": uri, "rest.auth.type": "oauth2",
                   "oauth2-server-uri": f"{uri}/v1/oauth/tokens"}
        secret["credential"] = f"{lake.s3['access_key_id']}:{lake.secret_key}"
    return public, secret


def _s3a(s3: dict[str, Any], secret_key: str) -> tuple[dict[str, str], dict[str, str]]:
    """(public, secret) Hadoop S3A settings for Delta's s3a:// paths."""
    endpoint = str(s3["endpoint"])
    scheme = urlsplit(endpoint).scheme
    if scheme not in ("http", "https"):
        raise SparkConfError("The catalog's S3 endpoint must be an http:// or https:// URL.")
    hadoop = "spark.hadoop.fs.s3a"
    public = {
        f"{hadoop}.endpoint": endpoint,
        f"{hadoop}.endpoint.region": str(s3["region"]),
        f"{hadoop}.path.style.access": "true" if s3.get("path_style", True) else "false",
        f"{hadoop}.connection.ssl.enabled": "true" if scheme == "https" else "false",
        # The configured keys only: no probing of environment variables or instance metadata.
        f"{hadoop}.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    }
    secret = {f"{hadoop}.access.key": str(s3["access_key_id"]), f"{hadoop}.secret.key": secret_key}
    return public, secret


def _check_values(public: dict[str, str], secret: dict[str, str]) -> None:
    for key, value in {**public, **secret}.items():
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise SparkConfError(f"The Spark setting {key} must be a one-line string.")
    if empty := sorted(key for key, value in secret.items() if not value):
        raise SparkConfError(f"The catalog's secrets are not resolved ({', '.join(empty)}).")
