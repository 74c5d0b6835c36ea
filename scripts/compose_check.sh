#!/usr/bin/env bash
# Validate the production compose file without a Docker engine.
#
# Usage: scripts/compose_check.sh [COMPOSE_FILE [ENV_FILE]]
#   COMPOSE_FILE defaults to compose/docker-compose.yml
#   ENV_FILE     defaults to compose/.env.example
#
# Exits non-zero if docker-compose is missing or the file does not render.
#
# Notes (checked against Debian's docker-compose 1.29.2):
#   * `config` fails when a service's env_file is missing, and compose/.env is
#     never committed, so the services' env_file is ${CONTROLROOM_ENV_FILE:-.env}
#     and this script points CONTROLROOM_ENV_FILE at ENV_FILE.
#   * `config` does NOT check that secret files exist, so the missing
#     compose/secrets/django_secret_key needs no stand-in.
#   * `config` does check that the web build context exists.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compose_file="${1:-$repo_root/compose/docker-compose.yml}"
env_file="${2:-$repo_root/compose/.env.example}"

if ! command -v docker-compose >/dev/null 2>&1; then
    echo "compose_check: docker-compose not found (apt-get install docker-compose)" >&2
    exit 127
fi
for f in "$compose_file" "$env_file"; do
    if [[ ! -f "$f" ]]; then
        echo "compose_check: no such file: $f" >&2
        exit 2
    fi
done

# Absolute, because env_file paths resolve relative to the compose file.
env_file="$(cd "$(dirname "$env_file")" && pwd)/$(basename "$env_file")"

CONTROLROOM_ENV_FILE="$env_file" \
    docker-compose -f "$compose_file" --env-file "$env_file" config -q

echo "compose_check: $compose_file OK"
