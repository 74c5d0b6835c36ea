"""The connections and secret references pages of workspace admins (controlroom/workspace_admin/
views_connections.py, connections/configure.py, connections/probe.py): a form per kind whose
errors land on their fields, only the own workspace's references and ids, audited writes,
secret values that never reach a page, and Test connection against real engines."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from connections.configure import connection_create, secret_ref_delete
from connections.models import Connection, SecretRef
from connections.probe import connection_test
from controlroom.audit import audit_verify
from controlroom.models import AuditEvent
from controlroom.services import ServiceError
from tests.servers import free_port

pytestmark = pytest.mark.django_db
LIST = "/w/acme/settings/connections/"
SECRETS = "/w/acme/settings/secrets/"
VALUE = "hunter2-Zq8-never-on-a-page"
ORDER = ["viewer", "analyst", "operator", "admin"]


def new_url(kind: str) -> str:
    return reverse("workspace_admin:connection_new", kwargs={"workspace": "acme", "kind": kind})


def url(name: str, **kwargs) -> str:
    return reverse(f"workspace_admin:{name}", kwargs={"workspace": "acme", **kwargs})


def shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def field_errors(response, field: str) -> list[str]:
    return list(response.context["form"].errors.get(field, []))


@pytest.fixture(autouse=True)
def prefix(settings) -> str:
    """The variable prefix these tests name (whatever the environment configured)."""
    settings.SECRET_ENV_PREFIX = "CONTROLROOM_SECRET_"
    return settings.SECRET_ENV_PREFIX


@pytest.fixture
def secret(world, monkeypatch, prefix) -> SecretRef:
    """An env reference whose variable (named with SECRET_ENV_PREFIX) really holds VALUE."""
    monkeypatch.setenv(f"{prefix}TRINO_PW", VALUE)
    return SecretRef.objects.create(workspace=world.workspace, name="trino-pw", source="env",
                                    locator=f"{prefix}TRINO_PW")


@pytest.fixture
def foreign_secret(world) -> SecretRef:
    return SecretRef.objects.create(workspace=world.other, name="theirs", source="env",
                                    locator="CONTROLROOM_SECRET_THEIRS")


def trino_post(**overrides) -> dict:
    data = {"name": "lake-trino", "environment": "", "host": "127.0.0.1", "port": "8080", "http_scheme": "http",
            "user": "svc", "catalog": "memory", "schema": "default", "verify": "true", "ca_file": "",
            "delta_catalogs": "", "iceberg_catalogs": "", "password_ref": ""}
    data.update(overrides)
    return data


def catalog_post(**overrides) -> dict:
    data = {"name": "lake", "environment": "", "catalog_name": "lakehouse", "type": "jdbc",
            "uri": "postgresql://lake@db.example:5432/catalog", "password_ref": "", "warehouse": "s3://acme-lake/iceberg",
            "delta_root": "s3://acme-lake/delta", "s3_endpoint": "http://s3.example:9000", "s3_region": "us-east-1",
            "s3_access_key_id": "AKIDEXAMPLE", "s3_secret_key_ref": "trino-pw", "s3_path_style": "on"}
    data.update(overrides)
    return data


def test_every_page_needs_admin_and_other_workspaces_ids_are_404(world, secret, foreign_secret):
    ours = Connection.objects.get(workspace=world.workspace, name="warehouse")
    theirs = Connection.objects.get(workspace=world.other, name="warehouse")
    gets = [url("connection_edit", connection=ours.pk), url("secret_edit", secret=secret.pk)]
    for page in gets:
        for persona in ORDER[:-1]:
            assert world.client(persona).get(page).status_code == 403, (persona, page)
        assert world.client("admin").get(page).status_code == 200
        assert world.client("outsider").get(page).status_code == 404
    posts = [url("connection_test", connection=ours.pk), url("connection_remove", connection=ours.pk),
             url("connection_default", connection=ours.pk), url("secret_remove", secret=secret.pk)]
    for page in posts:
        assert world.client("operator").post(page).status_code == 403
        assert world.client("outsider").post(page).status_code == 404
    admin = world.client("admin")
    for page in [url("connection_edit", connection=theirs.pk), url("secret_edit", secret=foreign_secret.pk),
                 url("connection_edit", connection="99999999999999999999"), url("connection_edit", connection="x")]:
        assert admin.get(page).status_code == 404, page
    for page in [url("connection_test", connection=theirs.pk), url("connection_remove", connection=theirs.pk),
                 url("connection_default", connection=theirs.pk), url("secret_remove", secret=foreign_secret.pk)]:
        assert admin.post(page).status_code == 404, page
    assert admin.post(url("connection_edit", connection=theirs.pk), trino_post()).status_code == 404
    assert admin.get(new_url("oracle")).status_code == 404
    assert Connection.objects.filter(pk=theirs.pk).exists() and SecretRef.objects.filter(pk=foreign_secret.pk).exists()
    assert not AuditEvent.objects.filter(action__startswith="connection.").exists()


def test_trino_form_builds_the_config_and_edits_it_back(world, secret):
    admin = world.client("admin")
    dev = world.workspace.environments.get(name="dev")
    response = admin.post(new_url("trino"), trino_post(
        environment=str(dev.pk), password_ref=str(secret.pk), verify="ca", ca_file="/etc/ssl/ca.pem",
        delta_catalogs="lake=delta_lake\n\n", iceberg_catalogs="lake = iceberg"))
    conn = Connection.objects.get(workspace=world.workspace, name="lake-trino")
    assert response.status_code == 302 and response["Location"] == url("connection_edit", connection=conn.pk)
    assert conn.kind == "trino" and conn.environment == dev and conn.password_ref == secret
    assert conn.config == {"host": "127.0.0.1", "port": 8080, "http_scheme": "http", "user": "svc",
                           "catalog": "memory", "schema": "default", "verify": "/etc/ssl/ca.pem",
                           "delta_catalogs": {"lake": "delta_lake"}, "iceberg_catalogs": {"lake": "iceberg"}}
    form = admin.get(url("connection_edit", connection=conn.pk)).context["form"]
    assert form.initial["verify"] == "ca" and form.initial["delta_catalogs"] == "lake=delta_lake"
    assert form.initial["port"] == 8080 and form.initial["password_ref"] == secret.pk
    response = admin.post(url("connection_edit", connection=conn.pk),
                          trino_post(environment=str(dev.pk), port="8443", http_scheme="https", verify="false"))
    assert response.status_code == 302
    conn.refresh_from_db()
    assert conn.config["port"] == 8443 and conn.config["verify"] is False and conn.password_ref is None
    assert "delta_catalogs" not in conn.config and conn.kind == "trino"
    event = AuditEvent.objects.filter(action="connection.update").get()
    assert event.before["password_ref"] == "trino-pw" and event.after["password_ref"] is None
    assert event.before["config"]["port"] == 8080 and event.after["config"]["port"] == 8443
    assert "name" not in event.after  # only what changed


@pytest.mark.parametrize(("kind", "data", "field", "text"), [
    ("trino", trino_post(port="70000"), "port", "65535"),
    ("trino", trino_post(host=""), "host", "required"),
    ("trino", trino_post(delta_catalogs="lake delta"), "delta_catalogs", "Line 1"),
    ("trino", trino_post(delta_catalogs="lake=Not-An-Ident"), "delta_catalogs", "entries must be"),
    ("trino", trino_post(verify="ca", ca_file=""), "ca_file", "absolute path"),
    ("trino", trino_post(name="warehouse"), "name", "already serves all environments"),
    ("trino", trino_post(name="bad name"), "name", "valid"),
    ("duckdb", {"name": "d", "environment": "", "database": "../escape.duckdb"}, "database", "no .."),
    ("catalog", catalog_post(warehouse="/tmp/local"), "warehouse", "s3://bucket/prefix"),
    ("catalog", catalog_post(uri="postgresql://lake:pw@db.example:5432/catalog"), "uri", "Must not hold a password"),
    ("catalog", catalog_post(s3_endpoint="ftp://x"), "s3_endpoint", "http:// or https://"),
    ("catalog", catalog_post(s3_secret_key_ref=""), "s3_secret_key_ref", "required"),
    ("catalog", catalog_post(), "password_ref", "password reference"),  # jdbc without a password
    ("spark", {"name": "sp", "environment": "", "master": "yarn", "ui_url": "", "conf": ""}, "master", "local[N]"),
    ("spark", {"name": "sp", "environment": "", "master": "local[2]", "ui_url": "",
               "conf": "spark.jars=/tmp/evil.jar"}, "conf", "may not set"),
    ("mlflow", {"name": "ml", "environment": "", "tracking_uri": "ftp://mlflow.example"}, "tracking_uri",
     "http(s) address"),
    ("mlflow", {"name": "ml", "environment": "", "tracking_uri": ""}, "tracking_uri", "required"),
    ("postgres", {"name": "odoo", "environment": "", "host": "db", "port": "5432", "database": "",
                  "user": "ro", "sslmode": "prefer"}, "database", "required"),
    ("postgres", {"name": "odoo", "environment": "", "host": "db", "port": "0", "database": "odoo",
                  "user": "ro", "sslmode": "prefer"}, "port", "greater than or equal to 1"),
])
def test_validation_errors_land_on_their_fields(world, secret, kind, data, field, text):
    response = world.client("admin").post(new_url(kind), data)
    assert response.status_code == 200
    errors = field_errors(response, field)
    assert any(text in e for e in errors), (field, response.context["form"].errors)
    assert f'data-field="{field}"' in response.content.decode()
    assert not Connection.objects.filter(workspace=world.workspace, kind=kind).exclude(name="warehouse").exists()
    assert not AuditEvent.objects.filter(action="connection.create").exists()


def test_postgres_form_saves_an_ingestion_source_and_edits_it_back(world, secret):
    admin = world.client("admin")
    data = {"name": "odoo", "environment": "", "host": "odoo-db.internal", "port": "5433", "database": "odoo",
            "user": "controlroom_ro", "password_ref": str(secret.pk), "sslmode": "require"}
    response = admin.post(new_url("postgres"), data)
    conn = Connection.objects.get(workspace=world.workspace, name="odoo")
    assert response.status_code == 302 and conn.kind == "postgres" and conn.password_ref == secret
    assert conn.config == {"host": "odoo-db.internal", "port": 5433, "database": "odoo", "user": "controlroom_ro",
                           "sslmode": "require"}
    form = admin.get(url("connection_edit", connection=conn.pk)).context["form"]
    assert form.initial["port"] == 5433 and form.initial["sslmode"] == "require"
    assert AuditEvent.objects.filter(action="connection.create").count() == 1


def test_valid_catalog_and_spark_forms_save_what_the_lakehouse_accepts(world, secret):
    from lakehouse.catalogs import catalog_config_errors
    from lakehouse.spark.target import target_config_errors

    admin = world.client("admin")
    assert admin.post(new_url("catalog"), catalog_post(password_ref=str(secret.pk))).status_code == 302
    lake = Connection.objects.get(workspace=world.workspace, name="lake")
    assert catalog_config_errors(lake.config) == [] and lake.config["s3"]["path_style"] is True
    response = admin.post(new_url("spark"), {"name": "cluster", "environment": "", "master": "spark://10.0.0.5:7077",
                                             "ui_url": "http://10.0.0.5:8080", "conf": "spark.executor.memory=2g"})
    assert response.status_code == 302
    spark = Connection.objects.get(workspace=world.workspace, name="cluster")
    assert target_config_errors(spark.config) == [] and spark.config["conf"] == {"spark.executor.memory": "2g"}
    form = admin.get(url("connection_edit", connection=lake.pk)).context["form"]
    assert form.initial["s3_secret_key_ref"] == "trino-pw" and form.initial["warehouse"] == "s3://acme-lake/iceberg"


def test_a_foreign_secret_ref_cannot_be_chosen(world, secret, foreign_secret):
    admin = world.client("admin")
    page = admin.get(new_url("trino")).content.decode()
    assert "trino-pw" in page and "theirs" not in page
    response = admin.post(new_url("trino"), trino_post(password_ref=str(foreign_secret.pk)))
    assert response.status_code == 200 and field_errors(response, "password_ref")
    response = admin.post(new_url("catalog"), catalog_post(s3_secret_key_ref="theirs", password_ref=str(secret.pk)))
    assert field_errors(response, "s3_secret_key_ref")
    assert not Connection.objects.filter(name__in=["lake-trino", "lake"]).exists()
    with pytest.raises(ValidationError) as caught:  # the service refuses it too, whatever the form
        connection_create(access=world.access("admin"), kind="trino", name="t", environment_id=None,
                          config={"host": "h", "port": 1}, password_ref_id=foreign_secret.pk)
    assert "another workspace" in str(caught.value.message_dict["password_ref"])
    other_dev = world.other.environments.get(name="dev")
    with pytest.raises(ValidationError):
        connection_create(access=world.access("admin"), kind="duckdb", name="d", environment_id=other_dev.pk, config={})


def test_secret_values_never_reach_a_page_only_whether_they_resolve(world, secret, settings, tmp_path, monkeypatch):
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "catalog-key").write_text(VALUE + "-file\n")
    settings.SECRET_FILE_DIRS = [folder]
    admin = world.client("admin")
    response = admin.post(SECRETS, {"name": "s3-key", "source": "file", "locator": str(folder / "catalog-key")})
    assert response.status_code == 302
    admin.post(SECRETS, {"name": "missing", "source": "env", "locator": "CONTROLROOM_SECRET_NOT_SET"})
    assert admin.post(new_url("trino"), trino_post(password_ref=str(secret.pk))).status_code == 302
    assert admin.post(new_url("catalog"), catalog_post(s3_secret_key_ref="s3-key",
                                                       password_ref=str(secret.pk))).status_code == 302
    trino = Connection.objects.get(name="lake-trino")
    admin.post(url("connection_test", connection=trino.pk), HTTP_HX_REQUEST="true")
    pages = [LIST, SECRETS, url("connection_edit", connection=trino.pk), new_url("trino"),
             url("secret_edit", secret=secret.pk), url("audit"), url("audit_export")]
    for page in pages:
        html = b"".join(admin.get(page)) if page.endswith(".csv") else admin.get(page).content
        assert VALUE.encode() not in html, page
    listing = admin.get(SECRETS).content.decode()
    rows = dict(re.findall(r'<tr data-secret="([^"]+)">(.*?)</tr>', listing, re.S))
    assert "resolves" in rows["trino-pw"] and "does not resolve" not in rows["trino-pw"]
    assert "resolves" in rows["s3-key"] and "does not resolve" not in rows["s3-key"]
    assert "does not resolve" in rows["missing"] and "CONTROLROOM_SECRET_NOT_SET is not set" in rows["missing"]
    connections = admin.get(LIST).content.decode()
    assert connections.count("badge succeeded\">resolves") == 3  # trino's password, the catalog's password and key
    monkeypatch.delenv("CONTROLROOM_SECRET_TRINO_PW")
    connections = admin.get(LIST).content.decode()
    assert "CONTROLROOM_SECRET_TRINO_PW is not set" in connections and VALUE not in connections


def test_secret_refs_are_created_edited_and_deleted_with_audit(world, secret):
    admin = world.client("admin")
    response = admin.post(SECRETS, {"name": "db", "source": "env", "locator": "DATABASE_URL"})
    assert response.status_code == 200 and "CONTROLROOM_SECRET_" in " ".join(field_errors(response, "locator"))
    response = admin.post(SECRETS, {"name": "trino-pw", "source": "env", "locator": "CONTROLROOM_SECRET_X"})
    assert "already exists" in " ".join(field_errors(response, "name"))
    assert admin.post(SECRETS, {"name": "db", "source": "env", "locator": "CONTROLROOM_SECRET_DB"}).status_code == 302
    ref = SecretRef.objects.get(workspace=world.workspace, name="db")
    response = admin.post(url("secret_edit", secret=ref.pk),
                          {"name": "db", "source": "file", "locator": "/etc/shadow"})
    assert response.status_code == 200
    assert "not inside the secret folders" in " ".join(field_errors(response, "locator"))
    assert admin.post(url("secret_edit", secret=ref.pk),
                      {"name": "db2", "source": "env", "locator": "CONTROLROOM_SECRET_DB2"}).status_code == 302
    ref.refresh_from_db()
    assert (ref.name, ref.locator) == ("db2", "CONTROLROOM_SECRET_DB2")
    assert admin.post(url("secret_remove", secret=ref.pk)).status_code == 302
    assert not SecretRef.objects.filter(pk=ref.pk).exists()
    actions = list(AuditEvent.objects.filter(action__startswith="secret_ref.").order_by("seq")
                   .values_list("action", flat=True))
    assert actions == ["secret_ref.create", "secret_ref.update", "secret_ref.delete"]
    update = AuditEvent.objects.get(action="secret_ref.update")
    assert update.before == {"name": "db", "source": "env", "locator": "CONTROLROOM_SECRET_DB"}
    assert update.after["name"] == "db2" and update.actor_label == "admin"
    assert audit_verify(workspace=world.workspace).ok


def test_a_secret_ref_in_use_is_not_deleted_and_the_message_names_the_user(world, secret):
    admin = world.client("admin")
    assert admin.post(new_url("trino"), trino_post(password_ref=str(secret.pk))).status_code == 302
    row = re.search(r'<tr data-secret="trino-pw">(.*?)</tr>', admin.get(SECRETS).content.decode(), re.S).group(1)
    assert "lake-trino (password)" in row
    response = admin.post(url("secret_remove", secret=secret.pk), follow=True)
    assert SecretRef.objects.filter(pk=secret.pk).exists()
    assert any("connection 'lake-trino'" in m for m in shown(response)), shown(response)
    Connection.objects.filter(name="lake-trino").update(password_ref=None)
    assert admin.post(new_url("catalog"), catalog_post(type="rest", uri="http://rest.example:8181")).status_code == 302
    with pytest.raises(ServiceError, match="S3 secret key of catalog connection lake"):
        secret_ref_delete(access=world.access("admin"), secret_id=secret.pk)
    response = admin.post(url("secret_edit", secret=secret.pk),
                          {"name": "renamed", "source": "env", "locator": "CONTROLROOM_SECRET_TRINO_PW"})
    assert "change the catalog first" in " ".join(field_errors(response, "name"))
    assert not AuditEvent.objects.filter(action__in=["secret_ref.delete", "secret_ref.update"]).exists()


def test_connection_delete_and_make_default_are_audited(world):
    admin = world.client("admin")
    warehouse = Connection.objects.get(workspace=world.workspace, name="warehouse")
    assert admin.post(new_url("duckdb"), {"name": "scratch", "environment": "", "database": "scratch.duckdb",
                                          "shared_across_environments": "on"}).status_code == 302
    scratch = Connection.objects.get(workspace=world.workspace, name="scratch")
    assert scratch.shared_across_environments and scratch.config == {"database": "scratch.duckdb"}
    admin.post(url("connection_default", connection=scratch.pk))
    scratch.refresh_from_db()
    assert scratch.is_default
    page = admin.get(LIST).content.decode()
    row = re.search(r'<tr data-connection="scratch">(.*?)</tr>', page, re.S).group(1)
    assert ">default</span>" in row and "Make default" not in row
    assert "Make default" in re.search(r'<tr data-connection="warehouse">(.*?)</tr>', page, re.S).group(1)
    response = admin.post(url("connection_remove", connection=scratch.pk), follow=True)
    assert "Connection scratch deleted." in shown(response)
    assert not Connection.objects.filter(pk=scratch.pk).exists() and Connection.objects.filter(pk=warehouse.pk).exists()
    events = {e.action: e for e in AuditEvent.objects.filter(action__startswith="connection.")}
    assert set(events) == {"connection.create", "connection.set_default", "connection.delete"}
    assert events["connection.delete"].target_id == str(scratch.pk)
    assert events["connection.delete"].before["config"] == {"database": "scratch.duckdb"}
    assert audit_verify(workspace=world.workspace).ok


def test_a_protected_connection_is_not_deleted_and_nothing_is_audited(world, monkeypatch):
    from django.db.models import ProtectedError

    from runs.models import GitSource

    warehouse = Connection.objects.get(workspace=world.workspace, name="warehouse")

    def protected(self, *args, **kwargs):  # nothing PROTECTs a connection today; a future row would
        raise ProtectedError("protected", [GitSource(workspace=world.workspace, url="x")])

    monkeypatch.setattr(Connection, "delete", protected)
    response = world.client("admin").post(url("connection_remove", connection=warehouse.pk), follow=True)
    assert "Connection 'warehouse' is still used by the git source: remove that first." in shown(response)
    assert Connection.objects.filter(pk=warehouse.pk).exists()
    assert not AuditEvent.objects.filter(action="connection.delete").exists()  # rolled back with the delete


def test_test_connection_on_a_real_duckdb_answers_ok_and_is_audited(world):
    warehouse = Connection.objects.get(workspace=world.workspace, name="warehouse")
    response = world.client("admin").post(url("connection_test", connection=warehouse.pk), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'data-ok="true"' in html and "DuckDB answered SELECT 1 (the dev database)" in html
    assert re.search(r"\(\d+ ms\)", html)
    event = AuditEvent.objects.get(action="connection.test")
    assert event.after["ok"] is True and event.target_id == str(warehouse.pk) and event.after["ms"] >= 0


def test_test_connection_to_an_unreachable_trino_says_refused(world, secret):
    port = free_port()
    conn = Connection.objects.create(workspace=world.workspace, name="down", kind="trino", password_ref=secret,
                                     config={"host": "127.0.0.1", "port": port, "http_scheme": "http"})
    response = world.client("admin").post(url("connection_test", connection=conn.pk), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'data-ok="false"' in html and f"Trino at http://127.0.0.1:{port} could not be reached" in html
    assert "connection refused" in html
    event = AuditEvent.objects.get(action="connection.test")
    assert event.after["ok"] is False and "connection refused" in event.after["result"]
    response = world.client("admin").post(url("connection_test", connection=conn.pk), follow=True)  # no htmx
    assert any("connection refused" in m for m in shown(response))


def test_test_connection_of_spark_checks_config_and_tcp_only(world):
    access = world.access("admin")
    local = Connection.objects.create(workspace=world.workspace, name="local", kind="spark",
                                      config={"master": "local[2]"})
    result = connection_test(access=access, connection=local)
    assert result.ok and "nothing to reach" in result.message
    port = free_port()
    remote = Connection.objects.create(workspace=world.workspace, name="remote", kind="spark",
                                       config={"master": f"sc://127.0.0.1:{port}"})
    result = connection_test(access=access, connection=remote)
    assert not result.ok and "Spark Connect at 127.0.0.1" in result.message and "connection refused" in result.message


@pytest.mark.slow
@pytest.mark.once
def test_test_connection_against_the_real_trino(world, trino_server, monkeypatch):
    parts = urlsplit(trino_server.url)
    monkeypatch.setenv("CONTROLROOM_SECRET_REAL_TRINO", unquote(parts.password or ""))
    monkeypatch.setenv("CONTROLROOM_SECRET_WRONG_TRINO", "not-the-password")
    admin = world.client("admin")
    for name, var in (("real", "CONTROLROOM_SECRET_REAL_TRINO"), ("wrong", "CONTROLROOM_SECRET_WRONG_TRINO")):
        assert admin.post(SECRETS, {"name": name, "source": "env", "locator": var}).status_code == 302
    tls = {"verify": "ca", "ca_file": trino_server.ca_file} if trino_server.ca_file else {"verify": "true"}
    for name in ("real", "wrong"):
        ref = SecretRef.objects.get(workspace=world.workspace, name=name)
        response = admin.post(new_url("trino"), trino_post(
            name=f"trino-{name}", host=parts.hostname, port=str(parts.port), http_scheme=parts.scheme,
            user=trino_server.service_user, password_ref=str(ref.pk), **tls))
        assert response.status_code == 302, response.context["form"].errors
    good = Connection.objects.get(name="trino-real")
    html = admin.post(url("connection_test", connection=good.pk), HTTP_HX_REQUEST="true").content.decode()
    assert 'data-ok="true"' in html and f"Trino at {parts.scheme}://{parts.hostname}:{parts.port} answered SELECT 1" \
        in html, html
    bad = Connection.objects.get(name="trino-wrong")
    html = admin.post(url("connection_test", connection=bad.pk), HTTP_HX_REQUEST="true").content.decode()
    assert 'data-ok="false"' in html and "credentials" in html.lower(), html
    assert unquote(parts.password or "") not in html
    assert list(AuditEvent.objects.filter(action="connection.test").order_by("seq")
                .values_list("after__ok", flat=True)) == [True, False]


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("lake", ["iceberg", "iceberg_rest"])
def test_test_connection_lists_the_namespaces_of_a_real_catalog(world, trino_server, s3_server, monkeypatch, lake):
    from tests.test_shared_catalog import catalog_connection

    if lake not in trino_server.catalogs:
        pytest.fail("the suite's Trino was started without an S3 server: it has no shared lake catalogs")
    conn = catalog_connection(world.workspace, dict(trino_server.catalogs[lake]), s3_server.secret, monkeypatch)
    html = world.client("admin").post(url("connection_test", connection=conn.pk), HTTP_HX_REQUEST="true")
    html = html.content.decode()
    assert 'data-ok="true"' in html and "namespace(s)" in html, html
    assert s3_server.secret not in html
    monkeypatch.setenv(f"CONTROLROOM_SECRET_SHARED_{world.workspace.slug.upper()}_S3", "wrong-secret")
    result = connection_test(access=world.access("admin"), connection=conn)
    assert s3_server.secret not in result.message and "wrong-secret" not in result.message


def test_list_pages_make_a_bounded_number_of_queries(world, secret, django_assert_max_num_queries):
    for i in range(20):
        Connection.objects.create(workspace=world.workspace, name=f"t{i}", kind="trino", password_ref=secret,
                                  config={"host": "h", "port": 8080})
        SecretRef.objects.create(workspace=world.workspace, name=f"s{i}", source="env",
                                 locator=f"CONTROLROOM_SECRET_S{i}")
    admin = world.client("admin")
    admin.get(LIST)  # the session and the middleware's first queries
    with django_assert_max_num_queries(12):
        assert admin.get(LIST).status_code == 200
    with django_assert_max_num_queries(12):
        assert admin.get(SECRETS).status_code == 200


def test_an_mlflow_connection_saves_its_tracking_uri_and_a_token_reference(world, secret):
    admin = world.client("admin")
    response = admin.post(new_url("mlflow"), {"name": "tracking", "environment": "", "password_ref": str(secret.pk),
                                              "tracking_uri": "https://mlflow.example/"})
    assert response.status_code == 302
    conn = Connection.objects.get(workspace=world.workspace, name="tracking")
    assert conn.config == {"tracking_uri": "https://mlflow.example"} and conn.password_ref == secret


def test_a_phase_names_its_mlflow_connection_by_name(world):
    from runs.services.jobs import job_create

    spec = "name: m\nphases:\n  - {name: a, kind: python, config: {callable: sleep, mlflow: 5}}\n"
    with pytest.raises(Exception) as refused:
        job_create(access=world.access("operator"), spec_text=spec)
    assert "'mlflow' must name an MLflow connection" in str(refused.value)
