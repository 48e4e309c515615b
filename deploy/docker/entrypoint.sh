#!/bin/sh
# Entry point of the Custos image. Secrets arrive as files (docker-compose.yml `secrets:`, under
# /run/secrets); this turns the two the settings and libpq take from the environment into variables,
# then runs the service's command. Key-backend credentials stay files: the signer reads them itself.
#   DJANGO_SECRET_KEY_FILE -> DJANGO_SECRET_KEY
#   DB_PASSWORD_FILE       -> PGPASSWORD (the password of this process's database role, DB_ROLE)
set -eu
if [ -n "${DJANGO_SECRET_KEY_FILE:-}" ]; then
    DJANGO_SECRET_KEY="$(cat "$DJANGO_SECRET_KEY_FILE")"
    export DJANGO_SECRET_KEY
fi
if [ -n "${DB_PASSWORD_FILE:-}" ]; then
    PGPASSWORD="$(cat "$DB_PASSWORD_FILE")"
    export PGPASSWORD
fi
unset DJANGO_SECRET_KEY_FILE DB_PASSWORD_FILE
exec "$@"
