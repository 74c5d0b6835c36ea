"""Forms of the connections and secret references pages: one form per connection kind, each with
typed fields for that kind's config keys (no JSON box). They parse input and build the config;
the services in connections.configure decide, and their ValidationErrors come back onto the
fields here (``errors_apply``)."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from connections.models import Connection, SecretRef
from connections.secret_rules import vault_prefix
from controlroom.models import Environment

_QUOTED_KEY = re.compile(r"'([a-z0-9_]+(?:\.[a-z0-9_]+)?)'")
ALL_ENVIRONMENTS = ""


def _pairs(text: str, *, what: str) -> dict[str, str]:
    """``name=value`` lines (blank lines skipped) as a dict; a ValidationError names the bad line."""
    pairs: dict[str, str] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValidationError(f"Line {number}: write {what}, one per line.")
        if key in pairs:
            raise ValidationError(f"Line {number}: '{key}' is named twice.")
        pairs[key] = value
    return pairs


def _lines(mapping: Any) -> str:
    return "\n".join(f"{k}={v}" for k, v in mapping.items()) if isinstance(mapping, dict) else ""


class SecretRefChoice(forms.ModelChoiceField):
    """A secret reference of the workspace, shown by its name (never anything it resolves to)."""

    def label_from_instance(self, obj: SecretRef) -> str:
        return f"{obj.name} ({obj.get_source_display().lower()})"


class ConnectionForm(forms.Form):
    """What every kind has: a name and the environment it serves. Subclasses add the kind's
    fields, ``config_build`` (cleaned data to config) and ``CONFIG_FIELDS`` (config key to field)."""

    KIND = ""
    CONFIG_FIELDS: dict[str, str] = {}
    # Config messages that quote no key, by a phrase they contain (the catalog's lookups).
    CONFIG_PHRASES: dict[str, str] = {}
    name = forms.SlugField(max_length=64, help_text="Letters, digits, - and _. Jobs and phases name it.")
    environment = forms.ChoiceField(required=False, help_text="All environments, or only one (it then takes "
                                    "precedence there over a connection of the same name for all).")

    def __init__(self, *args: Any, environments: QuerySet[Environment], secret_refs: QuerySet[SecretRef],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].choices = [(ALL_ENVIRONMENTS, "All environments")] + [
            (str(env.pk), env.name) for env in environments]
        if "password_ref" in self.fields:
            self.fields["password_ref"].queryset = secret_refs

    @classmethod
    def initial_from(cls, conn: Connection) -> dict[str, Any]:
        """The form's initial values for an existing connection."""
        initial = {"name": conn.name, "environment": str(conn.environment_id or ""),
                   "password_ref": conn.password_ref_id,
                   "shared_across_environments": conn.shared_across_environments}
        initial.update(cls.config_initial(conn.config if isinstance(conn.config, dict) else {}))
        return initial

    @classmethod
    def config_initial(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {field: config.get(key) for key, field in cls.CONFIG_FIELDS.items() if "." not in key}

    def config_build(self) -> dict[str, Any]:
        raise NotImplementedError

    def service_arguments(self) -> dict[str, Any]:
        """The keyword arguments of connection_create / connection_update from a valid form."""
        data = self.cleaned_data
        ref = data.get("password_ref")
        return {"name": data["name"], "environment_id": int(data["environment"]) if data["environment"] else None,
                "config": self.config_build(), "password_ref_id": ref.pk if ref else None,
                "shared_across_environments": bool(data.get("shared_across_environments"))}

    def errors_apply(self, error: ValidationError) -> None:
        """Put a service's ValidationError on the fields it concerns; config messages go to the
        field of the key they quote (``'s3.region' must be…``), else above the form."""
        for key, messages in error.message_dict.items():
            for message in messages:
                if key == "config":
                    quoted = _QUOTED_KEY.search(message)
                    field = self.CONFIG_FIELDS.get(quoted.group(1)) if quoted else next(
                        (f for phrase, f in self.CONFIG_PHRASES.items() if phrase in message), None)
                    if field in self.fields and quoted and message.startswith(f"{quoted.group(0)} must "):
                        message = message[len(quoted.group(0)) + 1:]  # beside its field: "Must be …"
                    self.add_error(field if field in self.fields else None, message[:1].upper() + message[1:])
                else:
                    self.add_error(key if key in self.fields else None, message)


class DuckDBForm(ConnectionForm):
    KIND = Connection.Kind.DUCKDB
    CONFIG_FIELDS = {"database": "database"}
    database = forms.CharField(required=False, max_length=200, help_text="A file name inside the workspace's "
                               "warehouse folder. Empty: <name>.duckdb.")
    shared_across_environments = forms.BooleanField(
        required=False, label="One dataset for every environment",
        help_text="Without an environment, each environment gets its own database unless this is ticked; "
                  "then writes through it need the prod rule.")

    def config_build(self) -> dict[str, Any]:
        database = self.cleaned_data["database"].strip()
        return {"database": database} if database else {}


class TrinoForm(ConnectionForm):
    KIND = Connection.Kind.TRINO
    CONFIG_FIELDS = {"host": "host", "port": "port", "http_scheme": "http_scheme", "user": "user",
                     "catalog": "catalog", "schema": "schema", "verify": "verify",
                     "delta_catalogs": "delta_catalogs", "iceberg_catalogs": "iceberg_catalogs"}
    VERIFY = [("true", "Verify the certificate"), ("false", "Do not verify (testing only)"),
              ("ca", "Verify against this CA file")]
    host = forms.CharField(max_length=253, help_text="Host name or address of the coordinator, no scheme.")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=8080)
    http_scheme = forms.ChoiceField(choices=[("http", "http"), ("https", "https")], initial="https",
                                    label="Scheme")
    user = forms.CharField(required=False, max_length=150, label="Service user",
                           help_text="Authenticates and impersonates each end user. Empty: controlroom.")
    password_ref = SecretRefChoice(queryset=SecretRef.objects.none(), required=False, empty_label="(none)",
                                          label="Password (secret reference)",
                                          help_text="The service user's password. Empty: no password.")
    catalog = forms.CharField(required=False, max_length=128, help_text="Default catalog of the editor.")
    schema = forms.CharField(required=False, max_length=128, help_text="Default schema.")
    verify = forms.ChoiceField(choices=VERIFY, initial="true", label="TLS")
    ca_file = forms.CharField(required=False, max_length=500, label="CA file",
                              help_text="Absolute path on this server, when verifying against a CA file.")
    delta_catalogs = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Delta catalogs",
        help_text="One per line: catalog connection=Trino catalog, where Trino lists that lake's Delta tables.")
    iceberg_catalogs = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Iceberg catalogs",
        help_text="One per line: catalog connection=Trino catalog, where Trino lists that lake's Iceberg tables.")

    @classmethod
    def config_initial(cls, config: dict[str, Any]) -> dict[str, Any]:
        initial = super().config_initial(config)
        verify = config.get("verify", True)
        initial["verify"] = "ca" if isinstance(verify, str) and verify.strip() else ("true" if verify else "false")
        initial["ca_file"] = verify if initial["verify"] == "ca" else ""
        initial["delta_catalogs"] = _lines(config.get("delta_catalogs"))
        initial["iceberg_catalogs"] = _lines(config.get("iceberg_catalogs"))
        return initial

    def clean_delta_catalogs(self) -> dict[str, str]:
        return _pairs(self.cleaned_data["delta_catalogs"], what="catalog connection=Trino catalog")

    def clean_iceberg_catalogs(self) -> dict[str, str]:
        return _pairs(self.cleaned_data["iceberg_catalogs"], what="catalog connection=Trino catalog")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("verify") == "ca" and not (data.get("ca_file") or "").strip().startswith("/"):
            self.add_error("ca_file", "Give the CA file's absolute path, or choose another TLS setting.")
        return data

    def config_build(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {"host": data["host"].strip(), "port": data["port"],
                                  "http_scheme": data["http_scheme"]}
        for key in ("user", "catalog", "schema"):
            if data[key].strip():
                config[key] = data[key].strip()
        config["verify"] = data["ca_file"].strip() if data["verify"] == "ca" else data["verify"] == "true"
        for key in ("delta_catalogs", "iceberg_catalogs"):
            if data[key]:
                config[key] = data[key]
        return config


class CatalogForm(ConnectionForm):
    KIND = Connection.Kind.CATALOG
    CONFIG_FIELDS = {"catalog_name": "catalog_name", "type": "type", "uri": "uri", "warehouse": "warehouse",
                     "delta_root": "delta_root", "s3": "s3_endpoint", "s3.endpoint": "s3_endpoint",
                     "s3.region": "s3_region", "s3.access_key_id": "s3_access_key_id",
                     "s3.secret_key_ref": "s3_secret_key_ref", "s3.path_style": "s3_path_style"}
    CONFIG_PHRASES = {"password reference": "password_ref", "Delta root overlaps": "warehouse",
                      "catalog name in this database": "catalog_name"}
    catalog_name = forms.CharField(max_length=63, help_text="The Iceberg catalog's name (lower-case identifier).")
    type = forms.ChoiceField(choices=[("jdbc", "JDBC (PostgreSQL)"), ("rest", "REST")], label="Catalog type")
    uri = forms.CharField(max_length=500, label="URI", help_text="jdbc: postgresql://user@host:5432/database "
                          "(no password: choose its reference below); rest: http(s)://host:port")
    password_ref = SecretRefChoice(queryset=SecretRef.objects.none(), required=False, empty_label="(none)",
                                          label="Database password (secret reference)",
                                          help_text="Required for a JDBC catalog.")
    warehouse = forms.CharField(max_length=500, help_text="Where new Iceberg tables go: s3://bucket/prefix")
    delta_root = forms.CharField(max_length=500, label="Delta root", help_text="s3://bucket/prefix")
    s3_endpoint = forms.CharField(max_length=500, label="S3 endpoint", help_text="http(s)://host:port")
    s3_region = forms.CharField(max_length=128, label="S3 region", initial="us-east-1")
    s3_access_key_id = forms.CharField(max_length=128, label="S3 access key id")
    s3_secret_key_ref = forms.ChoiceField(label="S3 secret key (secret reference)")
    s3_path_style = forms.BooleanField(required=False, initial=True, label="Path-style S3 addressing")

    def __init__(self, *args: Any, secret_refs: QuerySet[SecretRef], **kwargs: Any) -> None:
        super().__init__(*args, secret_refs=secret_refs, **kwargs)
        self.fields["s3_secret_key_ref"].choices = [("", "(choose one)")] + [(r.name, r.name) for r in secret_refs]

    @classmethod
    def config_initial(cls, config: dict[str, Any]) -> dict[str, Any]:
        initial = super().config_initial(config)
        s3 = config.get("s3") if isinstance(config.get("s3"), dict) else {}
        for key in ("endpoint", "region", "access_key_id", "secret_key_ref", "path_style"):
            initial[f"s3_{key}"] = s3.get(key, True if key == "path_style" else "")
        return initial

    def config_build(self) -> dict[str, Any]:
        data = self.cleaned_data
        config = {key: data[key].strip() for key in ("catalog_name", "type", "uri", "warehouse", "delta_root")}
        config["s3"] = {"endpoint": data["s3_endpoint"].strip(), "region": data["s3_region"].strip(),
                        "access_key_id": data["s3_access_key_id"].strip(),
                        "secret_key_ref": data["s3_secret_key_ref"], "path_style": data["s3_path_style"]}
        return config


class SparkForm(ConnectionForm):
    KIND = Connection.Kind.SPARK
    CONFIG_FIELDS = {"master": "master", "ui_url": "ui_url", "conf": "conf"}
    master = forms.CharField(max_length=300, help_text="local[N], spark://host:7077 (a standalone master) or "
                             "sc://host:15002 (Spark Connect).")
    ui_url = forms.CharField(required=False, max_length=300, label="Master web UI",
                             help_text="Standalone only: http://host:8080, to show and stop applications.")
    conf = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Resource settings",
                           help_text="One per line, e.g. spark.executor.memory=2g (memory, cores, parallelism, "
                                     "shuffle partitions only).")

    @classmethod
    def config_initial(cls, config: dict[str, Any]) -> dict[str, Any]:
        initial = super().config_initial(config)
        initial["conf"] = _lines(config.get("conf"))
        return initial

    def clean_conf(self) -> dict[str, str]:
        return _pairs(self.cleaned_data["conf"], what="setting=value")

    def config_build(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {"master": data["master"].strip()}
        if data["ui_url"].strip():
            config["ui_url"] = data["ui_url"].strip()
        if data["conf"]:
            config["conf"] = data["conf"]
        return config


class MlflowForm(ConnectionForm):
    KIND = Connection.Kind.MLFLOW
    CONFIG_FIELDS = {"tracking_uri": "tracking_uri"}
    tracking_uri = forms.CharField(max_length=300, label="Tracking URI",
                                   help_text="The MLflow server's address, e.g. https://mlflow.example; its token "
                                             "(if it asks for one) is the secret reference below.")
    password_ref = SecretRefChoice(queryset=SecretRef.objects.none(), required=False, empty_label="(none)",
                                   label="Token", help_text="The tracking server's bearer token, if it needs one.")

    def config_build(self) -> dict[str, Any]:
        return {"tracking_uri": self.cleaned_data["tracking_uri"].strip().rstrip("/")}


class SupersetForm(ConnectionForm):
    KIND = Connection.Kind.SUPERSET
    CONFIG_FIELDS = {"url": "url", "username": "username", "trino_connection": "trino_connection",
                     "trino_user": "trino_user", "trino_password_ref": "trino_password_ref", "verify": "verify"}
    url = forms.CharField(max_length=300, label="Superset URL", help_text="Superset's address, e.g. "
                          "https://superset.example.")
    username = forms.CharField(max_length=150, label="Superset user",
                               help_text="Control Room signs in as this user to publish (it needs to create "
                                         "databases, datasets and charts).")
    password_ref = SecretRefChoice(queryset=SecretRef.objects.none(), label="Password (secret reference)",
                                   help_text="The Superset user's password.")
    trino_connection = forms.CharField(max_length=64, label="Trino connection",
                                       help_text="The Trino connection Superset reads the lake through (its "
                                                 "address and TLS; never its service user's password).")
    trino_user = forms.CharField(max_length=61, initial="superset", label="Trino user",
                                 help_text="Superset logs in to Trino as this user's read-only identity, "
                                           "<user>~ro, which Trino lets only read and impersonate no one.")
    trino_password_ref = forms.ChoiceField(label="Trino password (secret reference)",
                                           help_text="The password of that <user>~ro login in Trino's password "
                                                     "file: Superset's own, not the Trino service user's.")
    verify = forms.BooleanField(required=False, initial=True, label="Verify Superset's TLS certificate")

    def __init__(self, *args: Any, secret_refs: QuerySet[SecretRef], **kwargs: Any) -> None:
        super().__init__(*args, secret_refs=secret_refs, **kwargs)
        self.fields["trino_password_ref"].choices = [("", "(choose one)")] + [(r.name, r.name) for r in secret_refs]

    def config_build(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"url": data["url"].strip().rstrip("/"), "username": data["username"].strip(),
                "trino_connection": data["trino_connection"].strip(), "trino_user": data["trino_user"].strip(),
                "trino_password_ref": data["trino_password_ref"], "verify": bool(data["verify"])}


class PostgresForm(ConnectionForm):
    KIND = Connection.Kind.POSTGRES
    CONFIG_FIELDS = {"host": "host", "port": "port", "database": "database", "user": "user", "sslmode": "sslmode"}
    SSLMODES = [(mode, mode) for mode in ("prefer", "require", "verify-ca", "verify-full", "disable", "allow")]
    host = forms.CharField(max_length=253, help_text="Host name or address of the source database server.")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=5432)
    database = forms.CharField(max_length=63, help_text="The database to read, e.g. Odoo's.")
    user = forms.CharField(max_length=63, help_text="A user that may only read the tables to ingest.")
    password_ref = SecretRefChoice(queryset=SecretRef.objects.none(), required=False, empty_label="(none)",
                                   label="Password (secret reference)", help_text="The user's password.")
    sslmode = forms.ChoiceField(choices=SSLMODES, initial="prefer", label="TLS (sslmode)")

    def config_build(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"host": data["host"].strip(), "port": data["port"], "database": data["database"].strip(),
                "user": data["user"].strip(), "sslmode": data["sslmode"]}


FORMS: dict[str, type[ConnectionForm]] = {form.KIND: form for form in (DuckDBForm, TrinoForm, CatalogForm, SparkForm,
                                                                       MlflowForm, SupersetForm, PostgresForm)}


class SecretRefForm(forms.Form):
    """A secret reference: where the value lives, never the value."""

    name = forms.SlugField(max_length=64, help_text="Connections choose it by this name.")
    source = forms.ChoiceField(choices=SecretRef.Source.choices)
    locator = forms.CharField(max_length=500)

    def __init__(self, *args: Any, workspace_slug: str = "<workspace>", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        folders = ", ".join(str(d) for d in settings.SECRET_FILE_DIRS) or "none configured"
        self.fields["locator"].help_text = (f"A variable name starting with {settings.SECRET_ENV_PREFIX}, the "
                                            f"absolute path of a file inside {folders}, or a Vault/OpenBao secret's "
                                            f"path and key, as {vault_prefix(workspace_slug)}name#key.")

    def errors_apply(self, error: ValidationError) -> None:
        """Put a service's ValidationError on its fields."""
        for key, messages in error.message_dict.items():
            for message in messages:
                self.add_error(key if key in self.fields else None, message)
