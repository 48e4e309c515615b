#!/usr/bin/env bash
# Maps a systemd instance name to the same command as the Procfile entry of that name.
set -euo pipefail
cd "$(dirname "$0")/../.."
case "$1" in
  web) exec .venv/bin/gunicorn project.wsgi --bind "${CUSTOS_BIND:-127.0.0.1:8000}" --workers "${WEB_WORKERS:-2}" --worker-class gthread --threads "${WEB_THREADS:-8}" ;;
  worker-*) exec .venv/bin/python manage.py run_worker "${1#worker-}" ;;
  beat) exec .venv/bin/python manage.py run_worker beat ;;
  *) echo "unknown Custos process: $1" >&2; exit 2 ;;
esac
