"""Checks for the Spark part of compose/docker-compose.yml (compose/README.md, "Spark").

Like tests/test_compose.py (whose helpers this reuses, and whose ``config`` fixture is rendered the
same way here), no Docker engine and no JVM: docker-compose 1.29 renders the file, and the assertions
read the rendered services, compose/spark/ and the Dockerfile. That scripts/compose_check.sh accepts
the whole file, Spark included, is tests/test_compose.py's ``test_compose_check_script_passes``. The
Connect server's settings are compared with what ``SessionConf.connect_settings()`` makes of the
stack's catalog connection (make_secrets.py's).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from lakehouse.catalogs import Lakehouse
from lakehouse.spark.conf import session_conf
from lakehouse.spark.target import target_config_errors, target_from
from runs.kinds import KIND_QUEUES
from tests.test_compose import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    SECRET_NAMES,
    _clean_env,
    _docker_compose,
    _make_secrets,
    _properties,
    _secret_target,
)

SPARK_DIR = COMPOSE_DIR / "spark"
DOCKERFILE = REPO_ROOT / "Dockerfile"
SPARK_IMAGE = "controlroom-spark:latest"
SPARK_SERVICES = ("spark-master", "spark-cluster-worker", "spark-connect")  # the Spark daemons
LONG_RUNNING = ("spark-worker", *SPARK_SERVICES)
ENTRYPOINT = "/etc/controlroom/spark/spark.sh"
# What a container needs instead of connect_settings()'s loopback driver (spark-connect.conf says why).
DRIVER_ADDRESS = ("spark.driver.bindAddress", "spark.driver.host")


@pytest.fixture(scope="module")
def config() -> dict:
    """The rendered compose file, as tests/test_compose.py's fixture of that name renders it."""
    result = subprocess.run([_docker_compose(), "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config"],
                            check=False, capture_output=True, text=True, timeout=120,
                            env=_clean_env() | {"CONTROLROOM_ENV_FILE": str(ENV_EXAMPLE)})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _arg(command: list[str], flag: str) -> str:
    """The value after ``flag`` in a command (given once)."""
    assert command.count(flag) == 1, f"{flag} given {command.count(flag)} times in {command}"
    return command[command.index(flag) + 1]


def _mounted(service: dict, container_path: str) -> Path:
    """The host file a container path of ``service`` comes from (a bind mount of a folder or file)."""
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return Path(source) / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not mounted")


def _master(config: dict) -> tuple[str, str]:
    """(the standalone master's URL, its web UI's URL), from the master's own command."""
    command = config["services"]["spark-master"]["command"]
    host = _arg(command, "--host")
    return f"spark://{host}:{_arg(command, '--port')}", f"http://{host}:{_arg(command, '--webui-port')}"


def _connect_conf(config: dict) -> dict[str, str]:
    connect = config["services"]["spark-connect"]
    return _properties(_mounted(connect, _arg(connect["command"], "--properties-file")))


def _readme_connections() -> list[dict]:
    """The spark connection configs compose/README.md tells the operator to create."""
    text = (COMPOSE_DIR / "README.md").read_text().split("## Spark", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)]


def _stack_lakehouse(tmp_path: Path) -> Lakehouse:
    """The stack's catalog as ``catalog_for`` resolves the connection make_secrets.py prints."""
    connection = _make_secrets(tmp_path)
    return Lakehouse(workspace=None, environment=None, name="lakehouse", catalog_name=connection["catalog_name"],
                     type=connection["type"], uri=connection["uri"], warehouse=connection["warehouse"],
                     delta_root=connection["delta_root"], s3=connection["s3"],
                     password=(tmp_path / "iceberg_catalog_db_password").read_text().strip(),
                     secret_key=(tmp_path / "lake_s3_secret_key").read_text().strip())


def _stages() -> dict[str, str]:
    """The Dockerfile's stages: {name: text from its FROM line to the next}; the last one is ``""``."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.MULTILINE)[1:]
    stages = {}
    for index, part in enumerate(parts):
        found = re.match(r"FROM \S+(?: AS (\S+))?", part)
        assert found, part[:80]
        stages["" if index == len(parts) - 1 else found.group(1)] = part
    return stages


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_spark_services_are_long_running_with_healthchecks(config, name):
    service = config["services"][name]
    assert service["healthcheck"]["test"] and not service["healthcheck"].get("disable", False)
    assert service["restart"] == "unless-stopped"
    assert service["image"] == SPARK_IMAGE


@pytest.mark.parametrize("name", SPARK_SERVICES)
def test_spark_daemons_start_through_the_entrypoint_from_the_mounted_folder(config, name):
    service = config["services"][name]
    assert service["entrypoint"] == ["/bin/sh", ENTRYPOINT]
    assert _mounted(service, ENTRYPOINT) == SPARK_DIR / "spark.sh"
    assert all(v.endswith(":ro") for v in service["volumes"])
    # They run Spark, not the app: no Django settings, no secret.
    assert "env_file" not in service and "secrets" not in service
    script = (SPARK_DIR / "spark.sh").read_text()
    assert "lakehouse.spark.runtime --java17" in script and "ensure_jars()" in script


def test_master_serves_ui_and_kill_without_rest_submission(config):
    master = config["services"]["spark-master"]
    command = master["command"]
    assert command[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    daemon = _properties(_mounted(master, _arg(command, "--properties-file")))
    assert daemon["spark.master.rest.enabled"] == "false"
    assert daemon["spark.ui.killEnabled"] == "true"
    assert "ports" not in master  # the UI and RPC have no authentication: stack network only
    ui_port = _arg(command, "--webui-port")
    assert f"127.0.0.1:{ui_port}/json/" in " ".join(master["healthcheck"]["test"])


def test_worker_and_connect_server_point_at_the_master(config):
    master_url, master_ui = _master(config)
    assert master_url == "spark://spark-master:7077"
    worker = config["services"]["spark-cluster-worker"]
    assert worker["command"][:3] == ["spark-class", "org.apache.spark.deploy.worker.Worker", master_url]
    assert worker["depends_on"]["spark-master"]["condition"] == "service_healthy"
    # The worker's daemon settings are the master's (one file), and its healthcheck asks the master.
    assert _arg(worker["command"], "--properties-file") == _arg(
        config["services"]["spark-master"]["command"], "--properties-file")
    assert f"{master_ui}/json/" in " ".join(worker["healthcheck"]["test"])
    connect = config["services"]["spark-connect"]
    assert connect["command"][0] == "spark-submit"
    assert _arg(connect["command"], "--master") == master_url
    assert _arg(connect["command"], "--class") == "org.apache.spark.sql.connect.service.SparkConnectServer"
    assert connect["depends_on"]["spark-master"]["condition"] == "service_healthy"
    for lake in ("seaweedfs", "iceberg-catalog-init"):
        assert lake in connect["depends_on"]


def test_executors_share_the_spark_workers_network_where_drivers_listen(config):
    """A phase's driver binds to loopback (conf.py): the worker starting its executors must run in the
    driver's network namespace, and advertise the name the master and Connect server reach it by."""
    worker = config["services"]["spark-cluster-worker"]
    assert worker["network_mode"] == "service:spark-worker"
    assert _arg(worker["command"], "--host") == "spark-worker"
    assert "'spark-worker'" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["spark-worker"]["condition"] == "service_started"
    assert "ports" not in worker and "ports" not in config["services"]["spark-worker"]
    # It must write its work folder somewhere the app user may (not pyspark's package folder).
    assert _arg(worker["command"], "--work-dir").startswith("/tmp/")


def test_spark_worker_consumes_only_the_spark_queue_like_the_other_workers(config):
    spark, worker = config["services"]["spark-worker"], config["services"]["worker"]
    command = spark["command"]
    assert command[:4] == ["celery", "-A", "controlroom", "worker"]
    assert _arg(command, "--queues") == KIND_QUEUES["spark"] == "spark"
    assert _arg(command, "--prefetch-multiplier") == "1"
    node = _arg(command, "--hostname").split("@")[0]
    assert f"{node}@$$HOSTNAME" in " ".join(spark["healthcheck"]["test"])  # $$: as rendered, the shell's $
    assert node != "celery" and node != _arg(config["services"]["sql-worker"]["command"], "--hostname").split("@")[0]
    # The other workers' environment, secrets, data volume and readiness; only the image differs.
    assert spark["environment"] == worker["environment"]
    assert spark["secrets"] == worker["secrets"]
    assert spark["volumes"] == worker["volumes"]
    assert spark["depends_on"] == worker["depends_on"]
    # No other worker takes spark phases.
    for name in ("worker", "sql-worker"):
        assert "spark" not in _arg(config["services"][name]["command"], "--queues").split(",")


def test_spark_worker_builds_the_jdk17_image_target_and_the_default_stays_spark_free(config):
    build = config["services"]["spark-worker"]["build"]
    assert build["target"] == "spark"
    assert Path(build["context"]) == REPO_ROOT and build["dockerfile"] == "Dockerfile"
    assert "target" not in config["services"]["web"]["build"]  # web builds the default (last) stage
    stages = _stages()
    spark = stages["spark"]
    assert spark.startswith("FROM app AS spark")
    assert "openjdk-17-jre-headless" in spark and "-r requirements-spark.lock" in spark
    assert [line for line in spark.splitlines() if line.strip() and not line.startswith("#")][-1] == "USER controlroom"
    # The jars: fetched by the app's own runtime module at build time, where the image looks for them.
    cache = re.search(r"CONTROLROOM_CACHE_DIR=(\S+) python -m lakehouse\.spark\.runtime\n", stages["spark-jars"])
    assert cache, stages["spark-jars"]
    assert f"COPY --from=spark-jars {cache.group(1)} {cache.group(1)}" in spark
    assert f"ENV CONTROLROOM_CACHE_DIR={cache.group(1)}" in spark
    # The default target is the application stage, untouched: no JDK, no pyspark.
    assert stages[""].strip().splitlines()[-1] == "FROM app"
    assert "openjdk" not in stages["app"] and "requirements-spark" not in stages["app"]


def test_connect_server_starts_with_the_static_settings_of_the_stacks_catalog(config, tmp_path):
    """spark-connect.conf holds exactly what connect_settings() says a server must know at start for
    this stack's catalog (bar the driver's address), and nothing a session sets for itself."""
    lake = _stack_lakehouse(tmp_path)
    conf = session_conf(lake)
    static, per_session = conf.connect_settings()
    server = _connect_conf(config)
    assert {k: v for k, v in server.items() if k in static and k not in DRIVER_ADDRESS} == \
        {k: v for k, v in static.items() if k not in DRIVER_ADDRESS}
    assert set(DRIVER_ADDRESS) <= set(static)
    # Executors on the worker connect back to the driver by the service's name.
    assert server["spark.driver.host"] == "spark-connect" and server["spark.driver.bindAddress"] == "0.0.0.0"  # noqa: S104
    # No catalog, key or password at server level: those are the sessions' own.
    assert not set(server) & {*per_session, *(f"spark.hadoop.{k}" for k in per_session)}
    assert not any(key.startswith(f"spark.sql.catalog.{conf.catalog_name}") for key in server)
    assert not any(mask in text for mask in conf.masks()
                   for text in (COMPOSE_FILE.read_text(), *(p.read_text() for p in SPARK_DIR.iterdir())))
    # The jars come from the entrypoint, not a fixed list here.
    assert "spark.jars" not in server and '--conf "spark.jars=$jars"' in (SPARK_DIR / "spark.sh").read_text()


def test_connect_server_listens_where_its_connection_and_healthcheck_look(config):
    server = _connect_conf(config)
    port = server["spark.connect.grpc.binding.port"]
    assert server["spark.connect.grpc.binding.address"] == "0.0.0.0"  # noqa: S104 (the stack network)
    connect = config["services"]["spark-connect"]
    assert f"('127.0.0.1', {port})" in " ".join(connect["healthcheck"]["test"])
    assert "ports" not in connect
    documented = [c for c in _readme_connections() if c["master"].startswith("sc://")]
    assert documented == [{"master": f"sc://spark-connect:{port}"}]
    assert target_config_errors(documented[0]) == []


def test_documented_standalone_connection_is_valid_and_names_this_master(config):
    master_url, master_ui = _master(config)
    documented = [c for c in _readme_connections() if c["master"].startswith("spark://")]
    assert len(documented) == 1
    assert target_config_errors(documented[0]) == []
    target = target_from(documented[0], "spark")
    assert (target.kind, target.master, target.ui_url) == ("standalone", master_url, master_ui)
    assert urlsplit(target.ui_url).hostname == "spark-master"


def test_no_secret_in_the_spark_services():
    """The Spark daemons get no secret at all; spark-worker's come from files, as every app service's."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name in SPARK_SERVICES:
        service = raw["services"][name]
        assert "secrets" not in service
        for key, value in (service.get("environment") or {}).items():
            assert not key.endswith(SECRET_NAMES), f"{name}: {key}"
            assert "@" not in str(value), f"{name}: {key} holds credentials"
    for path in SPARK_DIR.iterdir():
        for line in path.read_text().splitlines():
            if not line.startswith("#") and "=" in line:
                key = line.split("=", 1)[0].lower()
                assert not any(word in key for word in ("password", "secret", "access.key", "credential")), line


def test_spark_worker_reads_the_lake_secrets_from_mounted_files(config):
    spark = config["services"]["spark-worker"]
    folder = Path(spark["environment"]["SECRET_FILE_DIRS"])
    readable = {s["source"] for s in spark["secrets"] if folder in Path(_secret_target(spark, s["source"])).parents}
    assert readable == {"lake_s3_secret_key", "iceberg_catalog_db_password"}
