"""Settings from the environment: embedded defaults, strict production, *_FILE secrets."""

import os
import secrets
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlroom.env import env_bool, env_int, env_list, env_str
from tests.conftest import REPO

PROD = {
    "CONTROLROOM_MODE": "production",
    "DATABASE_URL": "postgres://cr:pw@127.0.0.1:1/controlroom",
    "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
    "ALLOWED_HOSTS": "cr.example.com",
}


def manage(tmp_path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY", "CELERY_BROKER_URL")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, capture_output=True, text=True,
                          env={**base, "CONTROLROOM_DATA_DIR": str(tmp_path), **env}, timeout=120)


@pytest.mark.slow  # a subprocess
def test_check_deploy_is_clean_under_production_settings(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(secrets.token_urlsafe(50))
    result = manage(tmp_path, {**PROD, "SECRET_KEY_FILE": str(key_file)}, "check", "--deploy", "--fail-level",
                    "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(("missing", "message"), [
    ("SECRET_KEY", "SECRET_KEY (or SECRET_KEY_FILE) is required in production mode"),
    ("DATABASE_URL", "DATABASE_URL is required in production mode"),
    ("CELERY_BROKER_URL", "CELERY_BROKER_URL is required in production mode"),
])
def test_production_refuses_to_start_without_real_settings(tmp_path, missing, message):
    env = {**PROD, "SECRET_KEY": secrets.token_urlsafe(50)}
    env.pop(missing)
    result = manage(tmp_path, env, "check")
    assert result.returncode != 0 and message in result.stderr


def test_weak_secret_key_and_bad_values_fail_loudly(tmp_path):
    weak = manage(tmp_path, {**PROD, "SECRET_KEY": "changeme"}, "check")
    assert "SECRET_KEY must be at least 50 random characters" in weak.stderr
    bad_debug = manage(tmp_path, {"DEBUG": "maybe"}, "check")
    assert "DEBUG='maybe' is not a boolean" in bad_debug.stderr
    bad_mode = manage(tmp_path, {"CONTROLROOM_MODE": "prod"}, "check")
    assert "CONTROLROOM_MODE='prod' must be one of embedded, production" in bad_mode.stderr


def test_embedded_mode_generates_a_private_key_and_debug_is_off(tmp_path):
    result = manage(tmp_path, {}, "shell", "-c", "from django.conf import settings as s; print(s.DEBUG, s.MODE)")
    assert result.stdout.split()[-2:] == ["False", "embedded"], result.stderr
    key_file = tmp_path / "secret_key"
    assert len(key_file.read_text()) >= 50 and oct(key_file.stat().st_mode)[-3:] == "600"


def test_env_readers(monkeypatch, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("X_PASSWORD_FILE", str(secret))
    assert env_str("X_PASSWORD") == "s3cret"
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_list("X_LIST") == ["a", "b", "c"]
    monkeypatch.setenv("X_BOOL", "yes")
    assert env_bool("X_BOOL") is True
    monkeypatch.setenv("X_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="X_INT='ten' is not an integer"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_MISSING_FILE", str(tmp_path / "nope"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_str("X_MISSING")
