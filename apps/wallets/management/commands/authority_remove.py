"""Remove one of the owner's authority keys: every scope it signed stops counting at the signer's next
request. Run on the signer's host, as the `custos_authority` database role (DB_ROLE)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.wallets.services import ScopeError, authority_remove


class Command(BaseCommand):
    help = "Remove an owner's authority key; the scopes it signed stop counting at once."

    def add_arguments(self, parser):
        parser.add_argument("--owner", required=True, help="username")
        parser.add_argument("--address", required=True)

    def handle(self, *args, owner, address, **options):
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"no user {owner!r}")
        try:
            removed = authority_remove(owner=user, address=address)
        except ScopeError as exc:
            raise CommandError(str(exc)) from exc
        if not removed:
            raise CommandError(f"{address} is not a current authority key of {owner}")
        self.stdout.write(f"authority key {address} removed for {owner}")
