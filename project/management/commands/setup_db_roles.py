"""`manage.py setup_db_roles`: create the per-process PostgreSQL roles and grant least privilege."""

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from project.db_roles import POLICIES, setup_roles


class Command(BaseCommand):
    help = (
        "Create the per-process roles (custos_api, _engine, _watcher, _beat, _signer, _authority, _market,"
        " _ml) with least privilege, and their row rules. Run as the database owner, after every migration."
    )

    def handle(self, *args, **options):
        database = connection.settings_dict["NAME"]
        with transaction.atomic():
            roles = setup_roles(database=database)
        for role in roles:
            policy = POLICIES[role]
            writes = sorted(
                policy.write
                | policy.insert
                | policy.update
                | policy.insert_update
                | set(policy.update_columns)
            )
            ruled = f" (row rules on {', '.join(sorted(policy.row_rules))})" if policy.row_rules else ""
            self.stdout.write(f"{role}: writes {', '.join(writes) or 'nothing'}{ruled}")
