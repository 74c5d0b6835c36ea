"""A real Apache Superset for the tests: ``requirements-superset.lock`` in a virtualenv of its own
under the cache (its pins are not the app's), served by gunicorn on a free loopback port with its
metadata in SQLite in the server's temporary folder; stopped afterwards.

Preparing a metadata database (``superset db upgrade``, ``fab create-admin``, ``init``) takes about
a minute, so it is done once per virtualenv and kept as a template beside it (with the admin's
generated password); each server starts from a copy of it. ``python -m tests.superset_server``
only installs (CI does that before the suite)."""

from __future__ import annotations

import fcntl
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from tests.servers import HOST, _Server
from tests.tool_venv import tool_home, tool_install

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements-superset.lock"
VERSION = "6.1.0"
ADMIN = "admin"
TEMPLATE = "metadata-template.db"
TEMPLATE_PASSWORD = "metadata-template.password"
TIMINGS: dict[str, float] = {}  # what this process measured: install_s, init_s (first use only)


def _say(message: str) -> None:
    print(f"superset: {message}", file=sys.stderr, flush=True)


def superset_home() -> Path:
    """The cached virtualenv's folder: ``$CONTROLROOM_CACHE_DIR/superset-<version>-<lock digest>``."""
    return tool_home("superset", VERSION, LOCK)


def superset_install() -> Path:
    """The ``superset`` command of the cached virtualenv, installed from the lock file once."""
    home, took = tool_install("superset", VERSION, LOCK, note="about 800 MB")
    if took is not None:
        TIMINGS["install_s"] = took
    return home / "bin" / "superset"


def _config(folder: Path, database: Path, secret_key: str) -> Path:
    """A ``superset_config.py`` for a loopback test server with its metadata in ``database``."""
    path = folder / "superset_config.py"
    path.write_text(
        f"SECRET_KEY = {secret_key!r}\n"
        f"SQLALCHEMY_DATABASE_URI = {'sqlite:///' + str(database)!r}\n"
        "SQLALCHEMY_EXAMPLES_URI = SQLALCHEMY_DATABASE_URI\n"
        "TALISMAN_ENABLED = False\n"
        "AUTH_RATE_LIMITED = False\n"
        "RATELIMIT_ENABLED = False\n"
        "CACHE_CONFIG = {'CACHE_TYPE': 'SimpleCache'}\n"
        "DATA_CACHE_CONFIG = {'CACHE_TYPE': 'NullCache'}\n"
        "FEATURE_FLAGS = {'ENABLE_TEMPLATE_PROCESSING': False}\n"
        "SUPERSET_WEBSERVER_TIMEOUT = 120\n"
        "LOG_LEVEL = 'WARNING'\n")
    return path


def _environ(home: Path, folder: Path, config: Path) -> dict[str, str]:
    return {"PATH": f"{home / 'bin'}:/usr/bin:/bin", "HOME": str(folder), "SUPERSET_CONFIG_PATH": str(config),
            "FLASK_APP": "superset", "PYTHONDONTWRITEBYTECODE": "1", "SUPERSET_LOAD_EXAMPLES": "no",
            "SCARF_ANALYTICS": "false", "DO_NOT_TRACK": "1", "LANG": "C.UTF-8"}


def superset_metadata_template() -> tuple[Path, str]:
    """(metadata database, admin password) of a prepared Superset, made once per virtualenv: a
    copy of it is a fresh Superset with its roles, permissions and one admin."""
    binary = superset_install()
    home = binary.parent.parent
    template, password_file = home / TEMPLATE, home / TEMPLATE_PASSWORD
    if not template.exists():
        with (home.parent / f".{home.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not template.exists():
                _metadata_prepare(binary, template, password_file)
    return template, password_file.read_text().strip()


def _metadata_prepare(binary: Path, template: Path, password_file: Path) -> None:
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="controlroom-superset-init-", dir="/tmp"))
    try:
        database, password = work / "superset.db", secrets.token_urlsafe(18)
        env = _environ(binary.parent.parent, work, _config(work, database, secrets.token_urlsafe(42)))
        _say("preparing the metadata database (db upgrade, create-admin, init; about a minute, once)")
        for args in (["db", "upgrade"],
                     ["fab", "create-admin", "--username", ADMIN, "--firstname", "Control", "--lastname", "Room",
                      "--email", "admin@controlroom.invalid", "--password", password],
                     ["init"]):
            done = subprocess.run([str(binary), *args], env=env, cwd=work, capture_output=True, text=True,
                                  check=False)
            if done.returncode:
                raise RuntimeError(f"superset {' '.join(args[:2])} failed:\n{done.stdout[-3000:]}\n"
                                   f"{done.stderr[-3000:]}")
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        shutil.copyfile(database, template.with_suffix(".tmp"))
        template.with_suffix(".tmp").rename(template)  # complete or absent
    finally:
        shutil.rmtree(work, ignore_errors=True)
    TIMINGS["init_s"] = time.monotonic() - began
    _say(f"metadata prepared in {TIMINGS['init_s']:.0f} s")


class SupersetServer(_Server):
    """Superset under gunicorn (one worker, threads) on loopback; log in as ``admin``/``password``."""

    name = "superset"
    start_timeout: ClassVar[float] = 240.0  # ~7 s when idle; much more beside Trino on 2 busy cores
    username: ClassVar[str] = ADMIN

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.password = ""
        self._secret_key = secrets.token_urlsafe(42)  # encrypts the databases' credentials

    def _start(self) -> str:
        assert self.tmpdir is not None
        template, self.password = superset_metadata_template()
        home = superset_home()
        database = self.tmpdir / "superset.db"
        shutil.copyfile(template, database)
        env = _environ(home, self.tmpdir, _config(self.tmpdir, database, self._secret_key))
        self._spawn([str(home / "bin" / "gunicorn"), "--workers", "1", "--worker-class", "gthread", "--threads", "4",
                     "--timeout", "120", "--bind", f"{HOST}:{self.port}", "--limit-request-line", "0",
                     "--limit-request-field_size", "0", "superset.app:create_app()"], env=env, cwd=self.tmpdir)
        self._wait_ready()
        return f"http://{HOST}:{self.port}"

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{HOST}:{self.port}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def metadata(self) -> dict[str, Any]:
        """What Superset keeps in its metadata database, as tests inspect it: ``dump`` (every table
        as SQL) and ``databases`` (the ``dbs`` rows, their encrypted columns decrypted with the
        server's key, as Superset itself reads them)."""
        assert self.tmpdir is not None
        done = subprocess.run([str(superset_home() / "bin" / "python"), "-c", _READ_METADATA,
                               str(self.tmpdir / "superset.db")], input=self._secret_key, capture_output=True,
                              text=True, check=False, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)


# Run by the Superset virtualenv's python (sqlalchemy_utils is Superset's cipher); the key on stdin.
_READ_METADATA = """
import json, sqlite3, sys
from sqlalchemy import Text
from sqlalchemy.dialects.sqlite import dialect
from sqlalchemy_utils import EncryptedType
cipher, sqlite = EncryptedType(Text, sys.stdin.read()), dialect()
conn = sqlite3.connect(sys.argv[1])
conn.row_factory = sqlite3.Row
databases = []
for row in conn.execute("SELECT * FROM dbs ORDER BY id"):
    found = dict(row)
    for column in ("password", "encrypted_extra", "server_cert"):
        if found.get(column) is not None:
            found[column] = cipher.process_result_value(found[column], sqlite)
    databases.append(found)
print(json.dumps({"databases": databases, "dump": "\\n".join(conn.iterdump())}, default=str))
"""


@pytest.fixture(scope="session")
def superset_server() -> Iterator[SupersetServer]:
    """One Superset for the session."""
    server = SupersetServer()
    server.start()  # its start time is in the run's summary (tests/conftest.py)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    superset_install()
