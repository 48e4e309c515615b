"""Register one of the owner's authority keys: an address whose private key stays on the owner's
device. Run on the signer's host, connected as the `custos_authority` database role (DB_ROLE), the
only role that may write authority keys; the web and the engine can only read them."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.wallets.services import ScopeError, authority_add


class Command(BaseCommand):
    help = "Register an authority key (an Ethereum address) for an owner; scopes it signs then count."

    def add_arguments(self, parser):
        parser.add_argument("--owner", required=True, help="username")
        parser.add_argument("--address", required=True, help="0x address of the key on the owner's device")
        parser.add_argument("--label", default="", help="e.g. ledger, phone")

    def handle(self, *args, owner, address, label, **options):
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"no user {owner!r}")
        try:
            key = authority_add(owner=user, address=address, label=label)
        except ScopeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"authority key {key.address} registered for {owner}")
