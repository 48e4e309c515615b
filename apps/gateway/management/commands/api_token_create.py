"""Issue an API token for one of the owner's devices and print it once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.gateway.services import TokenNameTaken, api_token_create


class Command(BaseCommand):
    help = "Issue a named API token (one per device) for a user; the raw token is printed once."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="username")
        parser.add_argument("--name", required=True, help="device name, e.g. phone")

    def handle(self, *args, user, name, **options):
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user {user!r}")
        try:
            issued = api_token_create(user=owner, name=name)
        except TokenNameTaken as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(issued.raw)
