"""Checks for compose/docker-compose.yml, rendered by docker-compose 1.29.

No Docker engine is needed: `docker-compose config` only parses, interpolates
and schema-validates. docker-compose is installed by the CI script, so these
tests fail rather than skip when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
CHECK_SCRIPT = REPO_ROOT / "scripts" / "compose_check.sh"

APP_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING = ("postgres", "valkey", "web", "worker", "beat")
ALL_SERVICES = ("postgres", "valkey", *APP_SERVICES)

# Variables the compose file interpolates; a value in the caller's shell would
# override .env.example, so drop them for deterministic results.
_INTERPOLATED = (
    "CONTROLROOM_ENV_FILE",
    "CONTROLROOM_HTTP_PORT",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
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


@pytest.fixture(scope="module")
def config() -> dict:
    """The fully rendered compose config, as docker-compose prints it."""
    env = _clean_env()
    env["CONTROLROOM_ENV_FILE"] = str(ENV_EXAMPLE)
    result = subprocess.run(
        [
            _docker_compose(),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(ENV_EXAMPLE),
            "config",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


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
    assert service["image"] == "controlroom:latest"
    assert [s["source"] for s in service["secrets"]] == ["django_secret_key"]
    assert any(v.startswith("artifacts:/data") for v in service["volumes"])


def test_secret_comes_from_compose_secrets_dir(config):
    secret = config["secrets"]["django_secret_key"]
    assert Path(secret["file"]) == COMPOSE_DIR / "secrets" / "django_secret_key"


def _write_copy(tmp_path: Path, text: str) -> Path:
    # Keep the compose/ layout so `build.context: ..` still resolves to a dir.
    target = tmp_path / "compose" / "docker-compose.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
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
