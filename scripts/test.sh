#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, lints, then runs every test on
# SQLite and again on a real PostgreSQL server (with a real Redis for the worker tests).
#   scripts/test.sh            everything
#   scripts/test.sh --quick    SQLite only, without the slow tests (workers, browser)
#   scripts/test.sh -- ARGS    extra pytest arguments (e.g. -- -k spec)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --) shift; extra=("$@"); break ;;
    *) extra+=("$1") ;;
  esac
  shift
done
bash scripts/system_deps.sh
bash scripts/bootstrap.sh dev
PY=.venv/bin/python
echo "› ruff"
.venv/bin/ruff check .
export CONTROLROOM_DATA_DIR; CONTROLROOM_DATA_DIR=$(mktemp -d -t controlroom-test-XXXXXX)
trap 'rm -rf "$CONTROLROOM_DATA_DIR"' EXIT
unset DATABASE_URL CELERY_BROKER_URL
start=$(date +%s)
if [ "$quick" = 1 ]; then
  # Both cores (pytest-xdist): each worker has its own SQLite file and per-test storage.
  $PY -m pytest -m "not slow" -n "${TEST_QUICK_WORKERS:-2}" "${extra[@]}"
  exit
fi
echo "› Trino server (downloaded once into ~/.cache/controlroom, then reused)"
$PY -m tests.trino_server
echo "› Spark jars (fetched once into ~/.cache/controlroom/spark-jars, checksummed, then reused)"
$PY -m lakehouse.spark.runtime
echo "› helm, built once from its Go module into ~/.cache/controlroom/helm (about 4 minutes the first time)"
$PY scripts/helm_tool.py >/dev/null
echo "› MLflow tracking server in its own virtualenv (requirements-mlflow.lock, installed once into ~/.cache/controlroom)"
$PY -m tests.mlflow_server
echo "› Superset 6.1 in its own virtualenv (requirements-superset.lock, installed once into ~/.cache/controlroom; a prepared metadata database is kept beside it at first use)"
$PY -m tests.superset_server
echo "› dbt 1.11 in its own virtualenv (requirements-dbt.lock, installed once into ~/.cache/controlroom)"
$PY -m lakehouse.phases.dbt.env
echo "› Airflow 3.3 in its own virtualenv (requirements-airflow.lock, installed once into ~/.cache/controlroom), with the provider from integrations/airflow_provider"
$PY -m tests.airflow_env
echo "› Keycloak for the single sign-on tests (downloaded once into ~/.cache/controlroom, then reused)"
$PY -m tests.keycloak_server
echo "› suite on SQLite (tests marked 'once', on Trino or on their own embedded stack, run in the next pass only)"
$PY -m tests.servers --redis -- $PY -m pytest -m "not once" "${extra[@]}"
echo "› suite on PostgreSQL"
$PY -m tests.servers --postgres --redis --trino --s3 -- $PY -m pytest "${extra[@]}"
echo "› both runs passed in $(( $(date +%s) - start )) s"
