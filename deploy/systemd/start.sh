#!/usr/bin/env bash
# Maps a systemd instance name to the same command as the Procfile entry of that name, connected as
# the same database role (DB_ROLE; its password, DB_ROLE_PASSWORD, comes from /etc/custos/%i.env).
set -euo pipefail
cd "$(dirname "$0")/../.."
case "$1" in
  web)
    export DB_ROLE=custos_api
    exec .venv/bin/gunicorn project.wsgi --bind "${CUSTOS_BIND:-127.0.0.1:8000}" --workers "${WEB_WORKERS:-2}" --worker-class gthread --threads "${WEB_THREADS:-8}" ;;
  worker-execution) export DB_ROLE=custos_engine; exec .venv/bin/python manage.py run_worker execution ;;
  worker-signer) export DB_ROLE=custos_signer; exec .venv/bin/python manage.py run_worker signer ;;
  # The execution worker writes RPC_ENDPOINTS; the watcher's role may only record endpoint health.
  worker-watcher) export DB_ROLE=custos_watcher RPC_ENDPOINTS='[]'; exec .venv/bin/python manage.py run_worker watcher ;;
  worker-market) export DB_ROLE=custos_market; exec .venv/bin/python manage.py run_worker market ;;
  worker-ml) export DB_ROLE=custos_ml; exec .venv/bin/python manage.py run_worker ml ;;
  beat) export DB_ROLE=custos_beat; exec .venv/bin/python manage.py run_worker beat ;;
  *) echo "unknown Custos process: $1" >&2; exit 2 ;;
esac
