#!/usr/bin/env python3
"""The pinned ``helm`` binary, built from its Go module on first use into a cache outside the repo.

Usage:
    python3 scripts/helm_tool.py                 # build if needed, print the binary's path
    python3 scripts/helm_tool.py lint CHART ...  # build if needed, then run helm with these arguments

No prebuilt binary can be downloaded here, so the tool asks the Go toolchain for the module's
source (``go mod download``, which checks it against the checksum database), unpacks the module's
zip into a scratch folder and runs ``go build ./cmd/helm`` there, with the version flags helm's own
Makefile sets. Building inside a copy rather than ``go install helm.sh/helm/v3/cmd/helm@v…`` keeps
working when a release's go.mod carries ``replace`` directives, which ``go install`` refuses.

The binary lands in ``$CONTROLROOM_CACHE/helm/<version>/helm`` (default ``~/.cache/controlroom``);
a file lock beside it makes parallel callers (pytest workers, two shells) build it once, and a
rerun costs one ``stat``. ``HELM_BUILD_JOBS`` (default: the core count) is ``go build -p``; lower it
when the cores are busy with something else (scripts/test.sh builds before the suite starts).
Progress goes to stderr, the path to stdout.
Needs Go >= the module's ``go`` line (1.26 for helm 3.22); Go's own module cache is reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MODULE = "helm.sh/helm/v3"
VERSION = "3.22.1"
CACHE_ROOT = Path(os.environ.get("CONTROLROOM_CACHE", Path.home() / ".cache" / "controlroom")) / "helm"
BUILD_TIMEOUT_S = 3600


class HelmBuildError(RuntimeError):
    """The helm binary could not be built; the message says which step failed and why."""


def helm_path(version: str = VERSION) -> Path:
    """Path of the helm binary of ``version``, building it first when the cache lacks it."""
    binary = CACHE_ROOT / version / "helm"
    if _works(binary, version):
        return binary
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / f"{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first caller builds; the others wait, then find it
        if not _works(binary, version):
            _build(version, binary)
    return binary


def _works(binary: Path, version: str) -> bool:
    if not os.access(binary, os.X_OK):
        return False
    result = subprocess.run([str(binary), "version", "--template", "{{.Version}}"], capture_output=True, text=True,
                            timeout=60, check=False)
    return result.returncode == 0 and result.stdout.strip() == f"v{version}"


def _say(message: str) -> None:
    print(f"helm_tool: {message}", file=sys.stderr, flush=True)


def _go(args: list[str], *, cwd: Path, env: dict[str, str], what: str) -> str:
    """Run ``go args`` and return its stdout; a failure raises with go's own last lines."""
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise HelmBuildError(f"{what} failed (go {' '.join(args[:2])} …, exit {result.returncode}):\n{tail}")
    return result.stdout


def _build(version: str, binary: Path) -> None:
    if shutil.which("go") is None:
        raise HelmBuildError("go not found on PATH: building helm needs the Go toolchain (1.26 or newer)")
    jobs = os.environ.get("HELM_BUILD_JOBS", str(os.cpu_count() or 1))  # scripts/test.sh builds before the suite
    if not jobs.isdigit() or int(jobs) < 1:
        raise HelmBuildError(f"HELM_BUILD_JOBS={jobs!r} must be a positive integer")
    # The local toolchain only (no toolchain download), no cgo (a static binary), and the
    # proxy and checksum database from the user's own Go settings.
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    started = time.monotonic()
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"build-{version}-", dir=binary.parent.parent) as scratch:
        scratch_dir = Path(scratch)
        _say(f"downloading {MODULE}@v{version} with go mod download")
        info = json.loads(_go(["mod", "download", "-json", f"{MODULE}@v{version}"], cwd=scratch_dir, env=env,
                              what=f"downloading {MODULE}@v{version}"))
        # The zip rather than the module cache's read-only folder: an unpacked copy is writable
        # (go.sum may be touched) and is removed with the scratch folder.
        with zipfile.ZipFile(info["Zip"]) as archive:
            archive.extractall(scratch_dir / "src")
        source = scratch_dir / "src" / f"{MODULE}@v{version}"
        client_go = _go(["list", "-m", "-f", "{{.Version}}", "k8s.io/client-go"], cwd=source, env=env,
                        what="reading the client-go version").strip()
        # As helm's Makefile: client-go v0.N.x is Kubernetes 1.N, the default for .Capabilities.
        k8s_minor = client_go.lstrip("v").split(".")[1]
        package = f"{MODULE}/internal/version"
        ldflags = [
            "-s", "-w",
            f"-X {package}.version=v{version}",
            f"-X {package}.gitTreeState=clean",
            f"-X {MODULE}/pkg/lint/rules.k8sVersionMajor=1",
            f"-X {MODULE}/pkg/lint/rules.k8sVersionMinor={k8s_minor}",
            f"-X {MODULE}/pkg/chartutil.k8sVersionMajor=1",
            f"-X {MODULE}/pkg/chartutil.k8sVersionMinor={k8s_minor}",
        ]
        _say(f"building helm v{version} (client-go {client_go}, go build -p {jobs}); "
             "several minutes on two cores the first time")
        built = scratch_dir / "helm"
        _go(["build", "-p", jobs, "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(built), "./cmd/helm"],
            cwd=source, env=env, what=f"building helm v{version}")
        if not _works(built, version):
            raise HelmBuildError(f"the built helm does not report version v{version}")
        os.replace(built, binary)  # atomic: a reader sees no binary or a whole one
    _say(f"built {binary} in {time.monotonic() - started:.0f} s")


def main(argv: list[str]) -> int:
    """Print the binary's path (no arguments), or run helm with ``argv`` and return its exit code."""
    try:
        binary = helm_path()
    except HelmBuildError as exc:
        _say(str(exc))
        return 1
    if not argv:
        print(binary)
        return 0
    os.execv(binary, [str(binary), *argv])  # noqa: S606 - the pinned binary we just built, user's arguments
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
