"""The ``superset`` connection: where Superset is, who Control Room signs in as, and through which
Trino connection, as which Trino user, Superset reads the lake.

Config ``{"url": "https://superset.example", "username": "controlroom", "trino_connection":
"trino", "trino_user": "superset", "verify": true}``; the Superset user's password is the
connection's secret reference. Superset's queries run in Trino as the read-only identity of
``trino_user`` (``superset~ro``): Trino's shipped rules give ``~ro`` identities SELECT only, so
nothing made in Superset (SQL Lab included) can write to the lake. Superset logs in to Trino as
the Trino connection's service user, whose password it keeps encrypted with its own key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db.models import Q

from connections.models import Connection
from connections.services import ConnectionMissing, SecretUnavailable, connection_resolve, secret_resolve
from controlroom.models import Environment
from lakehouse.superset_client import SupersetClient, SupersetError

# A name Trino's rules let the service user impersonate (compose/trino/rules.json), before "~ro".
TRINO_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,60}")
READ_ONLY_SUFFIX = "~ro"


def superset_config_errors(config: Any) -> list[str]:
    """What is wrong with a ``superset`` connection's config, each message quoting its key."""
    if not isinstance(config, dict):
        return ["The config must be an object."]
    errors = []
    url = urlsplit(str(config.get("url") or ""))
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        errors.append("'url' must be Superset's http(s) address, without a query")
    username = config.get("username")
    if not isinstance(username, str) or not username.strip() or len(username) > 150:
        errors.append("'username' must be the Superset user Control Room signs in as")
    trino = config.get("trino_connection")
    if not isinstance(trino, str) or not re.fullmatch(r"[-a-zA-Z0-9_]{1,64}", trino):
        errors.append("'trino_connection' must name a Trino connection of this workspace")
    user = config.get("trino_user")
    if not isinstance(user, str) or not TRINO_USER.fullmatch(user):
        errors.append("'trino_user' must be a Trino user name (letters, digits, . _ @ -; Superset runs as its "
                      "read-only identity <user>~ro)")
    if not isinstance(config.get("verify", True), bool):
        errors.append("'verify' must be true or false")
    return errors


def superset_connection_errors(conn: Connection) -> list[str]:
    """The config rules, and that its Trino connection exists in the workspace and is Trino."""
    errors = superset_config_errors(conn.config)
    if errors or not conn.workspace_id:
        return errors
    name = conn.config["trino_connection"]
    scope = Q(environment__isnull=True) | Q(environment_id=conn.environment_id) if conn.environment_id else Q()
    found = Connection.objects.filter(scope, workspace_id=conn.workspace_id, name=name)
    kinds = set(found.values_list("kind", flat=True))
    if not kinds:
        return [f"'trino_connection' names no connection of this workspace: '{name}'"]
    if kinds != {Connection.Kind.TRINO}:
        return [f"'trino_connection' must name a Trino connection; '{name}' is {', '.join(sorted(kinds))}"]
    return []


def read_only_user(conn: Connection) -> str:
    """The Trino identity Superset's queries run as: ``<trino_user>~ro``, read-only by Trino's rules."""
    return f"{conn.config['trino_user']}{READ_ONLY_SUFFIX}"


@dataclass(frozen=True)
class TrinoForSuperset:
    """How Superset reaches Trino: address, TLS, the service user and its password, the identity."""

    connection: Connection
    host: str
    port: int
    scheme: str
    verify: bool | str
    service_user: str
    password: str
    user: str  # the read-only identity queries run as

    def sqlalchemy_uri(self, catalog: str) -> str:
        """``trino://<ro-user>@host:port/<catalog>``: no password in the URI (it travels encrypted)."""
        return f"trino://{self.user}@{self.host}:{self.port}/{catalog}"

    def extra(self) -> dict[str, Any]:
        """The database's ``extra``: connect arguments for the Trino client (scheme, TLS)."""
        return {"engine_params": {"connect_args": {"http_scheme": self.scheme, "verify": self.verify}},
                "allows_virtual_table_explore": True}

    def encrypted_extra(self) -> dict[str, Any] | None:
        """Superset's Trino login: basic auth as the service user, who impersonates ``user``."""
        if not self.password:
            return None
        return {"auth_method": "basic", "auth_params": {"username": self.service_user, "password": self.password}}


def trino_for(conn: Connection, *, environment: Environment | None) -> TrinoForSuperset:
    """The Trino connection a ``superset`` connection names (the environment's own first), its
    password read now. Raises ``SupersetError`` with a sentence for the page."""
    if errors := superset_config_errors(conn.config):
        raise SupersetError(f"Superset connection '{conn.name}' is misconfigured: {errors[0]}.")
    name = conn.config["trino_connection"]
    try:
        trino = connection_resolve(workspace=conn.workspace, environment=environment, name=name)
    except ConnectionMissing:
        raise SupersetError(f"Superset connection '{conn.name}' names Trino connection '{name}', "
                            "which this workspace does not have.") from None
    if trino.kind != Connection.Kind.TRINO:
        raise SupersetError(f"Superset connection '{conn.name}' names '{name}', which is {trino.kind}, not Trino.")
    config = trino.config or {}
    password = ""
    if trino.password_ref_id:
        try:
            password = secret_resolve(trino.password_ref, workspace_id=trino.workspace_id)
        except SecretUnavailable as exc:
            raise SupersetError(f"Trino connection '{trino.name}': {exc}") from None
    verify = config.get("verify", True)
    return TrinoForSuperset(
        connection=trino, host=str(config.get("host") or ""), port=int(config.get("port") or 8080),
        scheme=str(config.get("http_scheme") or "http"),
        verify=verify if isinstance(verify, str) and verify.strip() else bool(verify),
        service_user=str(config.get("user") or "controlroom"), password=password, user=read_only_user(conn))


def client_for(conn: Connection, *, secrets: tuple[str, ...] = ()) -> SupersetClient:
    """A signed-in client of a ``superset`` connection, its password read now."""
    if errors := superset_config_errors(conn.config):
        raise SupersetError(f"Superset connection '{conn.name}' is misconfigured: {errors[0]}.")
    if not conn.password_ref_id:
        raise SupersetError(f"Superset connection '{conn.name}' has no password: choose its secret reference.")
    try:
        password = secret_resolve(conn.password_ref, workspace_id=conn.workspace_id)
    except SecretUnavailable as exc:
        raise SupersetError(f"Superset connection '{conn.name}': {exc}") from None
    client = SupersetClient(str(conn.config["url"]), str(conn.config["username"]), password,
                            verify=bool(conn.config.get("verify", True)), secrets=secrets)
    client.login()
    return client
