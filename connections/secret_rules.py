"""Which places a secret reference may name: environment variables with the configured prefix
(``SECRET_ENV_PREFIX``), files inside the configured folders (``SECRET_FILE_DIRS``) and Vault or
OpenBao secrets under the workspace's own path (``SECRET_VAULT_PATH_PREFIX``, by default
``controlroom/<workspace>/``: one workspace's admin cannot name another's secrets).

Without these rules a workspace admin could point a reference at any variable or file the
server can read (its database URL, its secret key, /etc/shadow) and have it sent to a host
they control as a Trino password. The same check runs when a reference is saved (model clean,
admin form) and again at the moment of use, since the settings or the files may have changed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.conf import settings

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Shown when a connection or a git source names a reference of another workspace.
FOREIGN_REFERENCE = "This secret reference belongs to another workspace."


class SecretRuleError(ValueError):
    """A locator the rules refuse. The message names the locator: for admins and the log only."""


def secret_file_dirs() -> list[Path]:
    """The folders secret files may live in, with their own symbolic links resolved."""
    return [Path(os.path.realpath(d)) for d in settings.SECRET_FILE_DIRS]


_VAULT_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_VAULT_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def vault_prefix(workspace_slug: str) -> str:
    """The path every Vault/OpenBao reference of a workspace must start with."""
    return settings.SECRET_VAULT_PATH_PREFIX.format(workspace=workspace_slug).strip("/") + "/"


def secret_locator_check(*, source: str, locator: str, workspace_slug: str = "") -> Path | str | tuple[str, str]:
    """The variable name (``env``), the resolved real path (``file``) or the (path, key) of a
    KV v2 secret (``vault``, only under the workspace's prefix) a reference may read; raises
    SecretRuleError when the rules refuse it."""
    if source == "vault":
        path, _, key = (locator or "").partition("#")
        if not _VAULT_PATH.fullmatch(path) or not _VAULT_KEY.fullmatch(key) or ".." in path.split("/"):
            raise SecretRuleError(f"A Vault reference is a secret's path and key, as {vault_prefix('<workspace>')}"
                                  f"name#key (got '{locator}').")
        prefix = vault_prefix(workspace_slug)
        if not workspace_slug or not path.startswith(prefix) or path == prefix.rstrip("/"):
            raise SecretRuleError(f"A Vault reference of this workspace must be under {prefix} (got '{path}').")
        return path, key
    if source == "env":
        prefix = settings.SECRET_ENV_PREFIX
        if not _ENV_NAME.fullmatch(locator or "") or not locator.startswith(prefix) or locator == prefix:
            raise SecretRuleError(f"An environment variable reference must be a variable name starting with "
                                  f"{prefix} (got '{locator}').")
        return locator
    if source == "file":
        if not locator or "\x00" in locator or not os.path.isabs(locator):
            raise SecretRuleError(f"A file reference must be an absolute path (got '{locator}').")
        real = Path(os.path.realpath(locator))  # symbolic links followed: the target must be inside too
        dirs = secret_file_dirs()
        if not any(real != d and real.is_relative_to(d) for d in dirs):
            allowed = ", ".join(str(d) for d in settings.SECRET_FILE_DIRS) or "(none configured)"
            raise SecretRuleError(f"The file '{locator}' is not inside the secret folders ({allowed}).")
        return real
    raise SecretRuleError(f"Unknown secret source '{source}'.")
