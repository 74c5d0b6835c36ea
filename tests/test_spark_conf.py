"""The Spark session configuration of a lakehouse (``lakehouse.spark.conf``).

Quick tests (no JVM): for each catalog type (embedded SQLite + local disk, jdbc on PostgreSQL,
rest on SeaweedFS) the session points at the same catalog, warehouse and Delta folders as
PyIceberg, delta-rs and Trino, and no secret value is ever in the public part.

The slow tests (``once``, PostgreSQL pass) start a real local[2] session with the project's jars:
Spark writes Iceberg into the suite Trino's shared JDBC catalog on SeaweedFS and Delta under the
catalog's Delta root; PyIceberg (``Lakehouse.iceberg()``), delta-rs and Trino read it back. The
embedded case does the same on local disk with PyIceberg's SQLite catalog file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lakehouse.catalogs import IDENT, Lakehouse
from lakehouse.spark.conf import REDACTION_REGEX, SessionConf, SparkConfError, delta_path, session_conf
from tests.lakehouse_helpers import lake_of

REPO = Path(__file__).resolve().parent.parent
S3 = {"endpoint": "http://127.0.0.1:8333", "region": "eu-west-3", "access_key_id": "AKIAEXAMPLEKEY",
      "secret_key_ref": "lake-key", "path_style": True}
SECRET_KEY, PASSWORD = "s3cr3t/Key+value", "pg-pa55word"


def lake(kind: str, **overrides) -> Lakehouse:
    """A resolved catalog as ``catalog_for`` returns it for a jdbc or rest connection."""
    uri = {"jdbc": "postgresql://lake@db.internal:5433/catalog", "rest": "http://127.0.0.1:8181/"}[kind]
    values = {"workspace": None, "environment": None, "name": "shared", "catalog_name": "controlroom",
              "type": kind, "uri": uri, "warehouse": "s3://acme-lake/warehouse",
              "delta_root": "s3://acme-lake/delta", "s3": dict(S3), "secret_key": SECRET_KEY,
              "password": PASSWORD if kind == "jdbc" else ""}
    return Lakehouse(**(values | overrides))


def catalog_props(conf: SessionConf, *, secret: bool = False) -> dict[str, str]:
    prefix = f"spark.sql.catalog.{conf.catalog_name}."
    entries = conf.secret if secret else conf.public
    return {key[len(prefix):]: value for key, value in entries.items() if key.startswith(prefix)}


def test_jdbc_catalog_is_the_one_trino_and_pyiceberg_use():
    shared = lake("jdbc")
    conf = session_conf(shared)
    trino = shared.trino_properties()
    props = catalog_props(conf)
    assert conf.public["spark.sql.catalog.controlroom"] == "org.apache.iceberg.spark.SparkCatalog"
    assert props["type"] == "jdbc"
    assert props["uri"] == trino["iceberg.jdbc-catalog.connection-url"] == "jdbc:postgresql://db.internal:5433/catalog"
    assert props["jdbc.user"] == trino["iceberg.jdbc-catalog.connection-user"] == "lake"
    assert props["jdbc.schema-version"] == "V1"  # Java's default V0 makes PyIceberg warn
    assert props["warehouse"] == shared.iceberg_properties()["warehouse"] == "s3://acme-lake/warehouse"
    assert catalog_props(conf, secret=True) == {"jdbc.password": PASSWORD, "s3.access-key-id": "AKIAEXAMPLEKEY",
                                                "s3.secret-access-key": SECRET_KEY}


def test_iceberg_data_goes_through_s3fileio_with_pyicebergs_settings():
    shared = lake("jdbc")
    props, pyiceberg = catalog_props(session_conf(shared)), shared.iceberg_properties()
    # Iceberg's own S3 client and s3:// locations, as PyIceberg and Trino: no Hadoop S3A, one AWS SDK.
    assert props["io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert props["s3.endpoint"] == pyiceberg["s3.endpoint"] == S3["endpoint"]
    assert props["client.region"] == pyiceberg["s3.region"] == "eu-west-3"
    assert props["s3.path-style-access"] == "true" and pyiceberg["s3.force-virtual-addressing"] == "false"
    virtual = catalog_props(session_conf(lake("jdbc", s3=S3 | {"path_style": False})))
    assert virtual["s3.path-style-access"] == "false"


def test_rest_catalog_authenticates_with_the_s3_key_pair():
    shared = lake("rest")
    conf = session_conf(shared)
    props, pyiceberg = catalog_props(conf), shared.iceberg_properties()
    assert props["type"] == "rest"
    assert props["uri"] == "http://127.0.0.1:8181"
    assert props["rest.auth.type"] == "oauth2"
    assert props["oauth2-server-uri"] == pyiceberg["oauth2-server-uri"] == "http://127.0.0.1:8181/v1/oauth/tokens"
    assert catalog_props(conf, secret=True)["credential"] == pyiceberg["credential"] == f"AKIAEXAMPLEKEY:{SECRET_KEY}"
    assert "jdbc.user" not in props and "jdbc.password" not in catalog_props(conf, secret=True)


@pytest.mark.parametrize("kind", ["jdbc", "rest"])
def test_delta_goes_through_s3a_at_the_same_folder_as_delta_rs(kind):
    shared = lake(kind)
    conf = session_conf(shared)
    assert conf.public["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert conf.public["spark.sql.extensions"].split(",") == [
        "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions", "io.delta.sql.DeltaSparkSessionExtension"]
    assert conf.delta_root == conf.public["spark.controlroom.delta_root"] == "s3a://acme-lake/delta"
    assert conf.delta_path("sales", "orders") == "s3a://acme-lake/delta/sales/orders"
    assert shared.delta_uri("sales", "orders") == "s3://acme-lake/delta/sales/orders"
    hadoop = {key.removeprefix("spark.hadoop."): value for key, value in conf.merged().items()
              if key.startswith("spark.hadoop.")}
    options = shared.delta_storage_options()
    assert hadoop["fs.s3a.endpoint"] == options["AWS_ENDPOINT_URL"]
    assert hadoop["fs.s3a.endpoint.region"] == options["AWS_REGION"]
    assert hadoop["fs.s3a.access.key"] == options["AWS_ACCESS_KEY_ID"]
    assert hadoop["fs.s3a.secret.key"] == options["AWS_SECRET_ACCESS_KEY"]
    assert hadoop["fs.s3a.path.style.access"] == "true"
    assert hadoop["fs.s3a.connection.ssl.enabled"] == "false"  # http:// endpoint, as AWS_ALLOW_HTTP
    assert hadoop["fs.s3.impl"] == hadoop["fs.s3a.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert {"fs.s3a.access.key", "fs.s3a.secret.key"} == {key.removeprefix("spark.hadoop.") for key in conf.secret
                                                          if key.startswith("spark.hadoop.")}


def test_an_https_endpoint_turns_ssl_on_and_virtual_hosting_is_kept():
    conf = session_conf(lake("jdbc", s3=S3 | {"endpoint": "https://s3.example.com", "path_style": False}))
    assert conf.public["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert conf.public["spark.hadoop.fs.s3a.path.style.access"] == "false"


def test_the_driver_stays_on_loopback_and_names_the_catalog():
    conf = session_conf(lake("rest"))
    assert conf.public["spark.driver.bindAddress"] == conf.public["spark.driver.host"] == "127.0.0.1"
    assert conf.public["spark.controlroom.iceberg_catalog"] == "controlroom"
    assert conf.public["spark.sql.session.timeZone"] == "UTC"
    args = conf.submit_args()
    assert args[0::2] == ["--conf"] * len(conf.public)
    assert sorted(args[1::2]) == sorted(f"{key}={value}" for key, value in conf.public.items())


def test_embedded_catalog_is_pyicebergs_sqlite_file_and_local_disk(world):
    embedded = lake_of(world)
    conf = session_conf(embedded)
    props = catalog_props(conf)
    sqlite_file = Path(embedded.uri.removeprefix("sqlite:///"))
    assert sqlite_file.is_absolute() and sqlite_file.name == "catalog.db"
    assert conf.catalog_name == embedded.catalog_name == "lakehouse"
    assert props == {"type": "jdbc", "uri": f"jdbc:sqlite:{sqlite_file}", "jdbc.schema-version": "V1",
                     "warehouse": embedded.warehouse}
    assert props["warehouse"].startswith("file:///")
    assert conf.delta_root == Path(embedded.delta_root).as_uri()
    assert conf.delta_path("gold", "totals") == Path(embedded.delta_uri("gold", "totals")).as_uri()
    assert conf.secret == {} and conf.masks() == []
    assert not any(key.startswith("spark.hadoop.fs.s3") for key in conf.public)  # no S3 settings at all


@pytest.mark.parametrize("kind", ["jdbc", "rest"])
def test_no_secret_value_is_public_and_every_secret_key_is_redacted_by_spark(kind):
    conf = session_conf(lake(kind))
    masks = conf.masks()
    assert {SECRET_KEY, "AKIAEXAMPLEKEY"} <= set(masks)
    assert (PASSWORD in masks) == (kind == "jdbc")
    public_text = "\n".join(f"{key}={value}" for key, value in conf.public.items()) + " ".join(conf.submit_args())
    assert not [mask for mask in masks if mask in public_text]
    assert set(conf.merged()) == set(conf.public) | set(conf.secret) and not set(conf.public) & set(conf.secret)
    # Spark shows a setting's value on its UI and in the event log unless the key matches this pattern.
    assert conf.public["spark.redaction.regex"] == REDACTION_REGEX
    assert all(re.search(REDACTION_REGEX, key) for key in conf.secret), conf.secret.keys()


def test_spark_connect_gets_the_catalog_and_keys_per_session_and_the_rest_at_server_start():
    conf = session_conf(lake("jdbc"))
    static, per_session = conf.connect_settings()
    assert not set(static.values()) & set(conf.masks())  # the server's command line holds no secret
    assert static["spark.sql.extensions"] and static["spark.sql.catalog.spark_catalog"]
    assert static["spark.driver.bindAddress"] == "127.0.0.1" and "spark.redaction.regex" in static
    assert per_session["spark.sql.catalog.controlroom.jdbc.password"] == PASSWORD
    assert per_session["fs.s3a.secret.key"] == SECRET_KEY and per_session["fs.s3a.endpoint"] == S3["endpoint"]
    assert not [key for key in per_session if key.startswith("spark.hadoop.")]
    assert len(static) + len(per_session) == len(conf.merged())


def test_masks_put_a_value_before_the_values_it_contains():
    masks = session_conf(lake("rest")).masks()
    assert masks[0] == f"AKIAEXAMPLEKEY:{SECRET_KEY}"  # the REST credential, masked whole first
    assert masks.index(SECRET_KEY) < masks.index("AKIAEXAMPLEKEY")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"type": "hive"}, "cannot use a catalog of type 'hive'"),
    ({"catalog_name": "spark_catalog"}, "cannot be named 'spark_catalog'"),
    ({"catalog_name": "Lake.House"}, "not a plain identifier"),
    ({"secret_key": ""}, "secrets are not resolved"),
    ({"delta_root": "/var/lib/delta"}, "must be an s3:// location"),
    ({"s3": S3 | {"endpoint": "ftp://s3"}}, "http:// or https://"),
    ({"s3": S3 | {"region": "eu\nspark.evil=1"}}, "must be a one-line string"),
])
def test_a_lakehouse_spark_cannot_express_is_refused(overrides, message):
    with pytest.raises(SparkConfError, match=re.escape(message)):
        session_conf(lake("jdbc", **overrides))


@pytest.mark.parametrize("bad", ["../x", "Orders", "a.b", "", "x" * 64])
def test_delta_paths_take_plain_identifiers_only(bad):
    with pytest.raises(SparkConfError, match="not a plain identifier"):
        delta_path("s3a://acme-lake/delta", "sales", bad)
    with pytest.raises(SparkConfError, match="not a plain identifier"):
        delta_path("s3a://acme-lake/delta", bad, "orders")


def test_the_identifier_rule_is_the_catalogs_and_a_driver_can_import_the_module_without_django():
    from lakehouse.spark import conf

    assert conf._IDENT.pattern == IDENT.pattern
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    probe = ("import sys, lakehouse.spark.conf as c; "
             "print(c.delta_path('s3a://b/d', 'n', 't'), 'django' in sys.modules, 'pyspark' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["s3a://b/d/n/t", "False", "False"]


# --- A real session (slow): a driver process as the spark phase kind runs one ---------------------

DRIVER = textwrap.dedent("""
    import json, sys, urllib.request
    from pyspark.sql import SparkSession
    from lakehouse.spark.conf import script_delta_path

    job = json.loads(sys.stdin.read())
    spark = SparkSession.builder.master("local[2]").appName("conf-test").config(map=job["public"]).getOrCreate()
    sc = spark.sparkContext
    ns = job["namespace"]
    for table in job["create"]:  # <catalog>.<namespace>.<name>: create, then two appends
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {table.rsplit('.', 1)[0]}")
        spark.sql(f"CREATE TABLE {table} (id BIGINT, name STRING, at TIMESTAMP) USING iceberg")
        spark.sql(f"INSERT INTO {table} VALUES (1, 'a', TIMESTAMP '2026-01-01 00:00:00'), (2, 'b', NULL)")
        spark.sql(f"INSERT INTO {table} VALUES (3, 'c', NULL)")
    for table in job["append"]:  # a table PyIceberg made
        spark.sql(f"INSERT INTO {table} VALUES (10, 'spark')")
    path = script_delta_path(spark, ns, "totals")
    spark.createDataFrame([(1, 1.5), (2, 2.5)], "id BIGINT, total DOUBLE").write.format("delta").save(path)
    spark.sql(f"INSERT INTO delta.`{path}` VALUES (3, 3.5)")
    environment = urllib.request.urlopen(  # what the UI's environment page shows
        f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/environment", timeout=30).read().decode()
    with open(f"/proc/{sc._gateway.proc.pid}/cmdline", "rb") as jvm:
        cmdline = jvm.read().replace(b"\\0", b" ").decode()
    print(json.dumps({"delta_path": path, "environment": environment, "cmdline": cmdline}))
    spark.stop()
""")


def run_driver(tmp_path: Path, conf: SessionConf, job: dict[str, Any]) -> dict[str, Any]:
    """Run ``DRIVER`` as the spark phase kind would: public settings through the session builder
    (they reach the JVM's command line), secrets in a 0600 properties file. Returns its report."""
    from lakehouse.spark.runtime import ensure_jars, spark_env

    secrets = tmp_path / "spark-secrets.conf"
    secrets.touch(mode=0o600)
    secrets.write_text(conf.secret_properties_text())
    public = conf.public | {"spark.jars": ",".join(str(jar) for jar in ensure_jars())}
    env = os.environ | spark_env() | {"PYSPARK_SUBMIT_ARGS": f"--properties-file {secrets} pyspark-shell",
                                      "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(job | {"public": public}), env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # The secrets reached Spark (the writes above succeeded) but neither its command line nor its UI.
    assert "spark.sql.extensions" in report["cmdline"]  # the right process was looked at
    assert json.loads(report["environment"])["sparkProperties"]
    leaks = [mask for mask in conf.masks() if mask in report["cmdline"] or mask in report["environment"]]
    assert not leaks, "a secret reached the JVM's command line or the UI's environment page"
    return report


def iceberg_rows(lake: Lakehouse, namespace: str, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows by id, each snapshot's operation) as PyIceberg reads the table."""
    table = lake.iceberg().load_table((namespace, name))
    rows = sorted(table.scan().to_arrow().to_pylist(), key=lambda row: row["id"])
    return rows, [snapshot.summary.operation.value for snapshot in table.snapshots()]


def delta_rows(lake: Lakehouse, namespace: str, name: str) -> tuple[list[dict[str, Any]], int]:
    """(rows by id, version) as delta-rs reads the table."""
    from deltalake import DeltaTable

    table = DeltaTable(lake.delta_uri(namespace, name), storage_options=lake.delta_storage_options())
    return sorted(table.to_pyarrow_table().to_pylist(), key=lambda row: row["id"]), table.version()


def shared_lake(config: dict[str, Any], s3_secret: str) -> Lakehouse:
    """The suite Trino's lake catalog as ``catalog_for`` resolves its connection (its PostgreSQL
    trusts any password)."""
    return Lakehouse(workspace=None, environment=None, name="shared", catalog_name=config["catalog_name"],
                     type=config["type"], uri=config["uri"], warehouse=config["warehouse"],
                     delta_root=config["delta_root"], s3=dict(config["s3"]), secret_key=s3_secret,
                     password="trusted" if config["type"] == "jdbc" else "")


EVENTS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
TOTALS = [{"id": 1, "total": 1.5}, {"id": 2, "total": 2.5}, {"id": 3, "total": 3.5}]


@pytest.mark.slow
@pytest.mark.once
def test_spark_writes_the_shared_catalogs_and_delta_root_that_the_other_engines_read(tmp_path, trino_server,
                                                                                      s3_server):
    jdbc = shared_lake(trino_server.catalogs["iceberg"], s3_server.secret)
    rest = shared_lake(trino_server.catalogs["iceberg_rest"], s3_server.secret)
    conf, rest_conf = session_conf(jdbc), session_conf(rest)
    rest_prefix = f"spark.sql.catalog.{rest.catalog_name}"
    both = SessionConf(  # one session on both catalogs: the JDBC one's Delta root
        catalog_name=conf.catalog_name, delta_root=conf.delta_root,
        public=conf.public | {k: v for k, v in rest_conf.public.items() if k.startswith(rest_prefix)},
        secret=conf.secret | {k: v for k, v in rest_conf.secret.items() if k.startswith(rest_prefix)})
    ns = f"sp{uuid.uuid4().hex[:10]}"
    report = run_driver(tmp_path, both, {"namespace": ns, "append": [],
                                         "create": [f"{jdbc.catalog_name}.{ns}.events",
                                                    f"{rest.catalog_name}.{ns}.events"]})

    for lake in (jdbc, rest):
        rows, operations = iceberg_rows(lake, ns, "events")
        assert [{"id": r["id"], "name": r["name"]} for r in rows] == EVENTS, lake.type
        assert rows[0]["at"].isoformat() == "2026-01-01T00:00:00+00:00"  # a UTC session writes timestamptz
        assert operations == ["append", "append"]
    with trino_server.connect(user="checker") as connection:
        cursor = connection.cursor()
        cursor.execute(f"SELECT count(*), sum(id) FROM iceberg.{ns}.events")
        assert cursor.fetchall() == [[3, 6]]
    assert report["delta_path"] == f"s3a://trino-lake/delta/{ns}/totals"
    assert delta_rows(jdbc, ns, "totals") == (TOTALS, 1)


@pytest.mark.slow
@pytest.mark.once
def test_spark_shares_the_embedded_sqlite_catalog_and_local_delta_root(tmp_path, world):
    lake = lake_of(world)
    catalog = lake.iceberg()  # PyIceberg makes the SQLite catalog's tables first, as in any workspace
    catalog.create_namespace("emb")
    seed = catalog.create_table(("emb", "seed"), schema=pa.schema([("id", pa.int64()), ("name", pa.string())]))
    seed.append(pa.table({"id": pa.array([1], pa.int64()), "name": ["pyiceberg"]}))
    report = run_driver(tmp_path, session_conf(lake),
                        {"namespace": "emb", "create": ["lakehouse.emb.events"], "append": ["lakehouse.emb.seed"]})

    assert iceberg_rows(lake, "emb", "seed") == (
        [{"id": 1, "name": "pyiceberg"}, {"id": 10, "name": "spark"}], ["append", "append"])
    rows, _ = iceberg_rows(lake, "emb", "events")
    assert [{"id": r["id"], "name": r["name"]} for r in rows] == EVENTS
    assert Path(lake.delta_uri("emb", "totals")).as_uri() == report["delta_path"]
    assert delta_rows(lake, "emb", "totals") == (TOTALS, 1)
    assert not list(tmp_path.glob("spark-warehouse/**/*"))  # nothing went to Spark's local default folder
