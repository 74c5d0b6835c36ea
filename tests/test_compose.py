"""Checks for compose/docker-compose.yml, rendered by docker-compose 1.29.

No Docker engine is needed: `docker-compose config` only parses, interpolates
and schema-validates. docker-compose is installed by the CI script, so these
tests fail rather than skip when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
CHECK_SCRIPT = REPO_ROOT / "scripts" / "compose_check.sh"

APP_SERVICES = ("migrate", "web", "worker", "sql-worker", "beat")
OPS_SERVICES = ("prometheus", "mlflow", "grafana")  # tests/test_compose_ops.py
LONG_RUNNING = ("postgres", "valkey", "seaweedfs", "trino", "web", "worker", "sql-worker", "beat", *OPS_SERVICES)
ONE_SHOTS = ("migrate", "seaweedfs-init", "iceberg-catalog-init", "mlflow-db-init")
ALL_SERVICES = ("postgres", "valkey", "seaweedfs", "seaweedfs-init", "iceberg-catalog-init", "trino", *APP_SERVICES,
                "mlflow-db-init", *OPS_SERVICES)
# What touches the store and the lakehouse catalog: waits for both to be ready.
LAKE_CLIENTS = ("web", "worker", "sql-worker", "trino")

# Variables the compose file interpolates; a value in the caller's shell would
# override .env.example, so drop them for deterministic results.
_INTERPOLATED = (
    "CONTROLROOM_ENV_FILE",
    "CONTROLROOM_HTTP_PORT",
    "ALLOWED_HOSTS",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "TRINO_SHARED_SECRET",
    "PROMETHEUS_BIND_ADDRESS",
    "PROMETHEUS_PORT",
    "PROMETHEUS_RETENTION",
    "MLFLOW_BIND_ADDRESS",
    "MLFLOW_PORT",
    "MLFLOW_ALLOWED_HOSTS",
    "GRAFANA_BIND_ADDRESS",
    "GRAFANA_PORT",
)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _INTERPOLATED}


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (apt-get install docker-compose)"
    return exe


def _run_check(*args: str) -> subprocess.CompletedProcess[str]:
    _docker_compose()
    return subprocess.run(
        ["bash", str(CHECK_SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )


def render(env_file: Path = ENV_EXAMPLE, compose_file: Path = COMPOSE_FILE) -> dict:
    """The fully rendered compose config, as docker-compose prints it with that ``.env``."""
    env = _clean_env()
    env["CONTROLROOM_ENV_FILE"] = str(env_file)
    result = subprocess.run(
        [_docker_compose(), "-f", str(compose_file), "--env-file", str(env_file), "config"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    """The fully rendered compose config, as docker-compose prints it."""
    return render()


def test_compose_check_script_passes():
    result = _run_check()
    assert result.returncode == 0, result.stdout + result.stderr


def test_all_services_present(config):
    assert set(ALL_SERVICES) <= set(config["services"])


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_healthcheck(config, name):
    healthcheck = config["services"][name].get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert healthcheck.get("test"), f"{name} healthcheck has no test"
    assert not healthcheck.get("disable", False)


def test_web_waits_for_healthy_backends_and_migrations(config):
    depends_on = config["services"]["web"]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["valkey"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_is_one_shot(config):
    migrate = config["services"]["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart") == "no"
    assert "healthcheck" not in migrate


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_point_at_stack_backends(config, name):
    service = config["services"][name]
    environment = service["environment"]

    database_url = urlsplit(environment["DATABASE_URL"])
    assert database_url.scheme == "postgres"
    assert database_url.hostname == "postgres"
    assert database_url.port == 5432
    assert database_url.path == "/controlroom"
    assert database_url.username == "controlroom"

    broker_url = urlsplit(environment["CELERY_BROKER_URL"])
    assert broker_url.scheme == "redis"
    assert broker_url.hostname == "valkey"

    assert environment["CONTROLROOM_MODE"] == "production"
    assert environment["SECRET_KEY_FILE"] == "/run/secrets/django_secret_key"
    assert environment["METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
    assert "METRICS_TOKEN" not in environment
    # The deploy's host names first (web's healthcheck sends the first), then Prometheus's name for web.
    assert environment["ALLOWED_HOSTS"] == "controlroom.example.com,web"
    assert service["image"] == "controlroom:latest"
    assert {s["source"] for s in service["secrets"]} == {
        "django_secret_key", "metrics_token", "artifacts_s3_access_key", "artifacts_s3_secret_key",
        "lake_s3_secret_key", "iceberg_catalog_db_password"}
    assert any(v.startswith("artifacts:/data") for v in service["volumes"])


def test_secret_comes_from_compose_secrets_dir(config):
    secret = config["secrets"]["django_secret_key"]
    assert Path(secret["file"]) == COMPOSE_DIR / "secrets" / "django_secret_key"


def _write_copy(tmp_path: Path, text: str) -> Path:
    # Keep the compose/ layout so `build.context: ..` (and mlflow's ./mlflow) still resolve to dirs.
    target = tmp_path / "compose" / "docker-compose.yml"
    (target.parent / "mlflow").mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def test_check_passes_on_unmodified_copy(tmp_path):
    """Control for the negative tests: copying alone does not break the check."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    copy = _write_copy(tmp_path, yaml.safe_dump(data, sort_keys=False))
    result = _run_check(str(copy))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_on_schema_error(tmp_path):
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["web"]["depends_on"] = 5
    copy = _write_copy(tmp_path, yaml.safe_dump(data, sort_keys=False))
    result = _run_check(str(copy))
    assert result.returncode != 0
    assert "depends_on" in result.stderr


def test_check_fails_on_yaml_syntax_error(tmp_path):
    copy = _write_copy(tmp_path, COMPOSE_FILE.read_text() + "\n  broken: [\n")
    result = _run_check(str(copy))
    assert result.returncode != 0


# --- SeaweedFS, the shared Iceberg catalog, and how the app and Trino reach them -------------

SECRET_NAMES = ("PASSWORD", "SECRET", "_KEY", "TOKEN", "CREDENTIAL", "CREDENTIALS")  # how a secret variable ends
TRINO_ICEBERG = COMPOSE_DIR / "trino" / "etc" / "catalog" / "iceberg.properties"
TRINO_DELTA = COMPOSE_DIR / "trino" / "etc" / "catalog" / "delta.properties"


def _make_secrets(directory: Path) -> dict:
    """Run compose/make_secrets.py as the deploy host would; the catalog connection it prints."""
    done = subprocess.run([sys.executable, str(COMPOSE_DIR / "make_secrets.py"), str(directory)],
                          check=True, capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout)


def _properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _flag(service: dict, name: str) -> str:
    """The value of ``-name=value`` in a service's command."""
    values = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"-{name}=")]
    assert len(values) == 1, f"-{name} given {len(values)} times"
    return values[0]


def _arg_after(command: list[str], flag: str) -> str:
    """The value after ``flag`` in a command (given once)."""
    assert command.count(flag) == 1, f"{flag} given {command.count(flag)} times in {command}"
    return command[command.index(flag) + 1]


def _buckets(config: dict) -> tuple[set[str], set[str]]:
    env = config["services"]["seaweedfs-init"]["environment"]
    return set(env["S3_BUCKETS"].split()), set(env["S3_TABLE_BUCKETS"].split())


def _secret_target(service: dict, source: str) -> str:
    entry = next(s for s in service["secrets"] if s["source"] == source)
    return entry.get("target") or f"/run/secrets/{source}"


def test_seaweedfs_serves_s3_and_iceberg_rest_on_the_stack_network_only(config):
    weed = config["services"]["seaweedfs"]
    assert weed["image"].startswith("chrislusf/seaweedfs:")
    assert weed["command"][0] == "server" and "-s3" in weed["command"]
    # Master, volume server and filer (no auth of their own) stay on the container's loopback.
    assert _flag(weed, "ip.bind") == "127.0.0.1"
    assert _flag(weed, "s3.ip.bind") == "0.0.0.0"  # noqa: S104 (inside the container: the stack network)
    assert "ports" not in weed
    assert _flag(weed, "s3.config") == _secret_target(weed, "seaweedfs_s3_config")
    assert any(v.startswith("seaweedfs-data:/data") for v in weed["volumes"])
    probe = " ".join(weed["healthcheck"]["test"])
    assert f":{_flag(weed, 's3.port')}/healthz" in probe
    assert f":{_flag(weed, 's3.port.iceberg')}/v1/config" in probe


@pytest.mark.parametrize("name", ONE_SHOTS)
def test_one_shots_run_once(config, name):
    service = config["services"][name]
    assert service.get("restart") == "no"
    assert "healthcheck" not in service


def test_bucket_init_reaches_the_loopback_master(config):
    init = config["services"]["seaweedfs-init"]
    assert init["network_mode"] == "service:seaweedfs"
    assert init["depends_on"]["seaweedfs"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", LAKE_CLIENTS)
def test_lake_clients_wait_for_store_buckets_and_catalog(config, name):
    depends_on = config["services"][name]["depends_on"]
    assert depends_on["seaweedfs"]["condition"] == "service_healthy"
    assert depends_on["seaweedfs-init"]["condition"] == "service_completed_successfully"
    assert depends_on["iceberg-catalog-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_artifact_store_is_seaweedfs_with_file_secrets(config, name):
    service = config["services"][name]
    env = service["environment"]
    weed = config["services"]["seaweedfs"]
    store = urlsplit(env["ARTIFACT_STORE_URL"])
    assert store.scheme == "s3"
    assert store.hostname in _buckets(config)[0]
    endpoint = urlsplit(env["ARTIFACT_STORE_S3_ENDPOINT"])
    assert (endpoint.hostname, str(endpoint.port)) == ("seaweedfs", _flag(weed, "s3.port"))
    assert env["ARTIFACT_STORE_S3_ENDPOINT"] == _flag(weed, "s3.externalUrl")
    for key, secret in (("ACCESS_KEY", "artifacts_s3_access_key"), ("SECRET_KEY", "artifacts_s3_secret_key")):
        assert f"ARTIFACT_STORE_S3_{key}" not in env
        assert env[f"ARTIFACT_STORE_S3_{key}_FILE"] == _secret_target(service, secret)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_workspace_secret_references_reach_lake_secrets_only(config, name):
    service = config["services"][name]
    folder = Path(service["environment"]["SECRET_FILE_DIRS"])
    readable = {s["source"] for s in service["secrets"] if folder in Path(_secret_target(service, s["source"])).parents}
    assert readable == {"lake_s3_secret_key", "iceberg_catalog_db_password"}


def test_no_secret_written_in_the_compose_file():
    """Secrets come from files (docker secrets, *_FILE) or the deploy's .env, never literals."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith(SECRET_NAMES):
                assert str(value).startswith("${") and str(value).endswith("}"), f"{name}: {key} is inline"
            assert "@" not in str(value) or "${POSTGRES_PASSWORD}" in str(value), f"{name}: {key} holds credentials"
    for key, value in [*_properties(TRINO_ICEBERG).items(), *_properties(TRINO_DELTA).items()]:
        if any(word in key for word in ("password", "secret", "access-key", "credential")):
            assert value.startswith("${ENV:") and value.endswith("}"), f"catalog properties: {key} is inline"


def test_trino_exports_each_catalog_secret_from_a_mounted_file(config):
    trino = config["services"]["trino"]
    script = trino["entrypoint"][-1].replace("$$", "$")
    needed = {v[len("${ENV:"):-1] for v in _properties(TRINO_ICEBERG).values() if v.startswith("${ENV:")}
    assert needed == {"ICEBERG_CATALOG_DB_PASSWORD", "LAKE_S3_ACCESS_KEY", "LAKE_S3_SECRET_KEY"}
    mounted = {_secret_target(trino, s["source"]) for s in trino["secrets"]}
    for variable in needed:
        path = script.split(f'{variable}="$(cat ', 1)[1].split(")", 1)[0]
        assert path in mounted, f"{variable} is read from {path}, which Trino does not mount"
    exported = script.split("&& export ", 1)[1].split("&&", 1)[0].split()
    assert set(exported) == needed
    assert script.rstrip().endswith("exec /usr/lib/trino/bin/run-trino")


def test_trino_catalog_is_the_catalog_connection_the_app_uses(config, tmp_path):
    """Trino's iceberg.properties is exactly what lakehouse.trino_catalog makes of the workspace
    catalog connection printed by make_secrets.py, and that connection names this stack's store."""
    from lakehouse.catalogs import catalog_config_errors
    from lakehouse.trino_catalog import trino_catalog_properties, trino_delta_catalog_properties

    connection = _make_secrets(tmp_path)
    assert catalog_config_errors(connection) == []
    lake_key = (tmp_path / "lake_s3_access_key").read_text().strip()
    assert connection["s3"]["access_key_id"] == lake_key
    as_trino = {**connection, "s3": {**connection["s3"], "access_key_id": "${ENV:LAKE_S3_ACCESS_KEY}"}}
    expected = trino_catalog_properties(as_trino, s3_secret_key="${ENV:LAKE_S3_SECRET_KEY}",
                                        jdbc_password="${ENV:ICEBERG_CATALOG_DB_PASSWORD}")
    assert _properties(TRINO_ICEBERG) == expected
    # Its Delta tables: a file metastore beside them, on the same store with the same identity.
    delta = trino_delta_catalog_properties(as_trino, s3_secret_key="${ENV:LAKE_S3_SECRET_KEY}")
    assert _properties(TRINO_DELTA) == delta

    web = config["services"]["web"]["environment"]
    assert connection["s3"]["endpoint"] == web["ARTIFACT_STORE_S3_ENDPOINT"]
    assert connection["s3"]["region"] == web["ARTIFACT_STORE_S3_REGION"]
    buckets, table_buckets = _buckets(config)
    warehouse, delta = urlsplit(connection["warehouse"]).hostname, urlsplit(connection["delta_root"]).hostname
    assert {warehouse, delta} <= buckets
    assert warehouse != urlsplit(web["ARTIFACT_STORE_URL"]).hostname
    catalog_db = config["services"]["iceberg-catalog-init"]["environment"]["ICEBERG_CATALOG_DB"]
    uri = urlsplit(connection["uri"])
    assert (uri.hostname, uri.port, uri.username, uri.path) == ("postgres", 5432, catalog_db, f"/{catalog_db}")
    assert uri.username != config["services"]["postgres"]["environment"]["POSTGRES_USER"]
    # The identity the catalog uses may reach the lake's buckets, and only those.
    identities = json.loads((tmp_path / "seaweedfs_s3.json").read_text())["identities"]
    lake = next(i for i in identities if i["credentials"][0]["accessKey"] == lake_key)
    assert {a.split(":")[-1] for a in lake["actions"]} == {warehouse, *table_buckets}


def test_app_settings_accept_the_compose_environment(config, tmp_path):
    """The web's environment, its secret files mapped to the generated ones, loads the real
    settings: the store is SeaweedFS with the artifacts identity's key pair."""
    _make_secrets(tmp_path / "secrets")
    web = config["services"]["web"]
    env = {k: str(v) for k, v in web["environment"].items()}
    for entry in web["secrets"]:  # /run/secrets/... inside the container -> the generated file
        target = _secret_target(web, entry["source"])
        for key, value in env.items():
            if value == target:
                env[key] = str(tmp_path / "secrets" / entry["source"])
    env["SECRET_FILE_DIRS"] = str(tmp_path / "secrets")
    env |= {"CONTROLROOM_DATA_DIR": str(tmp_path / "data"), "ALLOWED_HOSTS": "controlroom.example.com",
            "PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "controlroom.settings"}
    code = ("import json; from django.conf import settings as s; print(json.dumps([s.ARTIFACT_STORE_URL, "
            "s.ARTIFACT_STORE_S3_ENDPOINT, s.ARTIFACT_STORE_S3_ACCESS_KEY, s.ARTIFACT_STORE_S3_SECRET_KEY]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    url, endpoint, key, secret = json.loads(done.stdout)
    assert (url, endpoint) == (env["ARTIFACT_STORE_URL"], env["ARTIFACT_STORE_S3_ENDPOINT"])
    identities = json.loads((tmp_path / "secrets" / "seaweedfs_s3.json").read_text())["identities"]
    artifacts = next(i for i in identities if i["credentials"][0]["accessKey"] == key)
    assert artifacts["credentials"][0]["secretKey"] == secret
    assert {a.split(":")[-1] for a in artifacts["actions"]} == {urlsplit(url).hostname}


def test_make_secrets_never_overwrites(tmp_path):
    first = _make_secrets(tmp_path)
    contents = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert first == _make_secrets(tmp_path)
    assert contents == {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"0o644"}


@pytest.mark.slow
@pytest.mark.once
def test_seaweedfs_as_composed_scopes_each_identity_to_its_buckets(config, tmp_path):
    """The compose command and the generated identities on a real ``weed`` (ports moved to free
    loopback ones), buckets made by seaweedfs/init.sh (twice: it must be safe to re-run)."""
    import boto3
    from botocore.exceptions import ClientError
    from pyiceberg.catalog.rest import RestCatalog

    from tests.servers import HOST, SeaweedServer, _free_port_pair

    _make_secrets(tmp_path / "secrets")
    weed = config["services"]["seaweedfs"]
    ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3", "s3.port.iceberg")}
    moved = {"s3.port": ports["s3"], "s3.port.iceberg": ports["s3.port.iceberg"]}
    cmd = [str(SeaweedServer.binary()), "server", f"-dir={tmp_path / 'data'}"]
    for arg in weed["command"][1:]:
        name = arg.lstrip("-").split("=", 1)[0]
        if name in ("s3.ip.bind", "s3.config", "s3.externalUrl") or name in moved:
            continue
        cmd.append(arg)
    cmd += [f"-{n}={p}" for n, p in moved.items()] + [f"-s3.ip.bind={HOST}", f"-s3.externalUrl=http://{HOST}:{ports['s3']}"]
    cmd += [f"-{n}.port={ports[n]}" for n in ("master", "volume", "filer")]
    cmd += [f"-s3.config={tmp_path / 'secrets' / 'seaweedfs_s3.json'}"]
    (tmp_path / "data").mkdir()
    with open(tmp_path / "weed.log", "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        init_env = {**os.environ, **config["services"]["seaweedfs-init"]["environment"],
                    "WEED": str(SeaweedServer.binary()), "SEAWEEDFS_MASTER": f"{HOST}:{ports['master']}"}
        def init() -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", str(COMPOSE_DIR / "seaweedfs" / "init.sh")], env=init_env,
                                  capture_output=True, text=True, timeout=60, check=False)

        for _ in range(120):  # the bucket init doubles as the readiness probe; nothing is timed
            first = init()
            if first.returncode == 0 or server.poll() is not None:
                break
            time.sleep(1)
        assert first.returncode == 0, first.stdout + first.stderr + (tmp_path / "weed.log").read_text()[-2000:]
        assert "created table bucket" in first.stdout and "created bucket" in first.stdout
        again = init()
        assert again.returncode == 0 and "created" not in again.stdout, again.stdout

        def client(prefix: str):
            read = (tmp_path / "secrets" / f"{prefix}_s3_access_key").read_text().strip()
            secret = (tmp_path / "secrets" / f"{prefix}_s3_secret_key").read_text().strip()
            return read, secret, boto3.client("s3", endpoint_url=f"http://{HOST}:{ports['s3']}",
                                              region_name="us-east-1", aws_access_key_id=read,
                                              aws_secret_access_key=secret)

        _, _, app = client("artifacts")
        lake_key, lake_secret, lake = client("lake")
        _, _, mlflow = client("mlflow")
        store_bucket = urlsplit(config["services"]["web"]["environment"]["ARTIFACT_STORE_URL"]).hostname
        mlflow_destination = _arg_after(config["services"]["mlflow"]["command"], "--artifacts-destination")
        mlflow_bucket = urlsplit(mlflow_destination).hostname
        app.put_object(Bucket=store_bucket, Key="probe", Body=b"ok")
        assert app.get_object(Bucket=store_bucket, Key="probe")["Body"].read() == b"ok"
        lake.put_object(Bucket="controlroom-lake", Key="probe", Body=b"ok")
        mlflow.put_object(Bucket=mlflow_bucket, Key="probe", Body=b"ok")
        assert mlflow.get_object(Bucket=mlflow_bucket, Key="probe")["Body"].read() == b"ok"
        for who, bucket in ((app, "controlroom-lake"), (lake, store_bucket), (app, mlflow_bucket),
                            (lake, mlflow_bucket), (mlflow, store_bucket), (mlflow, "controlroom-lake")):
            with pytest.raises(ClientError) as refused:
                who.get_object(Bucket=bucket, Key="probe")
            assert refused.value.response["Error"]["Code"] == "AccessDenied"
        # The lake identity may use the Iceberg REST catalog's table bucket.
        (table_bucket,) = _buckets(config)[1]
        catalog = RestCatalog("lake_rest", uri=f"http://{HOST}:{ports['s3.port.iceberg']}",
                              warehouse=f"s3://{table_bucket}", credential=f"{lake_key}:{lake_secret}")
        catalog.create_namespace("probe")
        assert ("probe",) in catalog.list_namespaces()
    finally:
        server.kill()
        server.wait()
