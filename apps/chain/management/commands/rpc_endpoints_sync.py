"""`manage.py rpc_endpoints_sync`: write the RPC endpoints listed in RPC_ENDPOINTS (.env) to the
database. Idempotent; all or nothing; endpoints managed in the admin are left alone."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.chain.services import EndpointConfigError, rpc_endpoints_sync


class Command(BaseCommand):
    help = "Create or update the RPC endpoints listed in the RPC_ENDPOINTS setting."

    def handle(self, *args, **options):
        try:
            counts = rpc_endpoints_sync(settings.RPC_ENDPOINTS)
        except EndpointConfigError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"RPC_ENDPOINTS: {counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged"
        )
