"""Virtualenvs of the third-party tools the tests start (MLflow, Superset, Airflow), whose pins
are not the app's: each is installed from its hashed lock file once, into
``$CONTROLROOM_CACHE_DIR/<name>-<version>-<digest of the lock>`` (default ``~/.cache/controlroom``),
and reused. Concurrent installers (CI's pre-step, two pytest workers) take a file lock: one
installs, the others wait. A changed lock installs a new virtualenv beside the old one."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

MARK = ".installed"


def cache_dir() -> Path:
    """``$CONTROLROOM_CACHE_DIR``, else ``~/.cache/controlroom``."""
    return Path(os.environ.get("CONTROLROOM_CACHE_DIR") or Path.home() / ".cache" / "controlroom")


def tool_home(name: str, version: str, lock: Path) -> Path:
    """The virtualenv folder of ``name`` at ``version`` for the lock file's current content."""
    return cache_dir() / f"{name}-{version}-{hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"


def install_lock(home: Path) -> AbstractContextManager[IO[str]]:
    """The file lock every installer of ``home`` holds while it installs (beside the folder)."""
    home.parent.mkdir(parents=True, exist_ok=True)
    handle = (home.parent / f".{home.name}.lock").open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def tool_install(name: str, version: str, lock: Path, *, note: str = "pip shows progress",
                 after: Callable[[Path], None] | None = None) -> tuple[Path, float | None]:
    """(the virtualenv, seconds the install took or None when it was there already). ``after``
    runs under the same file lock once the lock file is installed (an extra local package)."""
    home = tool_home(name, version, lock)
    if (home / MARK).exists() and after is None:
        return home, None
    took = None
    with install_lock(home):
        if not (home / MARK).exists():
            began = time.monotonic()
            print(f"{name}: installing {version} into {home} ({note})", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
            subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--require-hashes",
                            "--no-deps", "-r", str(lock)], check=True)
            (home / MARK).write_text(version)
            took = time.monotonic() - began
            print(f"{name}: installed in {took:.0f} s", file=sys.stderr, flush=True)
        if after is not None:
            after(home)
    return home, took
