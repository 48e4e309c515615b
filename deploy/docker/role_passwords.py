"""Give each per-process PostgreSQL role (`manage.py setup_db_roles`) its password, from the secret
file `db_<role>` in the directory given (docker-compose.yml mounts them under /run/secrets).

Run by deploy/docker/init.sh as the database owner. The password is hashed (SCRAM-SHA-256) on this
side by libpq, so the server, its logs and pg_stat_activity only ever see the verifier.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def main(directory: Path) -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.production")
    import django

    django.setup()
    from django.db import connection
    from psycopg import sql

    from project.db_roles import POLICIES

    connection.ensure_connection()
    raw = connection.connection
    for role in POLICIES:
        path = directory / f"db_{role}"
        try:
            password = path.read_text().strip()
        except OSError:
            sys.stderr.write(f"role passwords: {path} is missing or unreadable (role {role})\n")
            return 1
        if not password:
            sys.stderr.write(f"role passwords: {path} is empty (role {role})\n")
            return 1
        verifier = raw.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
        with connection.cursor() as cursor:
            cursor.execute(statement.as_string(raw))
        sys.stdout.write(f"{role}: password set from {path.name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/run/secrets")))
