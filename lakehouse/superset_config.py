"""The ``superset`` connection: where Superset is, who Control Room signs in as, and through which
Trino connection, with which Trino login of its own, Superset reads the lake.

Config ``{"url": "https://superset.example", "username": "controlroom", "trino_connection":
"trino", "trino_user": "superset", "trino_password_ref": "superset-trino", "verify": true}``; the
Superset user's password is the connection's secret reference. Superset logs in to Trino as
``<trino_user>~ro`` (``superset~ro``), a login of its own in Trino's password file, whose password
is the secret reference ``trino_password_ref`` names. Trino's shipped rules give ``~ro`` identities
SELECT only and let no one but Control Room's service user impersonate, so nothing made in
Superset (SQL Lab included) can write to the lake or act as anyone else. The Trino connection
gives only the address, TLS and catalog: its service user's password never reaches Superset (that
user may impersonate any Control Room user, writes included)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db.models import Q

from connections.models import Connection, SecretRef
from connections.services import ConnectionMissing, SecretUnavailable, connection_resolve, secret_resolve
from controlroom.models import Environment
from lakehouse.superset_client import SupersetClient, SupersetError

# An end-user name of Trino's rules (compose/trino/rules.json), before "~ro".
TRINO_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,60}")
READ_ONLY_SUFFIX = "~ro"
SECRET_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")  # a SecretRef name (a slug)


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
        errors.append("'trino_user' must be a Trino user name (letters, digits, . _ @ -; Superset logs in as its "
                      "read-only identity <user>~ro)")
    ref = config.get("trino_password_ref")
    if not isinstance(ref, str) or not SECRET_NAME.fullmatch(ref):
        errors.append("'trino_password_ref' must name the secret reference of the password of Superset's own "
                      "Trino login (<user>~ro)")
    if not isinstance(config.get("verify", True), bool):
        errors.append("'verify' must be true or false")
    return errors


def superset_connection_errors(conn: Connection) -> list[str]:
    """The config rules, that its Trino connection exists in the workspace and is Trino, and that
    its Trino password reference is one of the workspace's and not the Trino service user's."""
    errors = superset_config_errors(conn.config)
    if errors or not conn.workspace_id:
        return errors
    name = conn.config["trino_connection"]
    scope = Q(environment__isnull=True) | Q(environment_id=conn.environment_id) if conn.environment_id else Q()
    found = list(Connection.objects.filter(scope, workspace_id=conn.workspace_id, name=name))
    kinds = {c.kind for c in found}
    if not kinds:
        return [f"'trino_connection' names no connection of this workspace: '{name}'"]
    if kinds != {Connection.Kind.TRINO}:
        return [f"'trino_connection' must name a Trino connection; '{name}' is {', '.join(sorted(kinds))}"]
    ref_name = conn.config["trino_password_ref"]
    ref = SecretRef.objects.filter(workspace_id=conn.workspace_id, name=ref_name).first()
    if ref is None:
        return [f"'trino_password_ref': this workspace has no secret reference named '{ref_name}'"]
    if any(c.password_ref_id == ref.pk for c in found):
        return [f"'trino_password_ref' must not be the Trino service user's password ('{ref_name}'): Superset "
                "logs in to Trino with a read-only login of its own"]
    return []


def read_only_user(conn: Connection) -> str:
    """Superset's Trino login and session user: ``<trino_user>~ro``, read-only by Trino's rules."""
    return f"{conn.config['trino_user']}{READ_ONLY_SUFFIX}"


@dataclass(frozen=True)
class TrinoForSuperset:
    """How Superset reaches Trino: address and TLS (of the Trino connection), and Superset's own
    read-only login (never the Trino connection's service user)."""

    connection: Connection
    host: str
    port: int
    scheme: str
    verify: bool | str
    user: str  # Superset's login and the identity its queries run as: <trino_user>~ro
    password: str  # that login's password

    def sqlalchemy_uri(self, catalog: str) -> str:
        """``trino://<ro-user>@host:port/<catalog>``: no password in the URI (it travels encrypted)."""
        return f"trino://{self.user}@{self.host}:{self.port}/{catalog}"

    def extra(self) -> dict[str, Any]:
        """The database's ``extra``: connect arguments for the Trino client (scheme, TLS)."""
        return {"engine_params": {"connect_args": {"http_scheme": self.scheme, "verify": self.verify}},
                "allows_virtual_table_explore": True}

    def login_check(self) -> None:
        """Log in to Trino as Superset will and run ``SELECT 1``: SupersetError saying what failed."""
        import requests
        import trino
        from trino.auth import BasicAuthentication

        session = requests.Session()
        # A CA file as the Trino connection names it: $REQUESTS_CA_BUNDLE must not override it.
        session.verify, session.trust_env = self.verify, not isinstance(self.verify, str)
        try:
            with trino.dbapi.connect(host=self.host, port=self.port, user=self.user, http_scheme=self.scheme,
                                     auth=BasicAuthentication(self.user, self.password) if self.password else None,
                                     http_session=session, request_timeout=10) as conn:
                cursor = conn.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
        except Exception as exc:  # the client's errors (HTTP, TLS, auth) all end here: one sentence
            detail = str(exc).replace(self.password, "***") if self.password else str(exc)
            raise SupersetError(f"Trino at {self.host}:{self.port} refused Superset's login {self.user}: "
                                f"{detail.splitlines()[0][:300] if detail else type(exc).__name__}") from None

    def encrypted_extra(self) -> dict[str, Any]:
        """Superset's Trino login: basic auth as ``user`` itself, so no impersonation is involved."""
        return {"auth_method": "basic", "auth_params": {"username": self.user, "password": self.password}}


def trino_for(conn: Connection, *, environment: Environment | None) -> TrinoForSuperset:
    """The Trino connection a ``superset`` connection names (the environment's own first) and
    Superset's own Trino login, its password read now. Raises ``SupersetError`` with a sentence
    for the page."""
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
    password = _login_password(conn, trino)
    config = trino.config or {}
    verify = config.get("verify", True)
    return TrinoForSuperset(
        connection=trino, host=str(config.get("host") or ""), port=int(config.get("port") or 8080),
        scheme=str(config.get("http_scheme") or "http"),
        verify=verify if isinstance(verify, str) and verify.strip() else bool(verify),
        user=read_only_user(conn), password=password)


def _login_password(conn: Connection, trino: Connection) -> str:
    """The password of Superset's Trino login, from the reference ``trino_password_ref`` names."""
    ref_name = conn.config["trino_password_ref"]
    ref = SecretRef.objects.filter(workspace_id=conn.workspace_id, name=ref_name).first()
    if ref is None:
        raise SupersetError(f"Superset connection '{conn.name}' names '{ref_name}' as its Trino password, and this "
                            "workspace has no secret reference of that name.")
    if ref.pk == trino.password_ref_id:  # saved around the admin's checks: never send the service password
        raise SupersetError(f"Superset connection '{conn.name}' names the Trino service user's password "
                            f"('{ref_name}'); choose the password of Superset's own read-only Trino login.")
    try:
        password = secret_resolve(ref, workspace_id=conn.workspace_id)
    except SecretUnavailable as exc:
        said = str(exc)
        raise SupersetError(f"Superset connection '{conn.name}' cannot log in to Trino: {said[:1].lower()}{said[1:]}") \
            from None
    if not password:
        raise SupersetError(f"Superset connection '{conn.name}' cannot log in to Trino: secret '{ref_name}' is empty.")
    return password


def client_for(conn: Connection, *, secrets: tuple[str, ...] = ()) -> SupersetClient:
    """A signed-in client of a ``superset`` connection, its password read now; ``secrets``: more
    values its messages never show (Superset may echo what it is sent, e.g. the Trino login's password)."""
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
