"""dbt's own virtualenv: dbt-core with the DuckDB and Trino adapters, from ``requirements-dbt.lock``.

dbt runs as a subprocess of the phase (cancel and timeout stop its process group), from a virtualenv
installed once per lock content into ``$CONTROLROOM_CACHE_DIR/dbt-<sha256 of the lock>/`` (default
``~/.cache/controlroom``); a changed lock installs a new one beside it. Concurrent installers (two
workers, a worker and CI's pre-step) take a file lock, so one installs and the others wait.

``python -m lakehouse.phases.dbt.env`` installs it and prints the ``dbt`` command's path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOCK = Path(__file__).resolve().parents[3] / "requirements-dbt.lock"
CACHE_VAR = "CONTROLROOM_CACHE_DIR"
INSTALL_TIMEOUT_S = 1800
_MARK = ".installed"


class DbtMissing(RuntimeError):
    """dbt's virtualenv cannot be installed here; the message says why and how to install it."""


def cache_dir() -> Path:
    """``$CONTROLROOM_CACHE_DIR``, else ``~/.cache/controlroom``."""
    return Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "controlroom")


def venv_dir() -> Path:
    """The virtualenv of the current lock file's content."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"dbt-{digest}"


def dbt_installed() -> Path | None:
    """The ``dbt`` command if the virtualenv of the current lock is installed, else None."""
    home = venv_dir()
    return home / "bin" / "dbt" if (home / _MARK).exists() else None


def dbt_install(*, progress: Callable[[str], None] | None = None) -> Path:
    """The ``dbt`` command of the cached virtualenv, installing it from the lock once (with hashes,
    no dependency resolution: the lock is the whole set). Raises DbtMissing when pip fails."""
    found = dbt_installed()
    if found is not None:
        return found
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    home = venv_dir()
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f".{home.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / _MARK).exists():
            began = time.monotonic()
            say(f"dbt: installing requirements-dbt.lock into {home} (once)")
            steps = ([sys.executable, "-m", "venv", "--clear", str(home)],
                     [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                      "--require-hashes", "--no-deps", "-r", str(LOCK)])
            for step in steps:
                try:
                    done = subprocess.run(step, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                          timeout=INSTALL_TIMEOUT_S, check=False)
                except subprocess.TimeoutExpired:
                    raise DbtMissing(f"installing dbt took longer than {INSTALL_TIMEOUT_S} s") from None
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                    raise DbtMissing(f"dbt could not be installed ({last}); run "
                                     f"`python -m lakehouse.phases.dbt.env` on this worker to see why")
            (home / _MARK).write_text(LOCK.name)
            say(f"dbt: installed in {time.monotonic() - began:.0f} s")
    return home / "bin" / "dbt"


if __name__ == "__main__":
    print(dbt_install())
