"""Issue an API token for one of the owner's devices and print it once. Run on the host, so its
default level is `manage` (what every token could do before levels existed); name a lower one for a
device that needs less: `--level read` or `--level trade`."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.gateway.models import LEVEL_ORDER, TokenLevel
from apps.gateway.services import TokenNameTaken, api_token_create


class Command(BaseCommand):
    help = "Issue a named API token (one per device) for a user; the raw token is printed once."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="username")
        parser.add_argument("--name", required=True, help="device name, e.g. phone")
        parser.add_argument(
            "--level",
            choices=[str(level) for level in LEVEL_ORDER],
            default=TokenLevel.MANAGE.value,
            help="read < trade (submit and cancel trades) < manage (wallets, scopes, tokens); default manage",
        )

    def handle(self, *args, user, name, level=TokenLevel.MANAGE.value, **options):
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user {user!r}")
        try:
            issued = api_token_create(user=owner, name=name, level=level)
        except TokenNameTaken as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(issued.raw)
