"""A real Trino server for the test suite: Maven artifacts and a local JDK, no Docker.

Library::

    with (server := TrinoServer()):  # TrinoServer(postgres_url=...): keep the Iceberg catalog there
        conn = trino_connect(server.credentials_url, user="alice", ca_file=server.ca_file)

``trino_install()`` unpacks the pinned release once into ``$CONTROLROOM_CACHE_DIR/trino/<version>``
(default ``~/.cache/controlroom``); ``python -m tests.trino_server`` only installs (warms a CI cache).
The server enforces the rules production ships, ``compose/trino/rules.json``. Trino accepts
passwords over HTTPS only, so clients get a self-signed certificate for 127.0.0.1 to verify.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

from tests.servers import HOST, PostgresServer, _Server, free_port

TRINO_VERSION = "476"  # the newest release the configured Maven repository holds as trino-server-core
JAVA_MIN = (24, 0, 1)  # Trino 476 refuses to start below this (io.trino.server.TrinoSystemRequirements)
# What the server and our plugins load; a jlink-trimmed runtime may lack some.
JAVA_MODULES = frozenset({"java.base", "java.logging", "java.management", "java.naming", "java.net.http",
                          "java.security.jgss", "java.sql", "java.xml", "jdk.management", "jdk.unsupported"})
CATALOG_PLUGINS = ("tpch", "memory", "iceberg", "postgresql", "delta-lake")  # delta-lake: only in the full tarball
# Of trino-server-core's own plugins (the others only slow startup); postgresql needs geospatial's types.
CORE_PLUGINS = ("password-authenticators", "geospatial")
SERVICE_USER = "controlroom"
# A login of its own for a BI tool (Superset): read-only by the rules ("~ro"), impersonating no one.
BI_USER = "superset~ro"
RULES_FILE = Path(__file__).resolve().parent.parent / "compose" / "trino" / "rules.json"
TRINO_VAR = "CONTROLROOM_TEST_TRINO_URL"  # https://controlroom:<password>@127.0.0.1:<port>
TRINO_CA_VAR = "CONTROLROOM_TEST_TRINO_CA"  # the certificate file that URL's server presents
TRINO_BI_VAR = "CONTROLROOM_TEST_TRINO_BI_URL"  # https://superset~ro:<password>@127.0.0.1:<port>
CACHE_VAR = "CONTROLROOM_CACHE_DIR"
STAMP = ".installed"
JVM_OPTIONS = (
    "-Xmx1G", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError", "-XX:-OmitStackTraceInFastThrow",
    "-XX:TieredStopAtLevel=1",  # C1 only: starts 20% faster, and test queries are small
    "-XX:+EnableDynamicAgentLoading", "-Djdk.attach.allowAttachSelf=true", "-Dfile.encoding=UTF-8",
)


def _say(message: str) -> None:
    print(f"trino: {message}", file=sys.stderr, flush=True)


def trino_install() -> Path:
    """Fetch and unpack the pinned Trino with ``mvn`` unless done before; return its home.

    The home holds ``bin/ lib/ plugin/`` with only the plugins we use. A stamp file marks a finished
    install, so a rerun costs one ``stat``; a lock makes parallel callers share one download.
    """
    home = Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "controlroom") / "trino" / TRINO_VERSION
    if _installed(home):
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f".{TRINO_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(home):
            _install(home)
    return home


def _installed(home: Path) -> bool:
    """A finished install with every plugin we load (a cache from before a plugin was added is redone)."""
    try:
        stamp = json.loads((home / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return set(CATALOG_PLUGINS) <= set(stamp.get("plugins", ()))


def _install(home: Path) -> None:
    began, work = time.monotonic(), home.with_name(f".{home.name}.partial")
    for stale in (work, home):
        shutil.rmtree(stale, ignore_errors=True)
    repo, server = work / "m2", work / "server"  # a private Maven repository, deleted when done
    server.mkdir(parents=True)
    core = _mvn_fetch(f"io.trino:trino-server-core:{TRINO_VERSION}:tar.gz", repo)
    if core is None:
        raise RuntimeError(f"io.trino:trino-server-core:{TRINO_VERSION} is not in the configured Maven repository")
    _untar(core, server)
    for plugin in (server / "plugin").iterdir():
        if plugin.name not in CORE_PLUGINS:
            shutil.rmtree(plugin)
    missing = []
    for name in CATALOG_PLUGINS:
        archive = _mvn_fetch(f"io.trino:trino-{name}:{TRINO_VERSION}:zip", repo)
        if archive is None:
            missing.append(name)
            continue
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(work / "unzipped")
        (work / "unzipped" / f"trino-{name}-{TRINO_VERSION}").rename(server / "plugin" / name)
        archive.unlink()
    if missing:  # a repository may lack some plugin zips; the full server tarball has every plugin
        full = _mvn_fetch(f"io.trino:trino-server:{TRINO_VERSION}:tar.gz", repo)
        if full is None:
            raise RuntimeError(f"Trino {TRINO_VERSION} plugins {missing} are not in the configured Maven repository")
        (work / "full").mkdir()
        _untar(full, work / "full")  # all of it: its plugins hard-link jars of lib/ and of each other
        for name in missing:
            (work / "full" / "plugin" / name).rename(server / "plugin" / name)
    shutil.rmtree(repo)
    (server / STAMP).write_text(json.dumps({"version": TRINO_VERSION, "plugins": [*CATALOG_PLUGINS, *CORE_PLUGINS]}))
    server.rename(home)
    shutil.rmtree(work)
    _say(f"installed Trino {TRINO_VERSION} in {home} in {time.monotonic() - began:.0f} s")


def _mvn_fetch(artifact: str, repo: Path) -> Path | None:
    """Download one artifact into ``repo``; None if the repository does not have it."""
    if not (mvn := shutil.which("mvn")):
        raise RuntimeError("mvn not found: apt-get install maven")
    _say(f"fetching {artifact}")
    began = time.monotonic()
    cmd = [mvn, "-B", "-q", "--strict-checksums", f"-Dmaven.repo.local={repo}", "dependency:get",
           f"-Dartifact={artifact}", "-Dtransitive=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    group, name, version, extension = artifact.split(":")
    path = repo.joinpath(*group.split("."), name, version, f"{name}-{version}.{extension}")
    if done.returncode == 0 and path.exists():
        _say(f"fetched {artifact}: {path.stat().st_size / 1e6:.0f} MB in {time.monotonic() - began:.1f} s")
        return path
    output = done.stdout + done.stderr
    if "Could not find artifact" in output or "was not found in" in output:
        _say(f"{artifact} is not in the configured Maven repository")
        return None
    raise RuntimeError(f"mvn could not fetch {artifact}:\n" + "\n".join(output.splitlines()[-15:]))


def _untar(archive: Path, dest: Path) -> None:
    """Unpack a release tarball into ``dest``, dropping its top directory; then delete the tarball."""
    cmd = ["tar", "-xzf", str(archive), "-C", str(dest), "--strip-components=1", "--no-same-owner"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"tar failed on {archive.name}: {done.stderr.strip()}")
    archive.unlink()


def java_home() -> Path:
    """A JDK that runs the pinned Trino: ``$JAVA_HOME`` if it fits, else the newest fit one in /usr/lib/jvm."""
    rejected, fit = [], []
    candidates = [Path(os.environ["JAVA_HOME"])] if os.environ.get("JAVA_HOME") else []
    for home in dict.fromkeys(p.resolve() for p in [*candidates, *sorted(Path("/usr/lib/jvm").glob("*"))]):
        version, problem = _jdk_check(home)
        if problem is None:
            fit.append((version, home))
        else:
            rejected.append(f"{home} ({problem})")
    if not fit:
        raise RuntimeError(
            f"Trino {TRINO_VERSION} needs a JDK >= {'.'.join(map(str, JAVA_MIN))} with modules "
            f"{', '.join(sorted(JAVA_MODULES))}: install one under /usr/lib/jvm (e.g. Temurin 25) or set "
            f"JAVA_HOME. Rejected: {'; '.join(rejected) or 'none'}"
        )
    preferred = Path(os.environ.get("JAVA_HOME") or "/nonexistent").resolve()
    return next((home for _, home in fit if home == preferred), max(fit)[1])


def _jdk_check(home: Path) -> tuple[tuple[int, ...], str | None]:
    """Return (version, why it does not fit or None) from the JDK's ``release`` file."""
    release = home / "release"
    if not (home / "bin" / "java").exists() or not release.exists():
        return (), "no bin/java or release file"
    info = dict(re.findall(r'^(\w+)="?(.*?)"?$', release.read_text(errors="replace"), re.MULTILINE))
    version = tuple(int(part) for part in re.findall(r"\d+", info.get("JAVA_VERSION", ""))[:3])
    if version < JAVA_MIN:
        return version, f"Java {info.get('JAVA_VERSION', '?')}"
    modules = set(info.get("MODULES", "").split())
    if not modules:  # no MODULES line: ask the runtime
        listed = subprocess.run([str(home / "bin" / "java"), "--list-modules"], capture_output=True, text=True)
        modules = {line.split("@")[0] for line in listed.stdout.split()}
    if lacking := JAVA_MODULES - modules:
        return version, f"lacks modules {', '.join(sorted(lacking))}"
    return version, None


def guard_install(home: Path, java: Path) -> Path:
    """Build compose/trino/ro-guard (the plugin that denies table procedures to read-only
    identities) into Trino's plugin folder; again only when its source changed."""
    guard = RULES_FILE.parent / "ro-guard"
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(guard.glob("*.*")))).hexdigest()
    target = home / "plugin" / "controlroom-read-only-guard"
    stamp = target / ".source-sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return target
    with (home.parent / f".{TRINO_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(target, ignore_errors=True)
        done = subprocess.run(["bash", str(guard / "build.sh"), str(target), TRINO_VERSION], capture_output=True,
                              text=True, env={**os.environ, "JAVA_HOME": str(java)}, check=False)
        if done.returncode:
            raise RuntimeError(f"building the Trino read-only guard failed:\n{done.stderr[-2000:]}")
        stamp.write_text(digest)
    return target


def password_file_entry(user: str, password: str, *, iterations: int = 1000) -> str:
    """A line of Trino's password file: ``user:iterations:salt:hash``, PBKDF2WithHmacSHA1 in lowercase hex.

    1000 is Trino's minimum: fine for a throwaway server; production wants many more (or bcrypt, cost >= 8).
    """
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations, dklen=32)
    return f"{user}:{iterations}:{salt.hex()}:{digest.hex()}"


class TrinoServer(_Server):
    """A single-node Trino (coordinator and worker) with catalogs tpch, memory, iceberg, postgresql.

    ``iceberg`` keeps its JDBC catalog in the PostgreSQL database at ``postgres_url`` (default: a
    PostgresServer of its own) and its files under the temp dir; ``postgresql`` is that database.
    Clients speak HTTPS (verifying ``ca_file``), log in as ``user``/``password`` and impersonate
    end users per ``compose/trino/rules.json``: ``alice`` writes, ``alice~ro`` only reads. A second
    login, ``bi_user``/``bi_password`` (``superset~ro``), is a BI tool's own: it only reads, as itself.
    """

    name = "trino"
    user: ClassVar[str] = SERVICE_USER
    probe_user: ClassVar[str] = f"{SERVICE_USER}~ro"  # the rules let the service user itself read system only
    start_timeout: ClassVar[float] = 120.0

    def __init__(self, postgres_url: str | None = None, port: int | None = None, *,
                 catalogs: dict[str, dict[str, str]] | None = None, lake: Any = None) -> None:
        """``catalogs``: extra catalog property files by catalog name (replacing ours of that name);
        ``lake``: an S3 server (``tests.trino_lake.LakeStore.of`` takes it) that makes ``iceberg``
        and ``iceberg_rest`` the shared lakehouse catalogs of ``tests/trino_lake.py``."""
        super().__init__(port)
        self.postgres_url = postgres_url
        self.extra_catalogs = dict(catalogs or {})
        self.lake = lake
        self.lake_configs: dict[str, Any] = {}  # the catalog connection configs of the lake catalogs
        self.password = secrets.token_urlsafe(18)
        self.bi_user, self.bi_password = BI_USER, secrets.token_urlsafe(18)
        self.http_port: int | None = None  # plain HTTP: internal traffic and /v1/info only
        self.ca_file: Path | None = None
        self._postgres: PostgresServer | None = None
        self._aot_training: Path | None = None

    @property
    def credentials_url(self) -> str:
        """``https://controlroom:<password>@127.0.0.1:<port>``, what ``CONTROLROOM_TEST_TRINO_URL`` holds."""
        return f"https://{quote(self.user)}:{quote(self.password, safe='')}@{HOST}:{self.port}"

    @property
    def bi_credentials_url(self) -> str:
        """``https://superset~ro:<password>@127.0.0.1:<port>``, what ``CONTROLROOM_TEST_TRINO_BI_URL`` holds."""
        return f"https://{quote(self.bi_user, safe='~')}:{quote(self.bi_password, safe='')}@{HOST}:{self.port}"

    def environ(self) -> dict[str, str]:
        """The variables that tell a test process where this server is."""
        from tests.trino_lake import catalogs_environ

        return {TRINO_VAR: self.credentials_url, TRINO_BI_VAR: self.bi_credentials_url, TRINO_CA_VAR: str(self.ca_file),
                **catalogs_environ(self.lake_configs)}

    def _start(self) -> str:
        assert self.tmpdir is not None
        home, java = trino_install(), java_home()
        guard_install(home, java)
        if self.postgres_url is None:
            self._postgres = PostgresServer()
            self.postgres_url = self._postgres.start()
        iceberg_jdbc_catalog_create(self.postgres_url)
        if self.lake is not None:
            from tests.trino_lake import LakeStore, lake_catalogs

            lake_properties, self.lake_configs = lake_catalogs(LakeStore.of(self.lake), self.postgres_url)
            self.extra_catalogs = {**lake_properties, **self.extra_catalogs}
        etc = self.tmpdir / "etc"
        (etc / "catalog").mkdir(parents=True)
        self.http_port, self.ca_file = free_port(), _self_signed_tls(etc)
        self._write_config(home, etc)
        jvm = [*JVM_OPTIONS, *self._aot_options(home, java)]
        (etc / "jvm.config").write_text("\n".join(jvm) + "\n")  # for the record: we run java without the launcher
        node = [f"-D{line}" for line in (etc / "node.properties").read_text().splitlines()]
        classpath = ":".join(str(jar) for jar in sorted((home / "lib").glob("*.jar")))  # AOT caches take no wildcard
        cmd = [str(java / "bin" / "java"), *jvm, *node, f"-Dconfig={etc / 'config.properties'}",
               f"-Dlog.levels-file={etc / 'log.properties'}", "-cp", classpath, "io.trino.server.TrinoServer"]
        self._spawn(cmd, cwd=self.tmpdir, env={**os.environ, "JAVA_HOME": str(java)})
        self._wait_ready()
        return f"https://{HOST}:{self.port}"

    def _aot_options(self, home: Path, java: Path) -> list[str]:
        """JDK 25+: load classes from an AOT cache (starts ~35% faster); the first run records it at exit."""
        version = _jdk_check(java)[0]
        if version < (25,):
            return []
        cache = home / "aot" / f"{java.name}-{'.'.join(map(str, version))}.aot"
        if cache.exists():
            return [f"-XX:AOTCache={cache}"]
        cache.parent.mkdir(exist_ok=True)
        self._aot_training = cache.with_name(f"{cache.name}.{os.getpid()}-{self.port}.tmp")
        return [f"-XX:AOTCacheOutput={self._aot_training}"]

    def stop(self) -> None:
        """Stop Trino (after a first run the JVM spends some seconds writing the AOT cache), then our PostgreSQL."""
        proc, training, self._aot_training = self._proc, self._aot_training, None
        if training is not None and proc is not None and proc.poll() is None:
            proc.terminate()  # and give it time to write: 30 s on a busy 2-core machine
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(180)
        super().stop()
        if training is not None and training.exists():
            if proc is not None and proc.returncode != -signal.SIGKILL:  # killed: maybe a partial file
                training.rename(training.with_name(training.name.rsplit(".", 2)[0]))
            training.unlink(missing_ok=True)
        self.lake_configs = {}
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = self.postgres_url = None

    def _write_config(self, home: Path, etc: Path) -> None:
        assert self.tmpdir is not None and self.postgres_url is not None
        jdbc_url, pg_user, pg_password = _jdbc(self.postgres_url)
        (self.tmpdir / "warehouse").mkdir()
        (etc / "password.db").write_text(password_file_entry(self.user, self.password) + "\n"
                                         + password_file_entry(self.bi_user, self.bi_password) + "\n")
        files: dict[str, dict[str, object]] = {
            "node.properties": {
                "node.environment": "controlroom_test", "node.id": uuid.uuid4(), "node.data-dir": self.tmpdir / "data",
                "node.bind-ip": HOST, "node.internal-address": HOST,
            },
            "config.properties": {
                "coordinator": "true", "node-scheduler.include-coordinator": "true",
                "http-server.http.port": self.http_port, "discovery.uri": f"http://{HOST}:{self.http_port}",
                "http-server.https.enabled": "true", "http-server.https.port": self.port,
                "http-server.https.keystore.path": etc / "tls.pem",
                "http-server.authentication.type": "PASSWORD",
                # Passwords are taken over HTTPS only; "true" would let HTTP clients name any user, unchecked.
                "http-server.authentication.allow-insecure-over-http": "false",
                "internal-communication.shared-secret": secrets.token_urlsafe(32),
                "plugin.dir": home / "plugin", "catalog.config-dir": etc / "catalog",
                "web-ui.enabled": "false", "http-server.log.enabled": "false",
                # Both must allow: rules.json, and the guard for what file rules never check.
                "access-control.config-files": f"{etc / 'access-control.properties'},{etc / 'ro-guard.properties'}",
            },
            "log.properties": {"io.trino": "INFO"},
            "password-authenticator.properties": {
                "password-authenticator.name": "file", "file.password-file": etc / "password.db",
            },
            "access-control.properties": {"access-control.name": "file", "security.config-file": RULES_FILE},
            "ro-guard.properties": {"access-control.name": "controlroom-read-only-guard"},
            "catalog/tpch.properties": {"connector.name": "tpch"},
            "catalog/memory.properties": {"connector.name": "memory"},
            "catalog/iceberg.properties": {
                "connector.name": "iceberg", "iceberg.catalog.type": "jdbc",
                "iceberg.jdbc-catalog.catalog-name": "controlroom",
                "iceberg.jdbc-catalog.driver-class": "org.postgresql.Driver",
                "iceberg.jdbc-catalog.connection-url": jdbc_url,
                "iceberg.jdbc-catalog.connection-user": pg_user,
                "iceberg.jdbc-catalog.connection-password": pg_password,
                "iceberg.jdbc-catalog.default-warehouse-dir": "local:///",
                "fs.native-local.enabled": "true", "local.location": self.tmpdir / "warehouse",
            },
            "catalog/postgresql.properties": {
                "connector.name": "postgresql", "connection-url": jdbc_url,
                "connection-user": pg_user, "connection-password": pg_password,
            },
        }
        files |= {f"catalog/{name}.properties": dict(values) for name, values in self.extra_catalogs.items()}
        for name, values in files.items():  # empty values left out (no password under trust auth)
            (etc / name).write_text("".join(f"{key}={value}\n" for key, value in values.items() if value != ""))

    def _ready(self) -> bool:
        """Started, and the node takes catalog work (it is listed as active a few seconds before that)."""
        import trino

        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/v1/info", timeout=1) as response:
                if json.load(response).get("starting") is not False:
                    return False
            conn = trino_connect(self.credentials_url, user=self.probe_user, ca_file=self.ca_file, max_attempts=1)
            return conn.cursor().execute("SELECT count(*) FROM tpch.tiny.region").fetchall() == [[5]]
        except (OSError, ValueError, trino.exceptions.TrinoQueryError, trino.exceptions.TrinoConnectionError):
            return False  # NO_NODES_AVAILABLE until then


def _self_signed_tls(etc: Path) -> Path:
    """Write ``tls.pem`` (key and certificate for 127.0.0.1: Trino's keystore); return ``ca.pem`` (certificate)."""
    if not (openssl := shutil.which("openssl")):
        raise RuntimeError("openssl not found: apt-get install openssl")
    key, cert = etc / "key.pem", etc / "ca.pem"
    cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={HOST}",
           "-addext", f"subjectAltName=IP:{HOST}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"openssl could not make a certificate: {done.stderr.strip()}")
    (etc / "tls.pem").write_text(key.read_text() + cert.read_text())
    return cert


# Trino's Iceberg JDBC catalog does not create its tables; these are Iceberg's (schema V1).
ICEBERG_JDBC_TABLES = """
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
    catalog_name varchar(255) NOT NULL, namespace varchar(255) NOT NULL,
    property_key varchar(255), property_value varchar(1000),
    PRIMARY KEY (catalog_name, namespace, property_key));
CREATE TABLE IF NOT EXISTS iceberg_tables (
    catalog_name varchar(255) NOT NULL, table_namespace varchar(255) NOT NULL, table_name varchar(255) NOT NULL,
    metadata_location varchar(1000), previous_metadata_location varchar(1000), iceberg_type varchar(5),
    PRIMARY KEY (catalog_name, table_namespace, table_name));
"""


def iceberg_jdbc_catalog_create(postgres_url: str) -> None:
    """Create the Iceberg JDBC catalog's tables in the database (idempotent)."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(ICEBERG_JDBC_TABLES)


def _jdbc(postgres_url: str) -> tuple[str, str, str]:
    """Split ``postgres://user:password@host:port/db`` into a JDBC URL, a user and a password."""
    parts = urlsplit(postgres_url)
    url = f"jdbc:postgresql://{parts.hostname}:{parts.port or 5432}/{parts.path.lstrip('/') or 'postgres'}"
    return url, unquote(parts.username or ""), unquote(parts.password or "")


def trino_connect(credentials_url: str, *, user: str, ca_file: str | Path | None = None, **kwargs: Any) -> Any:
    """A ``trino.dbapi`` connection that logs in as the URL's user and runs queries as ``user``.

    ``ca_file``: the certificate to trust (``TrinoServer.ca_file``, ``$CONTROLROOM_TEST_TRINO_CA``).
    """
    import requests
    import trino

    parts = urlsplit(credentials_url)
    auth = trino.auth.BasicAuthentication(unquote(parts.username or ""), unquote(parts.password or ""))
    session = requests.Session()
    session.verify = str(ca_file) if ca_file else True
    session.trust_env = False  # else $REQUESTS_CA_BUNDLE silently overrides ``verify``
    return trino.dbapi.connect(host=parts.hostname, port=parts.port, user=user, auth=auth,
                               http_scheme=parts.scheme, http_session=session, **kwargs)


if __name__ == "__main__":
    print(trino_install())
