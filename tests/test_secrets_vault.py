"""Secret references to Vault/OpenBao (connections/vault.py), against a real OpenBao dev server
(tests/openbao_server.py): KV v2 path#key under the workspace's own prefix, token and AppRole
logins, values read at use and kept in memory at most SECRET_CACHE_S (a rotation shows on the
next use after that), and failures that name the reference, never the value, and the path only
to admins and the log."""

from __future__ import annotations

import logging
import time

import pytest
from django.core.exceptions import ValidationError

from connections.models import SecretRef
from connections.services import SecretUnavailable, secret_resolve
from connections.vault import vault_forget
from tests.servers import free_port

pytestmark = pytest.mark.django_db
PUBLIC = "Secret 'pw' cannot be read; ask a workspace admin."


@pytest.fixture
def vault(settings, openbao_server):
    settings.VAULT_ADDR, settings.VAULT_TOKEN = openbao_server.url, openbao_server.root_token
    settings.VAULT_ROLE_ID = settings.VAULT_SECRET_ID = settings.VAULT_SECRET_ID_FILE = ""
    settings.SECRET_CACHE_S = 0
    vault_forget()
    yield openbao_server
    vault_forget()


def ref(world, locator: str, *, clean: bool = True) -> SecretRef:
    secret = SecretRef(workspace=world.workspace, name="pw", source="vault", locator=locator)
    if clean:
        secret.full_clean()
    secret.save()
    return secret


def test_a_vault_reference_resolves_at_use_and_a_rotation_shows_without_a_restart(world, vault, settings, caplog):
    vault.put_secret("controlroom/acme/trino", {"password": "first-value-1", "user": "svc"})
    secret = ref(world, "controlroom/acme/trino#password")
    caplog.set_level(logging.DEBUG)
    assert secret_resolve(secret, workspace_id=world.workspace.pk) == "first-value-1"
    vault.put_secret("controlroom/acme/trino", {"password": "second-value-2"})
    assert secret_resolve(secret, workspace_id=world.workspace.pk) == "second-value-2"  # no cache: at once

    settings.SECRET_CACHE_S = 1
    assert secret_resolve(secret, workspace_id=world.workspace.pk) == "second-value-2"
    vault.put_secret("controlroom/acme/trino", {"password": "third-value-3"})
    assert secret_resolve(secret, workspace_id=world.workspace.pk) == "second-value-2"  # kept in memory
    time.sleep(1.1)
    assert secret_resolve(secret, workspace_id=world.workspace.pk) == "third-value-3"  # at most 1 s later
    assert not any(v in caplog.text for v in ("first-value-1", "second-value-2", "third-value-3"))


@pytest.mark.parametrize(("locator", "why"), [
    ("controlroom/other/trino#password", "must be under controlroom/acme/"),
    ("controlroom/acme/../other/trino#password", "path and key"),
    ("controlroom/acme/trino", "path and key"),
    ("controlroom/acme#password", "must be under controlroom/acme/"),
    ("secret/data/controlroom/acme/x#password", "must be under controlroom/acme/"),
    ("controlroom/acme/trino#pass word", "path and key"),
])
def test_each_workspace_names_only_its_own_vault_secrets(world, vault, locator, why):
    vault.put_secret("controlroom/other/trino", {"password": "other-workspace-secret"})
    with pytest.raises(ValidationError, match=why):
        ref(world, locator)
    saved = ref(world, locator, clean=False)  # an old row or a direct write: checked again at use
    with pytest.raises(SecretUnavailable) as failure:
        secret_resolve(saved, workspace_id=world.workspace.pk)
    assert str(failure.value) == PUBLIC


def test_the_path_prefix_is_a_setting(world, vault, settings):
    settings.SECRET_VAULT_PATH_PREFIX = "teams/{workspace}/lake/"
    vault.put_secret("teams/acme/lake/s3", {"key": "s3-secret-value"})
    with pytest.raises(ValidationError, match="must be under teams/acme/lake/"):
        ref(world, "controlroom/acme/s3#key")
    assert secret_resolve(ref(world, "teams/acme/lake/s3#key"), workspace_id=world.workspace.pk) == "s3-secret-value"


@pytest.mark.parametrize(("case", "detail"), [
    ("no secret", "there is no secret at secret/controlroom/acme/missing"),
    ("no key", "the secret at secret/controlroom/acme/trino has no key 'nokey'"),
    ("bad token", "the backend refused to read secret/controlroom/acme/trino (permission denied)"),
    ("down", "could not be reached"),
    ("no address", "VAULT_ADDR is not set"),
])
def test_a_failed_resolution_names_the_reference_and_tells_admins_why(world, vault, settings, case, detail, caplog):
    vault.put_secret("controlroom/acme/trino", {"password": "the-value"})
    locator = {"no secret": "controlroom/acme/missing#password", "no key": "controlroom/acme/trino#nokey"}.get(
        case, "controlroom/acme/trino#password")
    if case == "bad token":
        settings.VAULT_TOKEN = "not-a-token"
    elif case == "down":
        settings.VAULT_ADDR = f"http://127.0.0.1:{free_port()}"
    elif case == "no address":
        settings.VAULT_ADDR = ""
    secret = ref(world, locator)
    with pytest.raises(SecretUnavailable) as failure:
        secret_resolve(secret, workspace_id=world.workspace.pk)
    assert str(failure.value) == PUBLIC  # what members see: the reference only
    assert detail in failure.value.detail and detail in caplog.text  # admins and the log: why
    assert "the-value" not in caplog.text and "not-a-token" not in caplog.text

    admin_page = world.client("admin").get("/w/acme/settings/secrets/").content.decode().lower()
    assert detail.split(" (")[0].replace("'", "&#x27;").lower() in admin_page  # the admin page says why


def test_approle_login_and_a_new_login_when_the_token_was_revoked(world, vault, settings, tmp_path):
    vault.api("POST", "sys/auth/approle", {"type": "approle"})
    vault.api("PUT", "sys/policies/acl/controlroom-read",
              {"policy": 'path "secret/data/controlroom/*" { capabilities = ["read"] }'})
    vault.api("POST", "auth/approle/role/controlroom", {"token_policies": ["controlroom-read"], "token_ttl": "5m"})
    role_id = vault.api("GET", "auth/approle/role/controlroom/role-id")["data"]["role_id"]
    secret_id = vault.api("POST", "auth/approle/role/controlroom/secret-id")["data"]["secret_id"]
    (tmp_path / "secret-id").write_text(secret_id + "\n")
    settings.VAULT_TOKEN, settings.VAULT_ROLE_ID = "", role_id
    settings.VAULT_SECRET_ID_FILE = str(tmp_path / "secret-id")
    vault.put_secret("controlroom/acme/catalog", {"password": "catalog-password-1"})
    secret = ref(world, "controlroom/acme/catalog#password")
    assert secret_resolve(secret, workspace_id=world.workspace.pk) == "catalog-password-1"

    from connections import vault as client

    token = next(iter(client._approle.values()))[1]
    assert token != vault.root_token
    vault.api("POST", "auth/token/revoke-self", token=token)  # an operator revoked it
    assert secret_resolve(secret, workspace_id=world.workspace.pk) == "catalog-password-1"  # logged in again
    assert next(iter(client._approle.values()))[1] != token

    (tmp_path / "secret-id").write_text("wrong-secret-id")
    vault_forget()
    with pytest.raises(SecretUnavailable) as failure:
        secret_resolve(secret, workspace_id=world.workspace.pk)
    assert "AppRole login was refused" in failure.value.detail
