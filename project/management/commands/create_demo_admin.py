"""`manage.py create_demo_admin`: a staff login for the local admin console (development only)."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create (or reset the password of) the demo admin user and print its login."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        if not settings.ALLOW_DEMO_ADMIN:
            raise CommandError("refusing to create a demo admin: set ALLOW_DEMO_ADMIN=true (dev only)")
        password_file = settings.BASE_DIR / "var" / "secrets" / "demo-admin.password"
        password_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            password_file.write_text(password)
            password_file.chmod(0o600)
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(
            f"demo admin {'created' if created else 'ready'}: user {username!r}, "
            f"password {password!r} (kept in {password_file})"
        )
