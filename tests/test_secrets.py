"""Secret references: only prefixed environment variables and files inside the secret folders,
checked when saved and again when used; only the own workspace's references; errors that a
member sees name the reference, never the variable or the path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ValidationError

from connections.admin import SecretRefAdminForm
from connections.models import Connection, SecretRef
from connections.services import SecretUnavailable, secret_resolve
from sqlwarehouse.execution import query_execute, query_submit
from sqlwarehouse.models import QueryExecution
from tests.conftest import REPO

pytestmark = pytest.mark.django_db
PUBLIC = "Secret 'pw' cannot be read; ask a workspace admin."


@pytest.fixture
def secret_dir(settings, tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    settings.SECRET_FILE_DIRS = [folder]
    return folder


def ref(world, source: str, locator: str, *, workspace=None) -> SecretRef:
    """A reference saved without its clean, as an old row or a direct write would be."""
    return SecretRef.objects.create(workspace=workspace or world.workspace, name="pw", source=source, locator=locator)


@pytest.mark.parametrize("locator", ["DATABASE_URL", "SECRET_KEY", "CONTROLROOM_SECRET_", "CONTROLROOM_SECRET_A-B",
                                     "controlroom_secret_x", "CONTROLROOM_SECRET_X\x00", "PATH"])
def test_env_references_need_the_prefix_when_saved(world, locator):
    SecretRef(workspace=world.workspace, name="ok", source="env", locator="CONTROLROOM_SECRET_TRINO").full_clean()
    with pytest.raises(ValidationError) as caught:
        SecretRef(workspace=world.workspace, name="pw", source="env", locator=locator).full_clean()
    assert "CONTROLROOM_SECRET_" in str(caught.value.message_dict["locator"])


def test_the_prefix_is_a_setting(world, settings, monkeypatch):
    settings.SECRET_ENV_PREFIX = "ACME_VAULT_"
    monkeypatch.setenv("ACME_VAULT_PW", "v")
    monkeypatch.setenv("CONTROLROOM_SECRET_PW", "v")
    assert secret_resolve(ref(world, "env", "ACME_VAULT_PW"), workspace_id=world.workspace.pk) == "v"
    with pytest.raises(SecretUnavailable):
        secret_resolve(ref(world, "env", "CONTROLROOM_SECRET_PW", workspace=world.other), workspace_id=world.other.pk)


def test_file_references_must_resolve_inside_the_secret_folders(world, secret_dir, tmp_path):
    (secret_dir / "trino").write_text("from-file\n")
    (secret_dir / "inner").symlink_to(secret_dir / "trino")  # e.g. Kubernetes' ..data links
    outside = tmp_path / "server-only"
    outside.write_text("not yours")
    (secret_dir / "escape").symlink_to(outside)
    form = SecretRefAdminForm(data={"workspace": world.workspace.pk, "name": "pw", "source": "file",
                                    "locator": str(secret_dir / "trino")})
    assert form.is_valid(), form.errors
    assert secret_resolve(form.save(), workspace_id=world.workspace.pk) == "from-file"
    for locator in (str(outside), "/etc/passwd", "trino", f"{secret_dir}/../server-only", str(secret_dir / "escape"),
                    str(secret_dir)):
        form = SecretRefAdminForm(data={"workspace": world.workspace.pk, "name": "other", "source": "file",
                                        "locator": locator})
        assert not form.is_valid() and form.errors["locator"], locator
    inner = ref(world, "file", str(secret_dir / "inner"), workspace=world.other)
    assert secret_resolve(inner, workspace_id=world.other.pk) == "from-file"


def test_the_rules_are_checked_again_when_a_secret_is_used(world, secret_dir, settings, tmp_path, monkeypatch,
                                                           caplog):
    """A row that was saved before the rules (or around them), a folder removed from the
    setting, and a file swapped for a link after saving are all refused at the moment of use."""
    monkeypatch.setenv("DATABASE_PASSWORD", "the server's own")
    with caplog.at_level(logging.WARNING, logger="connections.services"):
        with pytest.raises(SecretUnavailable) as caught:
            secret_resolve(ref(world, "env", "DATABASE_PASSWORD"), workspace_id=world.workspace.pk)
    assert str(caught.value) == PUBLIC and "DATABASE_PASSWORD" in caught.value.detail
    assert "DATABASE_PASSWORD" in caplog.text  # the detail goes to the log
    (secret_dir / "pw").write_text("v")
    file_ref = ref(world, "file", str(secret_dir / "pw"), workspace=world.other)
    assert secret_resolve(file_ref, workspace_id=world.other.pk) == "v"
    (secret_dir / "pw").unlink()
    (secret_dir / "pw").symlink_to("/etc/hostname")
    with pytest.raises(SecretUnavailable):
        secret_resolve(file_ref, workspace_id=world.other.pk)
    (secret_dir / "pw").unlink()
    (secret_dir / "pw").write_text("v")
    settings.SECRET_FILE_DIRS = [tmp_path / "elsewhere"]
    with pytest.raises(SecretUnavailable):
        secret_resolve(file_ref, workspace_id=world.other.pk)


def test_a_connection_uses_only_its_own_workspace_references(world, monkeypatch):
    monkeypatch.setenv("CONTROLROOM_SECRET_OTHER", "theirs")
    theirs = ref(world, "env", "CONTROLROOM_SECRET_OTHER", workspace=world.other)
    connection = Connection(workspace=world.workspace, name="trino", kind="trino", password_ref=theirs,
                            config={"host": "trino.example.org"})
    with pytest.raises(ValidationError) as caught:
        connection.full_clean()
    assert caught.value.message_dict["password_ref"] == ["This secret reference belongs to another workspace."]
    with pytest.raises(SecretUnavailable) as caught:
        secret_resolve(theirs, workspace_id=world.workspace.pk)
    assert str(caught.value) == PUBLIC
    assert secret_resolve(theirs, workspace_id=world.other.pk) == "theirs"


@pytest.mark.parametrize("kind", ["unset-variable", "foreign-reference", "outside-file"])
def test_sql_editor_errors_name_the_reference_not_the_variable_or_path(world, monkeypatch, secret_dir, kind):
    """Saved straight into the database (so past clean), each broken reference fails the query
    with one public sentence; the analyst never sees a variable name or a server path."""
    locator, owner = {"unset-variable": ("CONTROLROOM_SECRET_UNSET_PW", world.workspace),
                      "foreign-reference": ("CONTROLROOM_SECRET_THEIR_PW", world.other),
                      "outside-file": ("/etc/hostname", world.workspace)}[kind]
    monkeypatch.setenv("CONTROLROOM_SECRET_THEIR_PW", "theirs")
    secret = ref(world, "file" if locator.startswith("/") else "env", locator, workspace=owner)
    trino = Connection.objects.create(workspace=world.workspace, name="trino", kind="trino", password_ref=secret,
                                      config={"host": "127.0.0.1", "port": 9})
    execution = query_submit(access=world.access("analyst"), connection=trino, sql="SELECT 1")
    query_execute(execution_id=execution.pk)
    execution.refresh_from_db()
    assert execution.status == QueryExecution.Status.FAILED
    assert execution.error == f"Connection 'trino': {PUBLIC}"
    page = world.client("analyst").get(f"/w/acme/sql/executions/{execution.pk}/").content.decode()
    assert locator not in page and str(secret_dir) not in page


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SECRET_ENV_PREFIX", "1BAD", "SECRET_ENV_PREFIX='1BAD' must start a variable name"),
    ("SECRET_FILE_DIRS", "/run/secrets,relative/dir", "SECRET_FILE_DIRS must list absolute paths"),
])
def test_bad_secret_settings_stop_the_process(tmp_path, name, value, message):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY", "CELERY_BROKER_URL")}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO, capture_output=True, text=True,
                            env={**env, "CONTROLROOM_DATA_DIR": str(tmp_path), name: value}, timeout=120)
    assert result.returncode != 0 and message in result.stderr
