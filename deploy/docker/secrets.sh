#!/bin/sh
# Create the secret files docker-compose.yml mounts (./secrets/<name>), leaving existing ones alone:
# random passwords for PostgreSQL, each per-process database role and Django, a random keystore
# passphrase, and empty files for the HSM PIN and the Vault secret id/token (fill in the ones your
# key backend uses). Run from the repository root: sh deploy/docker/secrets.sh
#
# The directory is private to you (0700); the files inside are world-readable (0644) because the
# containers read them as their own users (custos, uid 10001; postgres), and a bind-mounted file keeps
# its host owner and mode. Nobody else on the host can reach them through the directory.
set -eu
umask 077
dir="${1:-secrets}"
mkdir -p "$dir"
chmod 0700 "$dir"

random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

for name in postgres_password django_secret_key keystore_passphrase \
            db_custos_api db_custos_engine db_custos_signer db_custos_market db_custos_ml \
            db_custos_watcher db_custos_beat db_custos_authority; do
    if [ ! -e "$dir/$name" ]; then
        random > "$dir/$name"
        echo "created $dir/$name"
    fi
done
for name in hsm_pin vault_secret_id vault_token; do
    if [ ! -e "$dir/$name" ]; then
        : > "$dir/$name"
        echo "created $dir/$name (empty: fill it in if your key backend uses it)"
    fi
done
chmod 0644 "$dir"/*
