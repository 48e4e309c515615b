#!/bin/sh
# The `migrate` one-shot of docker-compose.yml, run as the database owner before any worker starts:
# migrations, the per-process roles and their passwords, then the beat schedules. Idempotent.
set -eu
cd /app
python manage.py migrate --noinput
python manage.py setup_db_roles
python deploy/docker/role_passwords.py "${DB_ROLE_PASSWORDS_DIR:-/run/secrets}"
python manage.py setup_schedules
