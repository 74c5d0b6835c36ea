"""Workspace admins create, change and delete their workspace's connections and secret references.

Every write re-runs the model's own checks (``full_clean``: the per-kind config rules of the
lakehouse, Trino and Spark, own-workspace references) plus the rules below, and records an
audit event in the same transaction. Validation problems are raised as Django's
``ValidationError`` keyed by field (``config`` for the per-kind config), so a form can put each
message on its field; refusals that are not about one field are ``ServiceError``."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, RestrictedError

from connections.models import Connection, SecretRef
from controlroom.access import Access
from controlroom.audit import AuditTarget, audit_record
from controlroom.models import Environment, Role
from controlroom.services import ServiceError

TRINO_SCHEMES = ("http", "https")


def _kind_config_errors(kind: str, config: dict[str, Any]) -> list[str]:
    """The rules the model's clean leaves to the engines (which would only fail at first use)."""
    errors = []
    if kind == Connection.Kind.TRINO:
        if not isinstance(config.get("host"), str) or not config["host"].strip() or "/" in config["host"]:
            errors.append("'host' must be a host name or address (no scheme, no path)")
        port = config.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            errors.append("'port' must be a number from 1 to 65535")
        if config.get("http_scheme", "http") not in TRINO_SCHEMES:
            errors.append("'http_scheme' must be http or https")
    elif kind == Connection.Kind.DUCKDB:
        database = config.get("database")
        if database is not None:
            path = PurePosixPath(str(database))
            if not str(database).strip() or path.is_absolute() or ".." in path.parts or "\\" in str(database):
                errors.append("'database' must be a file name inside the workspace's warehouse folder "
                              "(no absolute path, no ..)")
    return errors


def _environment(access: Access, environment_id: int | None) -> Environment | None:
    if environment_id is None:
        return None
    env = Environment.objects.filter(workspace=access.workspace, pk=environment_id).first()
    if env is None:
        raise ValidationError({"environment": "This environment belongs to another workspace."})
    return env


def _password_ref(access: Access, password_ref_id: int | None) -> SecretRef | None:
    if password_ref_id is None:
        return None
    ref = SecretRef.objects.filter(workspace=access.workspace, pk=password_ref_id).first()
    if ref is None:
        raise ValidationError({"password_ref": "This secret reference belongs to another workspace."})
    return ref


def _summary(conn: Connection) -> dict[str, Any]:
    """What the audit log keeps of a connection (its config holds references, never secrets)."""
    return {"name": conn.name, "kind": conn.kind, "environment": conn.environment.name if conn.environment else None,
            "shared_across_environments": conn.shared_across_environments, "config": conn.config,
            "password_ref": conn.password_ref.name if conn.password_ref else None}


def _validate_connection(conn: Connection) -> None:
    errors: dict[str, list[str]] = {}
    try:
        conn.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors = exc.message_dict
    if "config" not in errors and (problems := _kind_config_errors(conn.kind, conn.config)):
        errors["config"] = problems
    duplicate = Connection.objects.filter(workspace_id=conn.workspace_id, environment_id=conn.environment_id,
                                          name=conn.name).exclude(pk=conn.pk)
    if conn.name and duplicate.exists():
        scope = f"the {conn.environment.name} environment" if conn.environment_id else "all environments"
        errors.setdefault("name", []).append(f"A connection named '{conn.name}' already serves {scope}.")
    if conn.kind != Connection.Kind.DUCKDB and conn.shared_across_environments:
        errors.setdefault("shared_across_environments", []).append(
            "Only a DuckDB connection keeps one database per environment; other kinds are shared already.")
    if errors:
        raise ValidationError(errors)


def connection_create(*, access: Access, kind: str, name: str, environment_id: int | None,
                      config: dict[str, Any], password_ref_id: int | None = None,
                      shared_across_environments: bool = False) -> Connection:
    """Create a connection of ``kind`` in the access's workspace (admins only; audited as
    ``connection.create``). Raises ValidationError keyed by field when a rule refuses it."""
    access.require(Role.ADMIN)
    if kind not in Connection.Kind.values:
        raise ServiceError("Choose a connection kind.")
    conn = Connection(workspace=access.workspace, kind=kind, name=name, config=config,
                      environment=_environment(access, environment_id),
                      password_ref=_password_ref(access, password_ref_id),
                      shared_across_environments=bool(shared_across_environments))
    with transaction.atomic():
        _validate_connection(conn)
        try:
            with transaction.atomic():
                conn.save()
        except IntegrityError:  # the same name saved meanwhile
            raise ValidationError({"name": f"A connection named '{name}' already exists here."}) from None
        audit_record(access=access, action="connection.create", target=conn, after=_summary(conn))
    return conn


def connection_update(*, access: Access, connection_id: int, name: str, environment_id: int | None,
                      config: dict[str, Any], password_ref_id: int | None = None,
                      shared_across_environments: bool = False) -> Connection:
    """Change a connection of the access's workspace (its kind stays); audited as
    ``connection.update`` with the fields before and after."""
    access.require(Role.ADMIN)
    environment = _environment(access, environment_id)
    password_ref = _password_ref(access, password_ref_id)
    with transaction.atomic():
        conn = (Connection.objects.select_for_update(of=("self",)).select_related("environment", "password_ref")
                .filter(workspace=access.workspace, pk=connection_id).first())
        if conn is None:
            raise ServiceError("No such connection in this workspace.", code="not_found")
        before = _summary(conn)
        conn.name, conn.config, conn.environment, conn.password_ref = name, config, environment, password_ref
        conn.shared_across_environments = bool(shared_across_environments)
        _validate_connection(conn)
        after = _summary(conn)
        if after == before:
            return conn
        try:
            with transaction.atomic():
                conn.save()
        except IntegrityError:
            raise ValidationError({"name": f"A connection named '{name}' already exists here."}) from None
        changed = [key for key in after if after[key] != before[key]]
        audit_record(access=access, action="connection.update", target=conn,
                     before={key: before[key] for key in changed}, after={key: after[key] for key in changed})
    return conn


def _users(error: ProtectedError | RestrictedError) -> str:
    """The rows that refused a delete, named for the admin: "connection 'trino'", "the git source"."""
    objects = list(getattr(error, "protected_objects", None) or getattr(error, "restricted_objects", None) or [])
    names = {f"connection '{obj.name}'" if isinstance(obj, Connection)
             else f"the {obj._meta.verbose_name}" for obj in objects}
    return ", ".join(sorted(names))[:300]


def connection_delete(*, access: Access, connection_id: int) -> Connection:
    """Delete a connection of the access's workspace (audited as ``connection.delete``). Jobs
    name connections by name and are not stopped here; a row that protects the connection is."""
    access.require(Role.ADMIN)
    try:
        with transaction.atomic():
            conn = (Connection.objects.select_for_update(of=("self",)).select_related("environment", "password_ref")
                    .filter(workspace=access.workspace, pk=connection_id).first())
            if conn is None:
                raise ServiceError("No such connection in this workspace.", code="not_found")
            audit_record(access=access, action="connection.delete", target=AuditTarget.of(conn), before=_summary(conn))
            conn.delete()
    except (ProtectedError, RestrictedError) as exc:
        raise ServiceError(f"Connection '{conn.name}' is still used by {_users(exc)}: remove that first.",
                           code="conflict") from None
    return conn


# The kinds whose config names secret references by name (Connection.secrets_named), as words.
_KIND_WORDS = {Connection.Kind.CATALOG: "catalog", Connection.Kind.SUPERSET: "Superset"}


def _connections_naming(ref: SecretRef, name: str) -> list[Connection]:
    """Connections of the workspace whose config names secret ``name`` (``Connection.secrets_named``:
    a catalog's S3 secret key, a Superset connection's Trino password)."""
    found = Connection.objects.filter(workspace_id=ref.workspace_id, kind__in=tuple(_KIND_WORDS))
    return sorted((c for c in found if any(used == name for _, used in c.secrets_named())), key=lambda c: c.name)


def _naming_uses(conns: list[Connection], name: str) -> str:
    """"the S3 secret key of catalog connection lake, the Trino password of Superset connection bi"."""
    words = {"S3 key": "S3 secret key"}
    return ", ".join(f"the {words.get(use, use)} of {_KIND_WORDS[c.kind]} connection {c.name}"
                     for c in conns for use, used in c.secrets_named() if used == name)


def _validate_secret(ref: SecretRef) -> None:
    try:
        ref.full_clean()
    except ValidationError as exc:
        errors = exc.message_dict
        if "__all__" in errors and any("name" in m.lower() for m in errors["__all__"]):
            errors.setdefault("name", []).append(f"A secret reference named '{ref.name}' already exists here.")
            errors.pop("__all__")
        raise ValidationError(errors) from None


def secret_ref_create(*, access: Access, name: str, source: str, locator: str) -> SecretRef:
    """Create a secret reference (the rules of connections.secret_rules apply); audited as
    ``secret_ref.create``. The value is never read or recorded here."""
    access.require(Role.ADMIN)
    ref = SecretRef(workspace=access.workspace, name=name, source=source, locator=locator)
    with transaction.atomic():
        _validate_secret(ref)
        ref.save()
        audit_record(access=access, action="secret_ref.create", target=ref,
                     after={"name": name, "source": source, "locator": locator})
    return ref


def secret_ref_update(*, access: Access, secret_id: int, name: str, source: str, locator: str) -> SecretRef:
    """Change where a secret reference points, or its name (not while a connection's config names
    it: catalogs refer to their S3 secret, Superset to its Trino password, by name); audited as
    ``secret_ref.update``."""
    access.require(Role.ADMIN)
    with transaction.atomic():
        ref = SecretRef.objects.select_for_update().filter(workspace=access.workspace, pk=secret_id).first()
        if ref is None:
            raise ServiceError("No such secret reference in this workspace.", code="not_found")
        before = {"name": ref.name, "source": ref.source, "locator": ref.locator}
        if name != ref.name and (users := _connections_naming(ref, ref.name)):
            noun = "the catalog" if all(c.kind == Connection.Kind.CATALOG for c in users) else "that connection"
            who = ", ".join(f"{_KIND_WORDS[c.kind]} connection {c.name}" for c in users)
            raise ValidationError({"name": f"{who[:1].upper()}{who[1:]} names this reference as '{ref.name}': "
                                           f"change {noun} first."})
        ref.name, ref.source, ref.locator = name, source, locator
        _validate_secret(ref)
        after = {"name": name, "source": source, "locator": locator}
        if after != before:
            ref.save()
            audit_record(access=access, action="secret_ref.update", target=ref, before=before, after=after)
    return ref


def secret_ref_delete(*, access: Access, secret_id: int) -> SecretRef:
    """Delete a secret reference nothing uses (audited as ``secret_ref.delete``); refused with
    the users' names while a connection's password, a catalog's S3 key, a Superset connection's
    Trino password or a git source's webhook needs it."""
    access.require(Role.ADMIN)
    try:
        with transaction.atomic():
            ref = SecretRef.objects.select_for_update().filter(workspace=access.workspace, pk=secret_id).first()
            if ref is None:
                raise ServiceError("No such secret reference in this workspace.", code="not_found")
            if users := _connections_naming(ref, ref.name):
                raise ServiceError(f"Secret reference '{ref.name}' is {_naming_uses(users, ref.name)}: change that "
                                   "connection first.", code="conflict")
            audit_record(access=access, action="secret_ref.delete", target=AuditTarget.of(ref),
                         before={"name": ref.name, "source": ref.source, "locator": ref.locator})
            ref.delete()
    except (ProtectedError, RestrictedError) as exc:
        raise ServiceError(f"Secret reference '{ref.name}' is still used by {_users(exc)}: "
                           "change that first.", code="conflict") from None
    return ref
