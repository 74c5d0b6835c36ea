"""Git fixtures: a real repository made with the git CLI, a workspace's git source pointing at it
(file:// allowed for the test through the settings fixture), and a signed GitHub push."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
from pathlib import Path

import pytest

from connections.models import SecretRef
from runs.models import GitSource

SECRET = "s3cret-webhook-value"
SECRET_VAR = "CONTROLROOM_SECRET_TEST_HOOK"
HOOK = "/hooks/git/acme"

VALID = """name: hello
description: first
phases:
  - name: one
    kind: sql
    config:
      sql: "SELECT 1"
"""
INVALID = """name: broken
phases:
  - name: one
    kind: flink
"""


class Repo:
    """A git repository in tmp_path, driven by the git CLI with no user or system config."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
        return subprocess.run(
            ["git", "-c", "user.email=ci@example.org", "-c", "user.name=CI", "-c", "commit.gpgsign=false", *args],
            cwd=self.path, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")

    @property
    def url(self) -> str:
        return self.path.as_uri()


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo(tmp_path / "origin")


@pytest.fixture
def source(world, repo, monkeypatch, settings) -> GitSource:
    """acme's git source on the local repository; file:// is allowed only because tests set it."""
    settings.GIT_ALLOW_FILE_PROTOCOL = True
    monkeypatch.setenv(SECRET_VAR, SECRET)
    ref = SecretRef.objects.create(workspace=world.workspace, name="git-hook", source=SecretRef.Source.ENV,
                                   locator=SECRET_VAR)
    return GitSource.objects.create(workspace=world.workspace, url=repo.url, branch="main", folder="jobs",
                                    webhook_secret=ref)


def github_post(client, body: dict, *, secret: str = SECRET, event: str = "push", delivery: str | None = None):
    """A signed GitHub webhook; ``delivery`` is the X-GitHub-Delivery header (none when None)."""
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"HTTP_X_GITHUB_DELIVERY": delivery} if delivery is not None else {}
    return client.post(HOOK, raw, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=signature,
                       HTTP_X_GITHUB_EVENT=event, **headers)
