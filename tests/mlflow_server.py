"""A real MLflow tracking server for the tests: ``mlflow server`` (requirements-mlflow.lock, in a
virtualenv of its own under the cache, since its pins are not the app's) on a free loopback port,
SQLite for its store and a temporary folder behind its artifact proxy; stopped afterwards.

``python -m tests.mlflow_server`` only installs (CI does that before the suite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.servers import HOST, _Server
from tests.tool_venv import tool_install

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements-mlflow.lock"
VERSION = "3.17.2"


def mlflow_install() -> Path:
    """The ``mlflow`` command of the cached virtualenv, installed from the lock file once."""
    home, _ = tool_install("mlflow", VERSION, LOCK)
    return home / "bin" / "mlflow"


class MlflowServer(_Server):
    name = "mlflow"
    start_timeout = 180.0  # 30 to 60 s measured on 2 cores (../shared/STACK-NOTES.md)

    def _start(self) -> str:
        assert self.tmpdir is not None
        binary = mlflow_install()
        env = {"PATH": f"{binary.parent}:/usr/bin:/bin", "HOME": str(self.tmpdir),
               "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true"}
        self._spawn([str(binary), "server", "--backend-store-uri", f"sqlite:///{self.tmpdir / 'mlflow.db'}",
                     "--artifacts-destination", str(self.tmpdir / "artifacts"), "--host", HOST,
                     "--port", str(self.port), "--workers", "1"], env=env, cwd=self.tmpdir)
        self._wait_ready()
        return f"http://{HOST}:{self.port}"

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{HOST}:{self.port}/health", timeout=2).ok
        except requests.RequestException:
            return False


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    server = MlflowServer()
    server.start()  # its start time is in the run's summary (tests/conftest.py)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    mlflow_install()
