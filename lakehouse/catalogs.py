"""Catalogs: where a workspace's Iceberg tables are listed and where its Delta tables live.

A catalog is a connection of kind ``catalog`` in the workspace (optionally per environment)::

    {"catalog_name": "lakehouse", "type": "jdbc" | "rest",
     "uri": "postgresql://user@host:5432/db" (jdbc; password in the connection's password_ref)
            | "http://host:port" (rest),
     "warehouse": "s3://bucket/prefix", "delta_root": "s3://bucket/delta",
     "s3": {"endpoint": "http://host:port", "region": "us-east-1", "access_key_id": "...",
            "secret_key_ref": "<a secret reference of this workspace>", "path_style": true}}

One config serves PyIceberg (:meth:`Lakehouse.iceberg`), delta-rs (:meth:`Lakehouse.delta_uri`,
:meth:`Lakehouse.delta_storage_options`) and Trino (:meth:`Lakehouse.trino_properties`), so a
table written by one engine is read by the others. Credentials come only from secret references,
resolved at the moment of use. A connection may point only at S3, never at a local path: local
disk is for the embedded default alone, one folder per workspace and environment.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from connections.models import Connection, SecretRef
from connections.services import ConnectionMissing, SecretUnavailable, connection_resolve, secret_resolve
from controlroom.models import Environment, Workspace

log = logging.getLogger(__name__)

EMBEDDED_NAME = "lakehouse"
IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # namespaces, table and catalog names: plain identifiers
_TOP_KEYS = {"catalog_name", "type", "uri", "warehouse", "delta_root", "s3"}
_S3_KEYS = {"endpoint", "region", "access_key_id", "secret_key_ref", "path_style"}
_BUCKET_PATH = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_.=-]+)*/?")


class CatalogError(Exception):
    """The catalog cannot be used; the message is one sentence fit for the user."""


def catalog_config_errors(config: Any) -> list[str]:
    """What is wrong with a catalog connection's config (no lookups: see ``catalog_connection_errors``)."""
    if not isinstance(config, dict):
        return ["a catalog's config must be a JSON object"]
    errors = [f"unknown catalog config key {key!r}" for key in sorted(set(config) - _TOP_KEYS)]
    name = config.get("catalog_name")
    if not (isinstance(name, str) and IDENT.fullmatch(name)):
        errors.append("'catalog_name' must be a plain identifier (lower-case letters, digits and _)")
    kind = config.get("type")
    uri = config.get("uri")
    if kind not in ("jdbc", "rest"):
        errors.append("'type' must be 'jdbc' or 'rest'")
    elif not isinstance(uri, str):
        errors.append("'uri' is required")
    elif kind == "jdbc":
        errors += _jdbc_uri_errors(uri)
    elif not _http_url_ok(uri):
        errors.append("'uri' of a rest catalog must be an http:// or https:// URL without credentials")
    for key in ("warehouse", "delta_root"):
        value = config.get(key)
        if not (isinstance(value, str) and _BUCKET_PATH.fullmatch(value)) or "/../" in f"{value}/" \
                or "/./" in f"{value}/":
            errors.append(f"'{key}' must be an s3://bucket/prefix location (local paths are not allowed)")
    s3 = config.get("s3")
    if not isinstance(s3, dict):
        errors.append("'s3' (endpoint, region, access_key_id, secret_key_ref) is required")
    else:
        errors += [f"unknown s3 config key {key!r}" for key in sorted(set(s3) - _S3_KEYS)]
        if not _http_url_ok(s3.get("endpoint")):
            errors.append("'s3.endpoint' must be an http:// or https:// URL without credentials")
        for key in ("region", "access_key_id"):
            if not (isinstance(s3.get(key), str) and 0 < len(s3[key]) <= 128 and s3[key].isprintable()):
                errors.append(f"'s3.{key}' must be a non-empty string")
        ref = s3.get("secret_key_ref")
        if not (isinstance(ref, str) and re.fullmatch(r"[-a-zA-Z0-9_]{1,64}", ref)):
            errors.append("'s3.secret_key_ref' must name a secret reference of this workspace")
        if "path_style" in s3 and not isinstance(s3["path_style"], bool):
            errors.append("'s3.path_style' must be true or false")
    return errors


def _jdbc_uri_errors(uri: str) -> list[str]:
    parts = urlsplit(uri)
    if parts.scheme != "postgresql" or not parts.hostname or not parts.path.strip("/"):
        return ["'uri' of a jdbc catalog must be postgresql://user@host:port/database"]
    if parts.password is not None:
        return ["'uri' must not hold a password: set the connection's password reference instead"]
    if not parts.username:
        return ["'uri' of a jdbc catalog must name the database user (postgresql://user@host:port/database)"]
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        return ["'uri' has a malformed port"]
    if parts.query or parts.fragment or "/" in parts.path.strip("/"):
        return ["'uri' of a jdbc catalog must be postgresql://user@host:port/database, nothing more"]
    return []


def _http_url_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and parts.username is None
            and parts.password is None and not parts.query and not parts.fragment)


def catalog_connection_errors(connection: Connection) -> list[str]:
    """Everything wrong with a catalog connection: its config, its secret references (this
    workspace's only), and locations that overlap another workspace's catalog."""
    errors = catalog_config_errors(connection.config)
    if errors or not connection.workspace_id:
        return errors
    ref_name = connection.config["s3"]["secret_key_ref"]
    if not SecretRef.objects.filter(workspace_id=connection.workspace_id, name=ref_name).exists():
        errors.append(f"'s3.secret_key_ref': this workspace has no secret reference named '{ref_name}'")
    if connection.config["type"] == "jdbc" and not connection.password_ref_id:
        errors.append("a jdbc catalog needs a password reference for its database user")
    if connection.password_ref_id and connection.password_ref.workspace_id != connection.workspace_id:
        errors.append("the password reference belongs to another workspace")
    others = Connection.objects.filter(kind=Connection.Kind.CATALOG).exclude(workspace_id=connection.workspace_id)
    for other in others:
        if clash := _clash(connection.config, other.config):
            errors.append(clash)
            break
    return errors


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _jdbc_catalog(config: dict[str, Any]) -> tuple[str, int, str, str] | None:
    """What names a JDBC catalog's tables: its database and catalog name (the warehouse is only
    where new tables go; every table of the catalog is listed whatever the warehouse)."""
    if config.get("type") != "jdbc" or not isinstance(config.get("uri"), str):
        return None
    parts = urlsplit(config["uri"])
    try:
        port = parts.port or 5432
    except ValueError:
        return None
    return (parts.hostname or "").lower(), port, parts.path.strip("/"), str(config.get("catalog_name"))


def _clash(mine: dict[str, Any], theirs: Any) -> str:
    """Why a catalog config may not be used beside another workspace's (``theirs``), or ""."""
    if not isinstance(theirs, dict):
        return ""
    ours = [mine.get("warehouse"), mine.get("delta_root")]
    other = [theirs.get("warehouse"), theirs.get("delta_root")]
    if any(isinstance(m, str) and isinstance(t, str) and _overlaps(m, t) for m in ours for t in other):
        return "the warehouse or Delta root overlaps a location another workspace's catalog uses"
    if (jdbc := _jdbc_catalog(mine)) is not None and jdbc == _jdbc_catalog(theirs):
        return "another workspace's catalog already has this catalog name in this database"
    return ""


@dataclass
class Lakehouse:
    """One workspace's catalog in one environment, ready for PyIceberg, delta-rs and Trino."""

    workspace: Workspace
    environment: Environment
    name: str  # the connection's name ("lakehouse" for the embedded default)
    catalog_name: str
    type: str  # "embedded" (SQLite + local disk), "jdbc" or "rest"
    uri: str
    warehouse: str
    delta_root: str
    s3: dict[str, Any] = field(default_factory=dict)
    password: str = ""
    secret_key: str = ""

    @property
    def embedded(self) -> bool:
        return self.type == "embedded"

    def iceberg(self) -> Any:
        """The PyIceberg catalog (SqlCatalog for embedded and jdbc, RestCatalog for rest)."""
        return _iceberg_catalog(self)

    def delta_uri(self, namespace: str, name: str) -> str:
        """Where the Delta table ``namespace.name`` lives: <delta_root>/<namespace>/<name>."""
        check_identifier(namespace, "namespace")
        check_identifier(name, "table name")
        return f"{self.delta_root.rstrip('/')}/{namespace}/{name}"

    def delta_storage_options(self) -> dict[str, str]:
        """delta-rs ``storage_options`` (empty on local disk)."""
        if self.embedded:
            return {}
        endpoint = self.s3["endpoint"]
        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": self.s3["region"],
                   "AWS_ACCESS_KEY_ID": self.s3["access_key_id"], "AWS_SECRET_ACCESS_KEY": self.secret_key}
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
        if self.s3.get("path_style", True):
            options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        return options

    def iceberg_properties(self) -> dict[str, str]:
        """The PyIceberg catalog properties (secrets included: never log them)."""
        if self.embedded:
            return {"uri": self.uri, "warehouse": self.warehouse}
        props = {"warehouse": self.warehouse, "s3.endpoint": self.s3["endpoint"], "s3.region": self.s3["region"],
                 "s3.access-key-id": self.s3["access_key_id"], "s3.secret-access-key": self.secret_key,
                 "s3.force-virtual-addressing": "false" if self.s3.get("path_style", True) else "true"}
        if self.type == "jdbc":
            parts = urlsplit(self.uri)
            from urllib.parse import quote

            auth = quote(parts.username or "", safe="") + (":" + quote(self.password, safe="") if self.password else "")
            props["uri"] = f"postgresql+psycopg://{auth}@{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
        else:
            # The token endpoint named, not guessed: PyIceberg's fallback to it is deprecated.
            props.update({"uri": self.uri, "credential": f"{self.s3['access_key_id']}:{self.secret_key}",
                          "oauth2-server-uri": f"{self.uri.rstrip('/')}/v1/oauth/tokens"})
        return props

    def trino_properties(self) -> dict[str, str]:
        """Trino Iceberg connector properties for this catalog (STACK-NOTES "Trino on the shared
        catalog"), secrets included. The embedded SQLite catalog cannot be shared with Trino."""
        from lakehouse.trino_catalog import CatalogConfigError, trino_catalog_properties

        if self.embedded:
            raise CatalogError("The embedded catalog lives on this machine's disk; Trino needs a jdbc or rest catalog.")
        config = {"catalog_name": self.catalog_name, "type": self.type, "uri": self.uri,
                  "warehouse": self.warehouse, "delta_root": self.delta_root, "s3": self.s3}
        try:
            return trino_catalog_properties(
                config, s3_secret_key=self.secret_key, jdbc_password=self.password or None,
                rest_credential=f"{self.s3['access_key_id']}:{self.secret_key}" if self.type == "rest" else None)
        except CatalogConfigError as exc:
            raise CatalogError(str(exc)) from None


def check_identifier(value: Any, what: str) -> str:
    """``value`` if it is a plain identifier; CatalogError otherwise (no paths, no dots, no case games)."""
    if not (isinstance(value, str) and IDENT.fullmatch(value)):
        raise CatalogError(f"The {what} {value!r} is not a plain identifier (lower-case letters, digits and _).")
    return value


def embedded_root(workspace: Workspace, environment: Environment) -> Path:
    """<LAKEHOUSE_DIR>/<workspace slug>/<environment>: the embedded catalog's folder."""
    base = Path(settings.LAKEHOUSE_DIR).resolve()
    root = (base / workspace.slug / environment.name).resolve()
    if base not in root.parents:  # slugs and environment names cannot do this; belt and braces
        raise CatalogError("The embedded lakehouse folder must stay inside LAKEHOUSE_DIR.")
    return root


def catalog_for(workspace: Workspace, environment: Environment, name: str = EMBEDDED_NAME) -> Lakehouse:
    """The catalog ``name`` of ``workspace`` in ``environment``: its catalog connection, or the
    embedded one (SQLite + local disk) when the name is the default and no connection has it."""
    if environment.workspace_id != workspace.pk:
        raise CatalogError("This environment belongs to another workspace.")
    try:
        conn = connection_resolve(workspace=workspace, environment=environment, name=name)
    except ConnectionMissing:
        conn = None
    if conn is None:
        if name != EMBEDDED_NAME:
            raise CatalogError(f"No catalog connection named '{name}' in {workspace.slug}/{environment.name}.")
        root = embedded_root(workspace, environment)
        (root / "warehouse").mkdir(parents=True, exist_ok=True)
        (root / "delta").mkdir(parents=True, exist_ok=True)
        return Lakehouse(workspace=workspace, environment=environment, name=name, catalog_name=EMBEDDED_NAME,
                         type="embedded", uri=f"sqlite:///{root / 'catalog.db'}",
                         warehouse=(root / "warehouse").as_uri(), delta_root=str(root / "delta"))
    if conn.kind != Connection.Kind.CATALOG:
        raise CatalogError(f"Connection '{name}' is {conn.kind}, not a catalog.")
    errors = catalog_config_errors(conn.config)
    if errors:
        log.warning("catalog connection %s is invalid: %s", conn.pk, "; ".join(errors))
        raise CatalogError(f"Catalog connection '{name}' is misconfigured: {errors[0]}.")
    config = conn.config
    # Saved around the admin's checks (or before them): the workspace that attached it first keeps it.
    earlier = Connection.objects.filter(kind=Connection.Kind.CATALOG, pk__lt=conn.pk).exclude(workspace=workspace)
    if any(_clash(config, other) for other in earlier.values_list("config", flat=True)):
        log.warning("catalog connection %s clashes with another workspace's catalog", conn.pk)
        raise CatalogError(f"Catalog '{name}' reaches tables of another workspace's catalog; an administrator "
                           "must give it a catalog and locations of its own.")
    try:
        ref = SecretRef.objects.filter(workspace=workspace, name=config["s3"]["secret_key_ref"]).first()
        if ref is None:
            raise CatalogError(f"Catalog '{name}': this workspace has no secret reference named "
                               f"'{config['s3']['secret_key_ref']}'.")
        secret_key = secret_resolve(ref, workspace_id=workspace.pk)
        password = ""
        if conn.password_ref_id:
            password = secret_resolve(conn.password_ref, workspace_id=workspace.pk)
    except SecretUnavailable as exc:
        log.warning("catalog %s: %s", conn.pk, exc.detail)
        raise CatalogError(f"Catalog '{name}': {exc}") from None
    return Lakehouse(workspace=workspace, environment=environment, name=name, catalog_name=config["catalog_name"],
                     type=config["type"], uri=config["uri"], warehouse=config["warehouse"],
                     delta_root=config["delta_root"], s3=dict(config["s3"]), password=password, secret_key=secret_key)


@functools.lru_cache(maxsize=32)
def _cached_catalog(kind: str, catalog_name: str, frozen: tuple[tuple[str, str], ...]) -> Any:
    # One catalog object per process and config: SqlCatalog holds an SQLAlchemy engine (a pool).
    props = dict(frozen)
    if kind == "rest":
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(catalog_name, **props)
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(catalog_name, **props)


def _iceberg_catalog(lake: Lakehouse) -> Any:
    props = lake.iceberg_properties()
    try:
        return _cached_catalog(lake.type, lake.catalog_name, tuple(sorted(props.items())))
    except Exception as exc:  # a driver or network error: the detail (without secrets) to the log
        log.warning("catalog %s (%s) cannot be opened: %s", lake.name, lake.type, type(exc).__name__,
                    extra={"workspace_id": lake.workspace.pk})
        raise CatalogError(f"Catalog '{lake.name}' cannot be reached ({type(exc).__name__}).") from None
