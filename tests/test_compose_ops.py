"""The operations part of compose/docker-compose.yml (compose/README.md, "Prometheus", "MLflow",
"Grafana"): Prometheus scrapes the web's /metrics with the bearer token the web reads, and the web,
loaded with its composed settings, answers that very request; MLflow runs from mounted secrets in
its own database and bucket; Grafana is optional and provisioned with the dashboard; make_secrets.py
makes the new files. Ports and healthchecks: tests/test_compose_ports.py.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests
import yaml

from tests.test_compose import COMPOSE_DIR, REPO_ROOT, _make_secrets, _secret_target, render
from tests.test_compose_ports import _mounted, _value, listening

MLFLOW_DIR = COMPOSE_DIR / "mlflow"
# Made by hand (compose/README.md, "Trino"); make_secrets.py makes every other secret file.
MANUAL_SECRETS = {"trino_tls.pem", "trino_password.db"}


@pytest.fixture(scope="module")
def config() -> dict:
    return render()


def _prometheus_config(config: dict) -> dict:
    prometheus = config["services"]["prometheus"]
    return yaml.safe_load(_mounted(prometheus, _value(prometheus["command"], "--config.file")).read_text())


def _job(config: dict, name: str) -> dict:
    (job,) = [job for job in _prometheus_config(config)["scrape_configs"] if job["job_name"] == name]
    return job


# --- Prometheus -------------------------------------------------------------------------------------


def test_prometheus_is_pinned_and_keeps_its_data(config):
    prometheus = config["services"]["prometheus"]
    assert prometheus["image"].split(":")[0] == "prom/prometheus"
    assert prometheus["image"].split(":")[1].startswith("v") and prometheus["image"].count(".") == 2
    assert _value(prometheus["command"], "--storage.tsdb.path") == "/prometheus"
    assert "prometheus-data:/prometheus:rw" in prometheus["volumes"]
    assert prometheus["restart"] == "unless-stopped"
    # It must come up, and record the outage, when the web is unhealthy.
    assert prometheus["depends_on"] == {"web": {"condition": "service_started"}}


def test_prometheus_scrapes_web_metrics_with_the_token_file_web_reads(config):
    job = _job(config, "controlroom")
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.rsplit(":", 1)
    assert (target, job["metrics_path"], job.get("scheme", "http")) == ("web:8000", "/metrics", "http")
    assert int(port) in listening(config, host)
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    prometheus, web = config["services"]["prometheus"], config["services"]["web"]
    # The same secret on both sides: Prometheus mounts the file it sends, the web reads the same source.
    assert _secret_target(prometheus, "metrics_token") == job["authorization"]["credentials_file"]
    assert web["environment"]["METRICS_TOKEN_FILE"] == _secret_target(web, "metrics_token")
    assert "metrics_token" in {s["source"] for s in prometheus["secrets"]}
    # Prometheus cannot send another Host header: the web must accept the name it scrapes by.
    assert host in web["environment"]["ALLOWED_HOSTS"].split(",")
    assert "credentials" not in job["authorization"]


def test_promtool_accepts_the_config(config, tmp_path):
    """Debian's promtool (scripts/system_deps.sh) on the file, its token file moved to a real one."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus (scripts/system_deps.sh)"
    text = _mounted(config["services"]["prometheus"], "/etc/prometheus/prometheus.yml").read_text()
    (tmp_path / "token").write_text("x" * 32)
    copy = tmp_path / "prometheus.yml"
    copy.write_text(text.replace("/run/secrets/metrics_token", str(tmp_path / "token")))
    done = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _web_environment(config: dict, secrets: Path, data: Path) -> dict[str, str]:
    """The web's composed environment with its /run/secrets files mapped to generated ones."""
    web = config["services"]["web"]
    env = {k: str(v) for k, v in web["environment"].items()}
    for entry in web["secrets"]:
        target = _secret_target(web, entry["source"])
        env = {k: str(secrets / entry["source"]) if v == target else v for k, v in env.items()}
    return env | {"SECRET_FILE_DIRS": str(secrets), "CONTROLROOM_DATA_DIR": str(data), "PATH": os.environ["PATH"],
                  "DJANGO_SETTINGS_MODULE": "controlroom.settings"}


_SCRAPE = """
import json, sys
import django
django.setup()
from unittest import mock
from django.conf import settings
from django.test import Client
from django.test.utils import override_settings
# No collectstatic here: the 404 page's stylesheet from the source folder.
override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}).enable()
host, token, probe_host = sys.argv[1:4]
answers = {}
with mock.patch("controlroom.metrics.exposition", return_value=b"probe_metric 1\\n"):  # no database here
    for name, auth in (("token", f"Bearer {token}"), ("wrong", "Bearer " + "x" * 32), ("none", None)):
        headers = {"HTTP_AUTHORIZATION": auth} if auth else {}
        answer = Client().get("/metrics", HTTP_HOST=host, **headers)
        answers[name] = [answer.status_code, answer.content.decode(errors="replace")[:60]]
answer = Client().get("/healthz", HTTP_HOST=probe_host, HTTP_X_FORWARDED_PROTO="https")
answers["healthz"] = [answer.status_code, ""]
print(json.dumps(answers))
"""


def test_web_as_composed_answers_the_scrape_prometheus_sends(config, tmp_path):
    """The real settings and middleware (host check, HTTPS redirect, token) with the composed web
    environment: the request Prometheus makes gets the exposition; others get a 404."""
    _make_secrets(tmp_path / "secrets")
    job = _job(config, "controlroom")
    token = (tmp_path / "secrets" / Path(job["authorization"]["credentials_file"]).name).read_text().strip()
    env = _web_environment(config, tmp_path / "secrets", tmp_path / "data")
    probe_host = env["ALLOWED_HOSTS"].split(",")[0]  # what web's healthcheck sends
    target = job["static_configs"][0]["targets"][0]
    done = subprocess.run([sys.executable, "-c", _SCRAPE, target, token, probe_host], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.splitlines()[-1])
    assert answers["token"] == [200, "probe_metric 1\n"], done.stderr[-2000:]
    assert answers["wrong"][0] == answers["none"][0] == 404
    assert answers["healthz"][0] == 200


class _Exporter(http.server.BaseHTTPRequestHandler):
    token = ""
    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(f"{self.path} {self.headers.get('Authorization')}")
        ok = self.path == "/metrics" and self.headers.get("Authorization") == f"Bearer {self.token}"
        body = b"probe_metric 1\n" if ok else b"not found\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_real_prometheus_sends_the_token_from_the_file(config, tmp_path):
    """Debian's Prometheus on the composed file (target moved to a local stand-in for web that
    answers only the right bearer token, the token file to a generated one, scrapes every second)."""
    from tests.servers import HOST, free_port

    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: apt-get install prometheus (scripts/system_deps.sh)"
    _make_secrets(tmp_path / "secrets")
    _Exporter.token, _Exporter.seen = (tmp_path / "secrets" / "metrics_token").read_text().strip(), []
    exporter = http.server.ThreadingHTTPServer((HOST, 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    text = _mounted(config["services"]["prometheus"], "/etc/prometheus/prometheus.yml").read_text()
    text = text.replace('"web:8000"', f'"{HOST}:{exporter.server_port}"')
    text = text.replace("/run/secrets/metrics_token", str(tmp_path / "secrets" / "metrics_token"))
    text = text.replace("scrape_interval: 30s", "scrape_interval: 1s")
    text = text.replace("scrape_timeout: 10s", "scrape_timeout: 1s")
    (tmp_path / "prometheus.yml").write_text(text)
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        server = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address={HOST}:{port}"],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        up = None
        for _ in range(120):
            try:
                result = requests.get(f"http://{HOST}:{port}/api/v1/query", params={"query": 'up{job="controlroom"}'},
                                      timeout=2).json()["data"]["result"]
                up = result[0]["value"][1] if result else None
            except requests.RequestException:
                pass
            if up == "1" or server.poll() is not None:
                break
            time.sleep(0.5)
        assert up == "1", (tmp_path / "prometheus.log").read_text()[-2000:] + repr(_Exporter.seen[-3:])
        assert _Exporter.seen[0] == f"/metrics Bearer {_Exporter.token}"
    finally:
        server.kill()
        server.wait()
        exporter.shutdown()


# --- MLflow ---------------------------------------------------------------------------------------


def test_mlflow_serves_its_artifacts_from_its_own_bucket(config):
    mlflow = config["services"]["mlflow"]
    command = mlflow["command"]
    assert (_value(command, "--host"), _value(command, "--workers")) == ("0.0.0.0", "1")  # noqa: S104
    assert "--serve-artifacts" in command  # clients upload through the server: no S3 key for them
    destination = urlsplit(_value(command, "--artifacts-destination"))
    assert destination.scheme == "s3"
    init = config["services"]["seaweedfs-init"]["environment"]["S3_BUCKETS"].split()
    assert destination.hostname in init
    web_bucket = urlsplit(config["services"]["web"]["environment"]["ARTIFACT_STORE_URL"]).hostname
    assert destination.hostname not in (web_bucket, "controlroom-lake")
    env = mlflow["environment"]
    weed = config["services"]["seaweedfs"]["command"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == _value(weed, "-s3.externalUrl")
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "path"  # SeaweedFS has no bucket host names
    assert mlflow["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                    "mlflow-db-init": {"condition": "service_completed_successfully"},
                                    "seaweedfs": {"condition": "service_healthy"},
                                    "seaweedfs-init": {"condition": "service_completed_successfully"}}


def test_mlflow_accepts_the_stacks_name_and_the_tunnel_only(config):
    """MLflow's DNS-rebinding guard, matched as MLflow matches it (fnmatch on patterns with *)."""
    mlflow = config["services"]["mlflow"]
    port = _value(mlflow["command"], "--port")
    allowed = mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")

    def accepted(host: str) -> bool:
        return any(fnmatch.fnmatch(host, pattern) if "*" in pattern else host == pattern for pattern in allowed)

    assert all(accepted(host) for host in (f"mlflow:{port}", "localhost:5000", "127.0.0.1:15000"))
    assert not any(accepted(host) for host in ("evil.example.com", "evil.example.com:5000", "10.0.0.1:5000"))


def test_mlflow_runs_in_its_own_database_from_mounted_secrets(config):
    mlflow, init = config["services"]["mlflow"], config["services"]["mlflow-db-init"]
    env = mlflow["environment"]
    assert Path(mlflow["build"]["context"]) == MLFLOW_DIR
    assert mlflow["entrypoint"] == ["/bin/sh", "/etc/controlroom/mlflow/mlflow.sh"]
    assert _mounted(mlflow, "/etc/controlroom/mlflow/mlflow.sh") == MLFLOW_DIR / "mlflow.sh"
    assert '"mlflow==3.17.2"' in (MLFLOW_DIR / "Dockerfile").read_text()
    files = {key: value for key, value in env.items() if key.endswith("_FILE")}
    mounted = {_secret_target(mlflow, s["source"]): s["source"] for s in mlflow["secrets"]}
    assert {mounted[path] for path in files.values()} == {"mlflow_db_password", "mlflow_s3_access_key",
                                                          "mlflow_s3_secret_key"}
    # The one-shot makes the role and database mlflow logs in as, with the same secret.
    assert env["MLFLOW_DB_NAME"] == init["environment"]["ROLE_DB"]
    init_mounted = {_secret_target(init, s["source"]): s["source"] for s in init["secrets"]}
    assert mounted[env["MLFLOW_DB_PASSWORD_FILE"]] == init_mounted[init["environment"]["ROLE_DB_PASSWORD_FILE"]]
    assert int(env["MLFLOW_DB_PORT"]) in listening(config, env["MLFLOW_DB_HOST"])
    assert _mounted(init, init["entrypoint"][-1]) == COMPOSE_DIR / "postgres" / "role-database.sh"
    assert init["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # Neither the store URI nor a key is written anywhere but in the secret files.
    assert not any(k in env for k in ("MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    assert "--backend-store-uri" not in mlflow["command"]


def test_mlflow_entrypoint_builds_the_store_uri_from_the_files(tmp_path):
    """mlflow.sh with a stand-in ``mlflow`` that reports its arguments and environment: the password
    (awkward characters and all) reaches the store URI percent-encoded, never the command line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "mlflow").write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                                    "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n")
    (bin_dir / "mlflow").chmod(0o755)
    password = "p@ss:w/rd#1 %?"
    for name, value in (("db", password + "\n"), ("ak", "MLKEY\n"), ("sk", "ml-secret\n"), ("empty", "")):
        (tmp_path / name).write_text(value)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MLFLOW_DB_HOST": "postgres", "MLFLOW_DB_PORT": "5432",
           "MLFLOW_DB_NAME": "mlflow", "MLFLOW_DB_PASSWORD_FILE": str(tmp_path / "db"),
           "MLFLOW_S3_ACCESS_KEY_FILE": str(tmp_path / "ak"), "MLFLOW_S3_SECRET_KEY_FILE": str(tmp_path / "sk")}

    def run(**changes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(MLFLOW_DIR / "mlflow.sh"), "--port", "5000"], env=env | changes,
                              capture_output=True, text=True, timeout=60, check=False)

    done = run()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["argv"] == ["server", "--port", "5000"]
    uri = urlsplit(seen["env"]["MLFLOW_BACKEND_STORE_URI"])
    assert (uri.scheme, uri.username, uri.hostname, uri.port, uri.path) == (
        "postgresql+psycopg", "mlflow", "postgres", 5432, "/mlflow")
    assert unquote(uri.password) == password
    assert (seen["env"]["AWS_ACCESS_KEY_ID"], seen["env"]["AWS_SECRET_ACCESS_KEY"]) == ("MLKEY", "ml-secret")
    assert "password" not in seen["env"]
    refused = run(MLFLOW_S3_SECRET_KEY_FILE=str(tmp_path / "empty"))
    assert refused.returncode != 0 and "is empty" in refused.stderr and not refused.stdout


@pytest.mark.slow
def test_role_database_script_on_postgresql(config, tmp_path):
    """postgres/role-database.sh as mlflow-db-init runs it, twice (it must be safe to re-run): the
    role owns its database, nobody else may connect, and a new password file resets the password."""
    from tests.servers import HOST, PostgresServer

    init = config["services"]["mlflow-db-init"]["environment"]
    name = init["ROLE_DB"]
    with PostgresServer() as url:
        bin_dir = PostgresServer.bin_dir()
        port = urlsplit(url).port
        password = tmp_path / "password"
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PGHOST": HOST, "PGPORT": str(port),
               "PGUSER": "controlroom", "PGDATABASE": "controlroom", "ROLE_DB": name,
               "ROLE_DB_PASSWORD_FILE": str(password)}

        def sql(query: str, database: str = "controlroom") -> str:
            command = [str(bin_dir / "psql"), "-X", "-At", "-h", HOST, "-p", str(port), "-U", "controlroom",
                       "-d", database, "-c", query]
            return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

        hashes = []
        for secret in ("first-password", "second-password"):
            password.write_text(secret + "\n")
            done = subprocess.run(["sh", str(COMPOSE_DIR / "postgres" / "role-database.sh")], env=env,
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            hashes.append(sql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'"))
        assert hashes[0] and hashes[0] != hashes[1]
        assert sql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'") == name
        assert sql(f"SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = '{name}'") == "f"
        assert sql(f"SELECT has_database_privilege('public', '{name}', 'CONNECT')") == "f"
        # Its tables (MLflow's migrations) go into the database's public schema, as its owner.
        sql(f"SET ROLE {name}; CREATE TABLE probe (id int)", database=name)
        password.write_text("")
        empty = subprocess.run(["sh", str(COMPOSE_DIR / "postgres" / "role-database.sh")], env=env,
                               capture_output=True, text=True, timeout=60, check=False)
        assert empty.returncode != 0 and "is empty" in empty.stderr


# --- Grafana (optional) ---------------------------------------------------------------------------


def test_grafana_is_optional_and_provisioned_with_the_dashboard(config):
    grafana = config["services"]["grafana"]
    assert grafana["profiles"] == ["grafana"]
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    def provisioned(path: str) -> dict:
        return yaml.safe_load(_mounted(grafana, f"/etc/grafana/provisioning/{path}").read_text())

    (source,) = provisioned("datasources/prometheus.yml")["datasources"]
    url = urlsplit(source["url"])
    assert (source["type"], source["isDefault"], url.hostname) == ("prometheus", True, "prometheus")
    assert url.port in listening(config, "prometheus")
    assert source["jsonData"]["timeInterval"] == _prometheus_config(config)["global"]["scrape_interval"]
    (provider,) = provisioned("dashboards/controlroom.yml")["providers"]
    folder = provider["options"]["path"]
    mounted = _mounted(grafana, f"{folder}/controlroom-dashboard.json")
    assert mounted == COMPOSE_DIR / "grafana" / "controlroom-dashboard.json"
    dashboard = json.loads(mounted.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == source["type"]  # the dashboard's variable finds the datasource
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == _secret_target(grafana, "grafana_admin_password")
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env and env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


# --- make_secrets.py ------------------------------------------------------------------------------


def test_make_secrets_in_a_copy_creates_every_file_the_stack_mounts(config, tmp_path):
    """The script copied into a fresh compose/ folder and run as documented (no argument): it fills
    compose/secrets/ beside itself with every secret file the compose file names, bar Trino's two."""
    script = tmp_path / "compose" / "make_secrets.py"
    script.parent.mkdir()
    shutil.copy(COMPOSE_DIR / "make_secrets.py", script)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    secrets = tmp_path / "compose" / "secrets"
    wanted = {Path(secret["file"]).name for secret in config["secrets"].values()} - MANUAL_SECRETS
    made = {p.name for p in secrets.iterdir()}
    assert wanted == made
    assert {"metrics_token", "mlflow_db_password", "mlflow_s3_access_key", "mlflow_s3_secret_key",
            "grafana_admin_password"} <= made
    assert len((secrets / "metrics_token").read_text().strip()) >= 16  # the app refuses shorter tokens
    assert {oct(p.stat().st_mode & 0o777) for p in secrets.iterdir()} == {"0o644"}
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    identities = {i["name"]: i for i in json.loads((secrets / "seaweedfs_s3.json").read_text())["identities"]}
    mlflow = identities["mlflow"]
    assert mlflow["credentials"] == [{"accessKey": (secrets / "mlflow_s3_access_key").read_text().strip(),
                                      "secretKey": (secrets / "mlflow_s3_secret_key").read_text().strip()}]
    bucket = urlsplit(_value(config["services"]["mlflow"]["command"], "--artifacts-destination")).hostname
    assert {action.split(":", 1)[1] for action in mlflow["actions"]} == {bucket}
    keys = [i["credentials"][0]["accessKey"] for i in identities.values()]
    assert len(set(keys)) == len(keys) == 3


def test_make_secrets_adds_a_new_identity_to_an_older_stack_and_keeps_the_rest(tmp_path):
    _make_secrets(tmp_path)
    path = tmp_path / "seaweedfs_s3.json"
    older = json.loads(path.read_text())
    older["identities"] = [i for i in older["identities"] if i["name"] != "mlflow"]
    hand_made = {"name": "workspace-a", "credentials": [{"accessKey": "WA", "secretKey": "wa-secret"}],
                 "actions": ["Read:controlroom-lake-a"]}
    older["identities"].append(hand_made)
    path.write_text(json.dumps(older))
    others = {p.name: p.read_text() for p in tmp_path.iterdir() if p != path}
    done = subprocess.run([sys.executable, str(COMPOSE_DIR / "make_secrets.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "seaweedfs_s3.json (identity mlflow)" in done.stderr and "restart seaweedfs" in done.stderr
    names = [i["name"] for i in json.loads(path.read_text())["identities"]]
    assert names == ["controlroom", "lakehouse", "workspace-a", "mlflow"]
    assert json.loads(path.read_text())["identities"][:3] == older["identities"]
    assert others == {p.name: p.read_text() for p in tmp_path.iterdir() if p != path}
