#!/bin/sh
# The one way each ledger-portal process starts, used by the systemd units, the container
# image and the compose file alike (docs/operations.md):
#   entrypoint.sh web       collect static files, then gunicorn (deploy/gunicorn.conf.py)
#   entrypoint.sh worker    a Celery worker: exports, replays, rollbacks, back-tests
#   entrypoint.sh beat      Celery beat: digests, watchdogs, the outbox (one per installation)
#   entrypoint.sh migrate   apply migrations (run with the owner role's DATABASE_URL)
# The virtual environment is .venv beside deploy/ unless LEDGER_BIN names another bin folder.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LEDGER_BIN:-$ROOT/.venv/bin}
DATA=${LEDGER_DATA_DIR:-$ROOT/data}
cd "$ROOT"
# /metrics from several processes: the web's and the workers' samples meet here (docs/operations.md)
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

case "${1:-}" in
  web)
    "$BIN/python" manage.py collectstatic --no-input -v0
    exec "$BIN/gunicorn" --config "$ROOT/deploy/gunicorn.conf.py" ledger_portal.wsgi
    ;;
  worker)
    exec "$BIN/celery" -A ledger_portal worker --loglevel INFO --without-gossip --without-mingle
    ;;
  beat)
    exec "$BIN/celery" -A ledger_portal beat --loglevel INFO --schedule "$DATA/celerybeat-schedule"
    ;;
  migrate)
    exec "$BIN/python" manage.py migrate --no-input
    ;;
  *)
    echo "usage: $0 web|worker|beat|migrate" >&2
    exit 64
    ;;
esac
