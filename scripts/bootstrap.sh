#!/usr/bin/env bash
# Create .venv and install the pinned dependencies when the lock files changed.
# Usage: scripts/bootstrap.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-runtime}
locks=(requirements.lock)
[ "$profile" = dev ] && locks+=(requirements-dev.lock)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "› creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# Spark (pyspark + delta-spark, ~500 MB): always for dev (the tests use it); for runtime only on a
# machine with a JDK 17, the one Spark 4.1 runs on. The jars come later: python -m lakehouse.spark.runtime.
if [ "$profile" = dev ]; then
  locks+=(requirements-spark.lock); echo "› Spark: requirements-spark.lock is part of the dev profile"
elif java17=$(.venv/bin/python -m lakehouse.spark.runtime --java17 2>/dev/null); then
  locks+=(requirements-spark.lock); echo "› Spark: JDK 17 at $java17, so requirements-spark.lock is installed too"
else
  echo "› Spark: no JDK 17 found, skipping requirements-spark.lock (apt-get install openjdk-17-jdk-headless, then rerun)"
fi
stamp=".venv/.installed-$profile"
want=$(cat "${locks[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "› installing ${locks[*]} (pip shows progress; downloads are cached in ~/.cache/pip)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  args=(); for lock in "${locks[@]}"; do args+=(-r "$lock"); done
  .venv/bin/python -m pip install --require-hashes --progress-bar on "${args[@]}"
  # The project itself, editable, for its console script (controlroom-executor); setuptools
  # comes with the venv, so this needs no download.
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
