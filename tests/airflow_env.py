"""Apache Airflow for the tests, in a virtualenv of its own under the cache (its pins are not the
app's): requirements-airflow.lock installed once, then the Control Room provider from
integrations/airflow_provider/ on top (again whenever its files change). Each test session gets an
AIRFLOW_HOME in a temporary folder with a SQLite metadata database (``airflow db migrate``).

``python -m tests.airflow_env`` only installs (CI does that before the suite)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tool_venv import MARK, tool_home, tool_install

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements-airflow.lock"
PROVIDER = REPO / "integrations" / "airflow_provider"
VERSION = "3.3.2"


def _provider_digest() -> str:
    """A digest of the provider's source, so an edited provider is installed again."""
    digest = hashlib.sha256()
    for path in sorted(PROVIDER.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            digest.update(str(path.relative_to(PROVIDER)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def airflow_install() -> Path:
    """The ``airflow`` command of the cached virtualenv: the lock installed once, the provider
    installed whenever its files changed (no dependencies, built offline by flit-core)."""
    provider = _provider_digest()
    home = tool_home("airflow", VERSION, LOCK)
    marker = home / ".provider"
    if (home / MARK).exists() and marker.exists() and marker.read_text() == provider:
        return home / "bin" / "airflow"

    def provider_install(home: Path) -> None:
        if marker.exists() and marker.read_text() == provider:
            return
        began = time.monotonic()
        subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-index", "--no-build-isolation", "--force-reinstall", str(PROVIDER)], check=True)
        marker.write_text(provider)
        print(f"airflow: provider installed in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)

    tool_install("airflow", VERSION, LOCK, after=provider_install)
    return home / "bin" / "airflow"


@dataclass
class AirflowHome:
    """One AIRFLOW_HOME with a migrated SQLite database; ``run`` calls the ``airflow`` command."""

    binary: Path
    home: Path
    migrate_seconds: float

    @property
    def dags(self) -> Path:
        return self.home / "dags"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of an ``airflow`` command: this home, no examples, nothing from ours."""
        return {
            "PATH": f"{self.binary.parent}:/usr/bin:/bin", "HOME": str(self.home), "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "DO_NOT_TRACK": "true", "SCARF_ANALYTICS": "false", "PYTHONUNBUFFERED": "1", **extra,
        }

    def run(self, *args: str, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS`` in this home; output captured (stderr folded into stdout)."""
        return subprocess.run([str(self.binary), *args], env=self.env(**extra), cwd=self.home, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)


def airflow_home(path: Path) -> AirflowHome:
    """A fresh AIRFLOW_HOME at ``path`` with ``airflow db migrate`` done (timed)."""
    binary = airflow_install()
    path.mkdir(parents=True, exist_ok=True)
    home = AirflowHome(binary=binary, home=path, migrate_seconds=0.0)
    home.dags.mkdir(exist_ok=True)
    began = time.monotonic()
    result = home.run("db", "migrate")
    home.migrate_seconds = time.monotonic() - began
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-4000:]}")
    print(f"airflow: db migrate in {home.migrate_seconds:.1f} s", file=sys.stderr, flush=True)
    return home


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowHome]:
    """This session's AIRFLOW_HOME (its migrate time is in the run's summary)."""
    from tests.servers import STARTED

    home = airflow_home(tmp_path_factory.mktemp("airflow"))
    STARTED.append(("airflow db migrate", home.migrate_seconds))
    yield home


if __name__ == "__main__":
    airflow_install()
