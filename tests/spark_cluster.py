"""A real Spark standalone cluster and Spark Connect server for the tests: pyspark's own Spark on JDK 17.

Library::

    with SparkCluster() as cluster:                     # a master and one worker (2 cores, 2 GB) on loopback
        cluster.master_url                              # spark://127.0.0.1:<port>
        cluster.apps()                                  # the master's active and completed applications
        cluster.kill_app(app_id)                        # as the master UI's "kill" link does
    with start_connect_server({"spark.sql.catalog.x": ...}) as server:
        SparkSession.builder.remote(server.url)         # sc://127.0.0.1:<port>

Fixtures (session-scoped; ``tests/conftest.py`` registers this module as a plugin): ``spark_cluster``
and ``spark_connect`` (a Connect server with no extra configuration, on local[2]). Without a JDK 17 or
pyspark they fail with ``RuntimeMissing``, whose message says how to install them. Every process runs
in its own process group, logs to a file in a temporary directory (printed when it fails to start),
and is stopped with its children (executors).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.servers import HOST, free_port

START_TIMEOUT = 180  # seconds; a JVM takes 6-25 s to start on this shared 2-core machine
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# For the daemons (master, worker): the REST submission port (6066 by default) stays closed, and
# the master UI may kill applications (POST /app/kill/?id=…&terminate=true).
DAEMON_PROPERTIES = {"spark.master.rest.enabled": "false", "spark.ui.killEnabled": "true"}


class SparkProcessFailed(RuntimeError):
    """A Spark process exited or did not become ready; the message carries its log's tail."""


class _SparkProcess:
    """One JVM in its own process group, its output in ``log``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def check_running(self) -> None:
        """Raise SparkProcessFailed with the log if the process has exited."""
        if self.popen.poll() is not None:
            raise SparkProcessFailed(f"Spark {self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the process's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group (the JVM and what it spawned), SIGKILL what is left after ``timeout``."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            try:  # the leader is gone; its group (an executor) may linger
                os.killpg(self.popen.pid, 0)
            except ProcessLookupError:
                break


def _base_env(workdir: Path) -> dict[str, str]:
    from lakehouse.spark.runtime import spark_env

    env = {**os.environ, **spark_env()}
    env.update(SPARK_DAEMON_MEMORY="512m", SPARK_LOCAL_DIRS=str(workdir / "local"), SPARK_LOG_DIR=str(workdir))
    env.pop("SPARK_CONF_DIR", None)
    (workdir / "local").mkdir(exist_ok=True)
    return env


def _wait(ready, processes: list[_SparkProcess], what: str, timeout: float = START_TIMEOUT) -> Any:
    """Poll ``ready()`` until it returns something truthy; fail early when a process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            process.check_running()
        if result := ready():
            return result
        time.sleep(0.5)
    logs = "\n\n".join(f"--- {p.name} ({p.log}) ---\n{p.log_tail()}" for p in processes)
    raise SparkProcessFailed(f"{what} not ready after {timeout:.0f} s:\n{logs}")


class SparkCluster:
    """A standalone master and one worker from the pip package, on 127.0.0.1 with free ports."""

    def __init__(self, *, cores: int = 2, memory: str = "2g", workdir: Path | None = None) -> None:
        self.cores, self.memory = cores, memory
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="spark-cluster-"))
        self.port, self.ui_port = free_port(), free_port()
        self.master_url = f"spark://{HOST}:{self.port}"
        self.ui_url = f"http://{HOST}:{self.ui_port}"
        self.processes: list[_SparkProcess] = []

    def start(self) -> SparkCluster:
        """Start the master, then the worker; return when the master lists the worker ALIVE."""
        from lakehouse.spark.runtime import spark_home

        env = _base_env(self.workdir)
        properties = self.workdir / "spark-daemon.conf"
        properties.write_text("".join(f"{key} {value}\n" for key, value in DAEMON_PROPERTIES.items()))
        spark_class = str(spark_home() / "bin" / "spark-class")
        began = time.monotonic()
        try:
            self.processes.append(_SparkProcess("master", [
                spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(self.port),
                "--webui-port", str(self.ui_port), "--properties-file", str(properties)],
                env, self.workdir / "master.log"))
            _wait(lambda: self._master_json(), self.processes, "Spark master")
            (self.workdir / "work").mkdir(exist_ok=True)
            self.processes.append(_SparkProcess("worker", [
                spark_class, "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", HOST,
                "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
                "--work-dir", str(self.workdir / "work"), "--properties-file", str(properties)],
                env, self.workdir / "worker.log"))
            _wait(lambda: self.alive_workers(), self.processes, "Spark worker")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _master_json(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as response:  # noqa: S310 (our loopback URL)
                return json.load(response)
        except (OSError, ValueError):
            return None

    def master_state(self) -> dict[str, Any]:
        """The master's JSON status page (workers, activeapps, completedapps, …)."""
        if (state := self._master_json()) is None:
            raise SparkProcessFailed(f"the Spark master at {self.ui_url} does not answer")
        return state

    def alive_workers(self) -> int:
        """How many workers the master lists as ALIVE."""
        return sum(worker.get("state") == "ALIVE" for worker in (self._master_json() or {}).get("workers", []))

    def apps(self) -> list[dict[str, Any]]:
        """Applications the master knows, active then completed: dicts with ``id``, ``name``, ``state``
        (WAITING, RUNNING, FINISHED, KILLED, FAILED), ``cores``, ``starttime``, ``duration``."""
        state = self.master_state()
        return [*state.get("activeapps", []), *state.get("completedapps", [])]

    def app(self, app_id: str) -> dict[str, Any] | None:
        """One application by id, or None."""
        return next((app for app in self.apps() if app.get("id") == app_id), None)

    def kill_app(self, app_id: str) -> None:
        """Kill an application as the master UI's kill link does (needs ``spark.ui.killEnabled``).

        Spark 4.1 refuses the POST (403) without the CSRF token its master page puts in each kill form."""
        with urllib.request.urlopen(f"{self.ui_url}/", timeout=10) as page:  # noqa: S310 (our loopback URL)
            html = page.read().decode(errors="replace")
        token = re.search(r'name="csrfToken" value="([^"]+)"', html)
        fields = {"id": app_id, "terminate": "true", **({"csrfToken": token.group(1)} if token else {})}
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(f"{self.ui_url}/app/kill/", data=data, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (our loopback URL)
            pass

    def logs(self) -> str:
        """Every process's log tail, for a failure message."""
        return "\n\n".join(f"--- {p.name} ({p.log}) ---\n{p.log_tail()}" for p in self.processes)

    def stop(self) -> None:
        """Stop the worker (and its executors), then the master; remove our temporary directory."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SparkCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SparkConnectServer:
    """A Spark Connect server (``spark-submit --class SparkConnectServer``) with the project's jars."""

    def __init__(self, conf: Mapping[str, str] | None = None, *, master: str = "local[2]",
                 workdir: Path | None = None) -> None:
        self.conf, self.master = dict(conf or {}), master
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="spark-connect-"))
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"sc://{HOST}:{self.port}"
        self.ui_url = f"http://{HOST}:{self.ui_port}"
        self.process: _SparkProcess | None = None

    def start(self) -> SparkConnectServer:
        """Start the server; return when its gRPC port accepts connections."""
        from lakehouse.spark.runtime import ensure_jars, spark_home

        conf = {
            "spark.connect.grpc.binding.address": HOST, "spark.connect.grpc.binding.port": str(self.port),
            "spark.driver.bindAddress": HOST, "spark.driver.host": HOST, "spark.ui.port": str(self.ui_port),
            "spark.jars": ",".join(str(jar) for jar in ensure_jars()), **self.conf,
        }
        cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", self.master, "--class", CONNECT_SERVER_CLASS]
        for key, value in conf.items():
            cmd += ["--conf", f"{key}={value}"]
        began = time.monotonic()
        self.process = _SparkProcess("connect", [*cmd, "spark-internal"], _base_env(self.workdir),
                                     self.workdir / "connect.log")
        try:
            _wait(self._accepts, [self.process], "Spark Connect server")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _accepts(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((HOST, self.port)) == 0

    def logs(self) -> str:
        """The server's log tail."""
        return self.process.log_tail() if self.process else ""

    def stop(self) -> None:
        """Stop the server and remove our temporary directory."""
        if self.process:
            self.process.stop()
            self.process = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SparkConnectServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_connect_server(conf: Mapping[str, str] | None = None, *, master: str = "local[2]") -> SparkConnectServer:
    """Start a Spark Connect server with ``conf`` (e.g. catalog settings; known at start) on ``master``."""
    return SparkConnectServer(conf, master=master).start()


@pytest.fixture(scope="session")
def spark_cluster() -> Iterator[SparkCluster]:
    """One standalone master and worker for the whole test session."""
    with SparkCluster() as cluster:
        print(f"spark: standalone cluster at {cluster.master_url} started in {cluster.start_seconds:.1f} s",
              file=sys.stderr)
        yield cluster


@pytest.fixture(scope="session")
def spark_connect() -> Iterator[SparkConnectServer]:
    """One Spark Connect server (local[2], no extra configuration) for the whole test session."""
    with start_connect_server() as server:
        print(f"spark: Spark Connect at {server.url} started in {server.start_seconds:.1f} s", file=sys.stderr)
        yield server
