"""Catalog connections: config validation, secrets from this workspace only, the embedded default,
one config for PyIceberg, delta-rs and Trino, and tenants kept apart."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from connections.models import Connection, SecretRef
from controlroom.models import Environment
from lakehouse.catalogs import CatalogError, catalog_config_errors, catalog_for
from lakehouse.models import TableVersion
from lakehouse.phases import delta, iceberg
from lakehouse.trino_catalog import CatalogConfigError, trino_delta_catalog_properties
from runs.executors.base import PhaseFailure
from runs.models import RunStatus
from tests.lakehouse_helpers import errors, lake_of, phase, spec, table_rows, trigger

GOOD = {"catalog_name": "lakehouse", "type": "jdbc", "uri": "postgresql://lake@db.internal:5432/catalog",
        "warehouse": "s3://acme-lake/warehouse", "delta_root": "s3://acme-lake/delta",
        "s3": {"endpoint": "http://s3.internal:8333", "region": "us-east-1", "access_key_id": "AKIA1",
               "secret_key_ref": "lake-key", "path_style": True}}


def changed(path: str, value) -> dict:
    config = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = config
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return config


def test_a_good_config_passes():
    assert catalog_config_errors(GOOD) == []
    assert catalog_config_errors(changed("type", "rest") | {"uri": "https://rest.internal/catalog"}) == []


@pytest.mark.parametrize(("config", "expected"), [
    (changed("warehouse", "/var/lib/lake"), "'warehouse' must be an s3://bucket/prefix location"),
    (changed("warehouse", "file:///var/lib/lake"), "local paths are not allowed"),
    (changed("delta_root", "s3://acme-lake/../other"), "'delta_root' must be an s3://bucket/prefix"),
    (changed("extra", 1), "unknown catalog config key 'extra'"),
    (changed("s3.secret_key", "plain"), "unknown s3 config key 'secret_key'"),
    (changed("uri", "postgresql://lake:hunter2@db:5432/catalog"), "must not hold a password"),
    (changed("uri", "sqlite:////tmp/catalog.db"), "must be postgresql://user@host:port/database"),
    (changed("type", "hive"), "'type' must be 'jdbc' or 'rest'"),
    (changed("catalog_name", "Lake House"), "'catalog_name' must be a plain identifier"),
    (changed("s3.endpoint", "ftp://x"), "'s3.endpoint' must be an http"),
    (changed("s3", ...), "'s3' (endpoint, region, access_key_id, secret_key_ref) is required"),
    (changed("s3.path_style", "yes"), "'s3.path_style' must be true or false"),
    ("not a dict", "must be a JSON object"),
])
def test_bad_configs_are_refused_with_a_clear_error(config, expected):
    found = catalog_config_errors(config)
    assert any(expected in e for e in found), found


@pytest.fixture
def secrets(world, monkeypatch):
    monkeypatch.setenv("CONTROLROOM_SECRET_LAKE_KEY", "s3-secret")
    monkeypatch.setenv("CONTROLROOM_SECRET_LAKE_PW", "pg pass/word")
    monkeypatch.setenv("CONTROLROOM_SECRET_OTHER", "theirs")
    return SimpleNamespace(
        key=SecretRef.objects.create(workspace=world.workspace, name="lake-key", source="env",
                                     locator="CONTROLROOM_SECRET_LAKE_KEY"),
        pw=SecretRef.objects.create(workspace=world.workspace, name="lake-pw", source="env",
                                    locator="CONTROLROOM_SECRET_LAKE_PW"),
        foreign=SecretRef.objects.create(workspace=world.other, name="other-key", source="env",
                                         locator="CONTROLROOM_SECRET_OTHER"),
    )


def catalog_connection(workspace, config=None, **fields) -> Connection:
    return Connection(workspace=workspace, name=fields.pop("name", "lakehouse"), kind=Connection.Kind.CATALOG,
                      config=config or copy.deepcopy(GOOD), **fields)


@pytest.mark.django_db
def test_connection_clean_checks_the_catalog_and_its_secrets(world, secrets):
    catalog_connection(world.workspace, password_ref=secrets.pw).full_clean()
    with pytest.raises(ValidationError, match="no secret reference named 'other-key'"):
        catalog_connection(world.workspace, changed("s3.secret_key_ref", "other-key"),
                           password_ref=secrets.pw).full_clean()
    with pytest.raises(ValidationError, match="another workspace"):
        catalog_connection(world.workspace, password_ref=secrets.foreign).full_clean()
    with pytest.raises(ValidationError, match="local paths are not allowed"):
        catalog_connection(world.workspace, changed("warehouse", "/srv/lake"), password_ref=secrets.pw).full_clean()
    with pytest.raises(ValidationError, match="needs a password reference"):
        catalog_connection(world.workspace).full_clean()


@pytest.mark.django_db
def test_a_catalog_may_not_overlap_another_workspaces_locations(world, secrets):
    catalog_connection(world.workspace, password_ref=secrets.pw).save()
    SecretRef.objects.create(workspace=world.other, name="lake-key", source="env", locator="CONTROLROOM_SECRET_OTHER")
    pw = SecretRef.objects.create(workspace=world.other, name="pw", source="env", locator="CONTROLROOM_SECRET_OTHER")
    sneaky = catalog_connection(world.other, changed("warehouse", "s3://acme-lake/warehouse/acme-tables"),
                                password_ref=pw)
    with pytest.raises(ValidationError, match="overlaps a location another workspace"):
        sneaky.full_clean()
    with pytest.raises(ValidationError, match="already has this catalog name in this database"):
        # the same JDBC catalog lists every table, whatever the warehouse: not a catalog of its own
        catalog_connection(world.other, changed("warehouse", "s3://other-lake/wh") | {"delta_root": "s3://other-lake/d"},
                           password_ref=pw).full_clean()
    catalog_connection(world.other, changed("warehouse", "s3://other-lake/wh") | {"delta_root": "s3://other-lake/d",
                                                                                  "catalog_name": "other_lake"},
                       password_ref=pw).full_clean()


@pytest.mark.django_db
def test_one_config_for_pyiceberg_delta_and_trino(world, secrets):
    catalog_connection(world.workspace, password_ref=secrets.pw).save()
    lake = lake_of(world)
    props = lake.iceberg_properties()
    assert props["uri"] == "postgresql+psycopg://lake:pg%20pass%2Fword@db.internal:5432/catalog"
    assert props["s3.secret-access-key"] == "s3-secret" and props["warehouse"] == "s3://acme-lake/warehouse"
    assert lake.delta_uri("sales", "orders") == "s3://acme-lake/delta/sales/orders"
    assert lake.delta_storage_options() == {
        "AWS_ENDPOINT_URL": "http://s3.internal:8333", "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIA1",
        "AWS_SECRET_ACCESS_KEY": "s3-secret", "AWS_ALLOW_HTTP": "true", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false"}
    trino = lake.trino_properties()
    assert trino["iceberg.catalog.type"] == "jdbc" and trino["iceberg.jdbc-catalog.catalog-name"] == "lakehouse"
    assert trino["iceberg.jdbc-catalog.connection-url"] == "jdbc:postgresql://db.internal:5432/catalog"
    assert trino["iceberg.jdbc-catalog.connection-password"] == "pg pass/word"
    assert trino["s3.aws-secret-key"] == "s3-secret"
    # Its Delta tables, for Trino: a file metastore on the same S3, beside them (lakehouse.trino_publish).
    config = catalog_connection(world.workspace).config
    delta_props = trino_delta_catalog_properties(config, s3_secret_key="s3-secret")
    assert delta_props["connector.name"] == "delta_lake" and delta_props["hive.metastore"] == "file"
    assert delta_props["hive.metastore.catalog.dir"] == "s3://acme-lake/delta/.trino-metastore"
    assert delta_props["s3.aws-secret-key"] == "s3-secret" and delta_props["s3.endpoint"] == "http://s3.internal:8333"
    with pytest.raises(CatalogConfigError, match="root is on S3"):
        trino_delta_catalog_properties({**config, "delta_root": "/var/lake/delta"}, s3_secret_key="s3-secret")


@pytest.mark.django_db
def test_a_trino_connections_delta_catalogs_map_catalog_connections_to_trino_catalogs(world):
    for key in ("delta_catalogs", "iceberg_catalogs"):
        for bad in ("delta", ["delta"], {"lakehouse": "Delta Catalog"}, {"lakehouse": 3}, {"../x": "delta"},
                    {f"lake{i}": "delta" for i in range(51)}):
            conn = Connection(workspace=world.workspace, name="t", kind=Connection.Kind.TRINO,
                              config={"host": "h", key: bad})
            with pytest.raises(ValidationError, match=key):
                conn.full_clean()
    Connection(workspace=world.workspace, name="t", kind=Connection.Kind.TRINO,
               config={"host": "h", "delta_catalogs": {"lake-house": "delta_2"},
                       "iceberg_catalogs": {"lake-house": "iceberg"}}).full_clean()


@pytest.mark.django_db
def test_a_foreign_password_reference_is_refused_when_used(world, secrets):
    # Saved around the admin's checks (e.g. by a migration or a bug): use still refuses it.
    catalog_connection(world.workspace, password_ref=secrets.foreign).save()
    with pytest.raises(CatalogError, match="cannot be read"):
        lake_of(world)


@pytest.mark.django_db
def test_the_embedded_catalog_is_one_folder_per_workspace_and_environment(world, settings):
    acme, other = lake_of(world), lake_of(world, workspace=world.other)
    assert acme.embedded and acme.uri == f"sqlite:///{settings.LAKEHOUSE_DIR / 'acme' / 'dev' / 'catalog.db'}"
    assert acme.delta_uri("a", "b") == str(settings.LAKEHOUSE_DIR / "acme" / "dev" / "delta" / "a" / "b")
    assert other.warehouse == (settings.LAKEHOUSE_DIR / "other" / "dev" / "warehouse").as_uri()
    assert lake_of(world, "prod").uri.endswith("/acme/prod/catalog.db")
    with pytest.raises(CatalogError, match="Trino needs a jdbc or rest catalog"):
        acme.trino_properties()
    with pytest.raises(CatalogError, match="not a plain identifier"):
        acme.delta_uri("..", "b")
    with pytest.raises(CatalogError, match="belongs to another workspace"):
        catalog_for(world.other, Environment.objects.get(workspace=world.workspace, name="dev"))
    with pytest.raises(CatalogError, match="No catalog connection named 'elsewhere'"):
        lake_of(world, name="elsewhere")
    with pytest.raises(CatalogError, match="is duckdb, not a catalog"):
        lake_of(world, name="warehouse")


@pytest.mark.django_db
@pytest.mark.slow  # real phases
def test_a_hostile_workspace_reaches_neither_the_catalog_nor_the_tables_of_another(
        world, secrets, eager_celery, django_capture_on_commit_callbacks):
    catalog_connection(world.workspace, name="acme-cat", password_ref=secrets.pw).save()
    rows = "SELECT 1 AS id"
    mine = trigger(world, spec(phase("w", "iceberg", table="sales.orders", sql=rows)),
                   django_capture_on_commit_callbacks)
    assert mine.status == RunStatus.SUCCEEDED, errors(mine)
    from controlroom.access import Access

    # The same helpers, acting as "outsider", the admin of workspace "other".
    Other = SimpleNamespace(access=lambda persona: Access(workspace=world.other, role="admin",
                                                          user=world.users["outsider"]))

    hostile = trigger(Other, spec(phase("x", "iceberg", table="sales.orders", catalog="acme-cat", sql=rows)),
                      django_capture_on_commit_callbacks)
    assert hostile.status == RunStatus.FAILED
    assert "No catalog connection named 'acme-cat' in other/dev" in errors(hostile)[0]
    theirs = trigger(Other, spec(phase("y", "iceberg", table="sales.orders",
                                       sql="SELECT * FROM (VALUES (6), (6)) t(id)"),
                                 phase("z", "delta", table="sales.lines", sql=rows, depends_on=[])),
                     django_capture_on_commit_callbacks)
    assert theirs.status == RunStatus.SUCCEEDED, errors(theirs)
    assert table_rows(lake_of(world), "iceberg", "sales.orders").column("id").to_pylist() == [1]
    assert TableVersion.objects.filter(table__workspace=world.workspace).count() == 1
    assert TableVersion.objects.filter(table__workspace=world.other).count() == 2


@pytest.mark.parametrize("module", [iceberg, delta])
def test_the_standalone_executor_is_told_to_use_a_worker(module):
    ctx = SimpleNamespace(phase=SimpleNamespace(kind=module.__name__.rsplit(".", 1)[1],
                                                config={"table": "a.b", "sql": "select 1"}))
    with pytest.raises(PhaseFailure, match="run on Control Room's workers only"):
        module.execute(ctx)


@pytest.mark.django_db
def test_an_environment_sees_its_own_trino_connection_before_the_shared_one_of_that_name(world):
    from connections.services import connections_serving

    dev, prod = (Environment.objects.get(workspace=world.workspace, name=n) for n in ("dev", "prod"))
    shared = Connection.objects.create(workspace=world.workspace, name="trino", kind=Connection.Kind.TRINO,
                                       config={"host": "shared"})
    own = Connection.objects.create(workspace=world.workspace, environment=dev, name="trino",
                                    kind=Connection.Kind.TRINO, config={"host": "dev"})
    other = Connection.objects.create(workspace=world.other, name="trino", kind=Connection.Kind.TRINO,
                                      config={"host": "theirs"})
    assert connections_serving(workspace_id=world.workspace.pk, environment_id=dev.pk, kind="trino") == [own]
    assert connections_serving(workspace_id=world.workspace.pk, environment_id=prod.pk, kind="trino") == [shared]
    assert other not in connections_serving(workspace_id=world.workspace.pk, environment_id=None, kind="trino")
