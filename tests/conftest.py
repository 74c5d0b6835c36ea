"""Shared fixtures: isolated storage per test, personas, the demo job, an eager Celery."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from connections.models import Connection
from controlroom.access import Access, system_access
from controlroom.celery import app as celery_app
from controlroom.models import Membership, Role, Workspace
from controlroom.services import api_token_create, workspace_create
from sqlwarehouse.datasets import datasets_area

pytest_plugins = ["tests.trino_fixtures", "tests.git_fixtures", "tests.s3_fixtures", "tests.spark_cluster",
                  "tests.openbao_server", "tests.oidc_server", "tests.keycloak_server",
                  "tests.mlflow_server", "tests.odoo_source"]
REPO = Path(__file__).resolve().parent.parent
DEMO_SPEC = (REPO / "demo" / "jobs" / "medallion.yaml").read_text()
PASSWORD = "correct-horse-battery-staple"


def pytest_terminal_summary(terminalreporter) -> None:
    """How long each server the tests started took to be ready (Keycloak, MLflow, Prometheus…)."""
    from tests.servers import STARTED

    if STARTED:
        terminalreporter.write_sep("-", "servers started by the tests (seconds to ready)")
        terminalreporter.write_line(", ".join(f"{name} {seconds:.1f}" for name, seconds in STARTED))


def pytest_collection_modifyitems(config, items) -> None:
    """Tests on an engine server (Trino) run once per ``make test``, in the PostgreSQL pass, as
    those with their own embedded stack do: both carry the ``once`` marker. They start a JVM, so
    they are ``slow`` too: the quick loop never waits for one."""
    for item in items:
        if "trino_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.once)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def static_files_listed_once() -> Iterator[None]:
    """WhiteNoise lists every static file (the admin's too) whenever a middleware stack is built,
    which every test ``Client`` does: ~30 ms each, 15 % of the quick suite. The files do not change
    during a session, so the listing is made once per static prefix and copied after that."""
    from whitenoise.middleware import WhiteNoiseMiddleware

    original = WhiteNoiseMiddleware.add_files_from_finders
    listed: dict[str, dict] = {}

    def once(self) -> None:
        if self.static_prefix not in listed:
            original(self)
            listed[self.static_prefix] = dict(self.files)
        else:
            self.files.update(listed[self.static_prefix])

    WhiteNoiseMiddleware.add_files_from_finders = once
    yield
    WhiteNoiseMiddleware.add_files_from_finders = original


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The suite's Redis (``python -m tests.servers --redis``) or one of our own."""
    from tests.servers import REDIS_VAR, RedisServer

    if os.environ.get(REDIS_VAR):
        yield os.environ[REDIS_VAR]
        return
    with RedisServer() as url:
        yield url


def _sqlite_template() -> Path:
    """Where a migrated SQLite test database is kept for the current migrations and pins: each
    test process copies it instead of migrating (3 to 4 s of every quick run's worker)."""
    import django

    digest = hashlib.sha256(django.get_version().encode())
    for path in [REPO / "requirements.lock", *sorted(REPO.glob("*/migrations/*.py"))]:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    cache = Path(os.environ.get("CONTROLROOM_CACHE_DIR") or Path.home() / ".cache" / "controlroom")
    return cache / "test-db" / f"sqlite-{digest.hexdigest()[:16]}.sqlite3"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory, request) -> None:
    """On SQLite, test in a file rather than in memory, so worker processes can share it; a copy of
    the migrated template when there is one (``django_db_keepdb`` then keeps Django from
    recreating it: its migrate finds every migration applied)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        name = tmp_path_factory.mktemp("db") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(name)
        template = _sqlite_template()
        if template.exists():
            shutil.copyfile(template, name)
            request.config.stash[_FROM_TEMPLATE] = True


_FROM_TEMPLATE = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def django_db_keepdb(request, django_db_modify_db_settings) -> bool:
    """Keep (and reuse) the test database when it was copied from the template, or when asked."""
    return bool(request.config.getvalue("reuse_db") or request.config.stash.get(_FROM_TEMPLATE, False))


@pytest.fixture(scope="session", autouse=True)
def sqlite_template_kept(request, django_db_setup, django_db_blocker) -> None:
    """After a SQLite test database was migrated from scratch, and before any test touched it, keep
    a copy as the template (SQLite's backup API: the file is in WAL mode)."""
    import sqlite3

    from django.conf import settings

    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3") or request.config.stash.get(_FROM_TEMPLATE, False):
        return
    template = _sqlite_template()
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_suffix(f".{os.getpid()}.part")
    with django_db_blocker.unblock(), contextlib.closing(sqlite3.connect(database["NAME"])) as source, \
            contextlib.closing(sqlite3.connect(partial)) as copy:
        source.backup(copy)
    os.replace(partial, template)  # atomic: another worker may be writing the same template


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path: Path) -> Path:
    settings.ARTIFACT_STORE_URL = (tmp_path / "artifacts").as_uri()
    settings.WAREHOUSE_DIR = tmp_path / "warehouse"
    settings.DATASETS_DIR = tmp_path / "datasets"
    settings.LAKEHOUSE_DIR = tmp_path / "lakehouse"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
    # A thread of the web process cannot see a test transaction's rows: the tests of inline runs
    # (tests/test_sql_inline.py) and the browser tests (a live server) turn them on.
    settings.SQL_INLINE_RUNS = 0
    return tmp_path


@pytest.fixture(autouse=True)
def _inline_threads_stopped():
    """A test that ran inline SQL leaves no idle thread holding a database connection."""
    yield
    from sqlwarehouse.inline import inline_stop_idle

    inline_stop_idle()


@pytest.fixture
def eager_celery():
    """Run Celery tasks in-process when their on_commit hooks fire."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@dataclass
class World:
    workspace: Workspace
    other: Workspace
    users: dict[str, object]

    def client(self, persona: str) -> Client:
        client = Client()
        client.force_login(self.users[persona])
        return client

    def access(self, persona: str) -> Access:
        membership = Membership.objects.get(workspace=self.workspace, user=self.users[persona])
        return Access(workspace=self.workspace, role=membership.role, user=self.users[persona])

    def token(self, role: str = Role.OPERATOR) -> str:
        _, value = api_token_create(access=system_access(self.workspace), name=f"ci-{role}", role=role)
        return value


def make_user(username: str):
    return get_user_model().objects.create_user(username=username, password=PASSWORD)


@pytest.fixture
def world(db) -> World:
    """Personas: admin, operator, analyst, viewer of 'acme'; outsider is admin of 'other'."""
    users = {name: make_user(name) for name in ("admin", "operator", "analyst", "viewer", "outsider")}
    acme = workspace_create(name="Acme", slug="acme", owner=users["admin"])
    for role in ("operator", "analyst", "viewer"):
        Membership.objects.create(workspace=acme, user=users[role], role=role)
    other = workspace_create(name="Other", slug="other", owner=users["outsider"])
    for ws in (acme, other):
        Connection.objects.create(workspace=ws, name="warehouse", kind=Connection.Kind.DUCKDB,
                                  config={"database": "warehouse.duckdb"})
        shutil.copyfile(REPO / "demo" / "data" / "orders.csv", datasets_area(ws) / "orders.csv")
    return World(workspace=acme, other=other, users=users)


@pytest.fixture
def demo_job(world):
    from runs.services.jobs import job_create

    return job_create(access=world.access("operator"), spec_text=DEMO_SPEC, git_sha="a" * 40)
