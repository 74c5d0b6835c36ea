#!/usr/bin/env bash
# One command to a working Control Room on embedded defaults: SQLite, local disk, DuckDB and a
# broker folder; web, a Celery worker and beat. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh runtime
export CONTROLROOM_MODE=${CONTROLROOM_MODE:-embedded}
PORT=${PORT:-8000}
PY=.venv/bin/python
echo "› migrating the database"
$PY manage.py migrate --noinput -v0
$PY manage.py seed_demo
pids=()
# Each child runs in its own session (setsid), so the terminal's Ctrl-C reaches only this
# script, and each gets exactly one TERM for its whole process group: a second signal
# arriving inside gunicorn's graceful quit can deadlock a worker and orphan it on the port.
groups() { for pid in "${pids[@]}"; do echo "-$pid"; done; }
cleanup() {
  trap - INT TERM EXIT
  echo; echo "› stopping web, worker and beat"
  kill -TERM $(groups) 2>/dev/null || true
  for _ in $(seq 1 150); do  # up to 15 s for a warm shutdown, then force
    kill -0 $(groups) 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL $(groups) 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT
setsid .venv/bin/gunicorn controlroom.wsgi:application --bind "127.0.0.1:${PORT}" --workers 2 --threads 4 \
  --graceful-timeout 10 --access-logfile - --log-level warning & pids+=($!)
setsid .venv/bin/celery -A controlroom worker --loglevel INFO --queues default,sql --concurrency 2 \
  --prefetch-multiplier 1 --hostname "worker@%h" & pids+=($!)
setsid .venv/bin/celery -A controlroom beat --loglevel INFO \
  --scheduler django_celery_beat.schedulers:DatabaseScheduler --pidfile= & pids+=($!)
echo "› Control Room is up at http://127.0.0.1:${PORT}/  (Ctrl-C stops it)"
wait -n "${pids[@]}"
