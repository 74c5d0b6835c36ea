#!/bin/sh
# Entrypoint of the mlflow service: reads its secrets from the mounted files, hands them to MLflow
# through its environment (never its command line, which `ps` shows), then runs
# `mlflow server "$@"` (the service's command: host, port, workers, artifacts destination).
#   MLFLOW_DB_HOST, MLFLOW_DB_PORT, MLFLOW_DB_NAME  the backend store: a PostgreSQL database, and
#                                                   its owner role, of that name
#   MLFLOW_DB_PASSWORD_FILE                         that role's password
#   MLFLOW_S3_ACCESS_KEY_FILE, MLFLOW_S3_SECRET_KEY_FILE  the S3 key pair of the artifacts bucket
set -eu

read_secret() {
    value="$(cat "$1")"
    [ -n "$value" ] || { echo "mlflow: $1 is empty" >&2; exit 1; }
    printf '%s' "$value"
}

password="$(read_secret "${MLFLOW_DB_PASSWORD_FILE:?}")"
# Percent-encoded: a password chosen by hand may hold characters that end a URL's user part.
password="$(printf '%s' "$password" | python -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""))')"
MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://${MLFLOW_DB_NAME:?}:${password}@${MLFLOW_DB_HOST:?}:${MLFLOW_DB_PORT:-5432}/${MLFLOW_DB_NAME}"
AWS_ACCESS_KEY_ID="$(read_secret "${MLFLOW_S3_ACCESS_KEY_FILE:?}")"
AWS_SECRET_ACCESS_KEY="$(read_secret "${MLFLOW_S3_SECRET_KEY_FILE:?}")"
unset password value
export MLFLOW_BACKEND_STORE_URI AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

exec mlflow server "$@"
