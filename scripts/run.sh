#!/usr/bin/env bash
# One command to a working Control Room on embedded defaults: SQLite, local disk, DuckDB and a
# broker folder; web, a Celery worker and beat, kept running by controlroom/supervisor.py (a
# child that dies is restarted, with its exit reason printed). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh runtime
export CONTROLROOM_MODE=${CONTROLROOM_MODE:-embedded}
export PORT=${PORT:-8000}
PY=.venv/bin/python
echo "› migrating the database"
$PY manage.py migrate --noinput -v0
$PY manage.py seed_demo
# exec: the supervisor takes this shell's place, so Ctrl-C reaches it and no shell waits in between.
exec $PY -m controlroom.supervisor
