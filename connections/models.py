"""Connections per workspace (and optionally per environment) and secret references.

A secret reference names where a secret lives; the value itself is never stored here."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models

from connections.secret_rules import FOREIGN_REFERENCE, SecretRuleError, secret_locator_check
from controlroom.models import Environment, Workspace


class SecretRef(models.Model):
    class Source(models.TextChoices):
        ENV = "env", "Environment variable"
        FILE = "file", "Mounted file"
        VAULT = "vault", "Vault / OpenBao (KV v2)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="secret_refs")
    name = models.SlugField(max_length=64)
    source = models.CharField(max_length=8, choices=Source.choices)
    locator = models.CharField(max_length=500, help_text="Variable name, absolute file path, or Vault path#key.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_secret_ref")]

    def __str__(self) -> str:
        return f"{self.workspace.slug}:{self.name} ({self.source})"

    def clean(self) -> None:
        """The locator must follow the reference rules (connections.secret_rules)."""
        try:
            secret_locator_check(source=self.source, locator=self.locator,
                                 workspace_slug=self.workspace.slug if self.workspace_id else "")
        except SecretRuleError as exc:
            raise ValidationError({"locator": str(exc)}) from None


class Connection(models.Model):
    class Kind(models.TextChoices):
        DUCKDB = "duckdb", "DuckDB (embedded)"
        TRINO = "trino", "Trino"
        CATALOG = "catalog", "Lakehouse catalog (Iceberg + Delta)"
        SPARK = "spark", "Spark (local, standalone cluster or Spark Connect)"
        MLFLOW = "mlflow", "MLflow tracking server"
        POSTGRES = "postgres", "PostgreSQL source (ingestion)"
        SUPERSET = "superset", "Apache Superset (publish tables and saved queries)"

    # The kinds the SQL editor runs statements on (catalogs and Spark targets are for phases).
    SQL_KINDS = ("duckdb", "trino")

    @property
    def runs_sql(self) -> bool:
        """Whether the SQL editor can run statements on this connection."""
        return self.kind in self.SQL_KINDS

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="connections")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, null=True, blank=True,
        help_text="Empty: the connection serves every environment of the workspace.",
    )
    name = models.SlugField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # trino: {"host", "port", "http_scheme" (http|https), "user" (the service user that
    # impersonates end users), "catalog", "schema", "verify" (TLS), "delta_catalogs" and
    # "iceberg_catalogs" ({catalog connection name: Trino catalog}: where Trino lists that lake's
    # Delta and Iceberg tables, lakehouse.trino_publish)}; password in password_ref.
    # duckdb: {"database": path (optional)}.
    # postgres: {"host", "port", "database", "user", "sslmode"}; password in password_ref (a
    # source that ``ingest`` phases read from, e.g. Odoo's database; never written to).
    # superset: {"url", "username", "trino_connection" (the Trino connection Superset reads
    # through), "trino_user" (Superset logs in to Trino as its read-only identity, <user>~ro),
    # "trino_password_ref" (the name of that login's password's SecretRef), "verify"}; the
    # Superset user's password in password_ref (lakehouse.superset_config).
    config = models.JSONField(default=dict, blank=True)
    password_ref = models.ForeignKey(SecretRef, on_delete=models.PROTECT, null=True, blank=True)
    # Without an environment, a DuckDB connection keeps one database per environment. This makes
    # every environment share one dataset instead, so any write through it counts as a prod write.
    shared_across_environments = models.BooleanField(
        default=False, help_text="One dataset for every environment: writes through it need the prod rule.")
    created_at = models.DateTimeField(auto_now_add=True)

    # The SQL editor opens on this one (at most one per workspace), not the first by name.
    is_default = models.BooleanField(default=False, help_text="The SQL editor's default connection.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "environment", "name"], name="uniq_connection"),
            models.UniqueConstraint(fields=["workspace"], condition=models.Q(is_default=True),
                                    name="one_default_connection"),
        ]
        ordering = ["name"]

    def secrets_named(self) -> list[tuple[str, str]]:
        """(use, name) of each secret reference the config names by name rather than by key: a
        catalog's S3 secret key, a Superset connection's Trino password. Such a reference may not
        be deleted or renamed while named (connections.configure)."""
        config = self.config if isinstance(self.config, dict) else {}
        found = []
        s3 = config.get("s3") if self.kind == self.Kind.CATALOG else None
        if isinstance(s3, dict) and isinstance(s3.get("secret_key_ref"), str):
            found.append(("S3 key", s3["secret_key_ref"]))
        if self.kind == self.Kind.SUPERSET and isinstance(config.get("trino_password_ref"), str):
            found.append(("Trino password", config["trino_password_ref"]))
        return found

    def __str__(self) -> str:
        if self.environment_id:
            scope = self.environment.name
        elif self.shared_across_environments or self.kind != self.Kind.DUCKDB:
            scope = "one dataset for all environments"
        else:
            scope = "one database per environment"
        return f"{self.name} ({self.kind}, {scope})"

    def clean(self) -> None:
        """A connection uses only its own workspace's secret references and environments."""
        errors = {}
        if self.password_ref_id and self.workspace_id and self.password_ref.workspace_id != self.workspace_id:
            errors["password_ref"] = FOREIGN_REFERENCE
        if self.environment_id and self.workspace_id and self.environment.workspace_id != self.workspace_id:
            errors["environment"] = "This environment belongs to another workspace."
        if self.kind == self.Kind.CATALOG and not errors:
            from lakehouse.catalogs import catalog_connection_errors  # the lakehouse owns the format

            if problems := catalog_connection_errors(self):
                errors["config"] = problems
        if self.kind == self.Kind.TRINO and not errors:
            from lakehouse.trino_publish import trino_catalogs_errors

            if problems := trino_catalogs_errors(self.config):
                errors["config"] = problems
        if self.kind == self.Kind.MLFLOW and not errors:
            uri = urlsplit(str((self.config or {}).get("tracking_uri", "")))
            if uri.scheme not in ("http", "https") or not uri.hostname:
                errors["config"] = "'tracking_uri' must be the MLflow server's http(s) address."
        if self.kind == self.Kind.POSTGRES and not errors:
            from lakehouse.ingest.source import source_config_errors

            if problems := source_config_errors(self.config):
                errors["config"] = problems
        if self.kind == self.Kind.SUPERSET and not errors:
            from lakehouse.superset_config import superset_connection_errors

            if problems := superset_connection_errors(self):
                errors["config"] = problems
        if self.kind == self.Kind.SPARK and not errors:
            from lakehouse.spark.target import target_config_errors

            if problems := target_config_errors(self.config):
                errors["config"] = problems
        if errors:
            raise ValidationError(errors)
