"""Sign a proposed scope with an authority key kept in a local V3 keystore file, for scripts and
development (an owner usually signs in a browser or hardware wallet: docs/authority.md). Prints the
typed data it signs, then attaches the signature (checked at once)."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.wallets.authority import scope_typed_data
from apps.wallets.keyfile import sign_typed_data_with_keyfile
from apps.wallets.models import PermissionScope
from apps.wallets.services import ScopeError, scope_signature_attach


class Command(BaseCommand):
    help = "Sign a PROPOSED scope's EIP-712 typed data with a keystore file's key and attach the signature."

    def add_arguments(self, parser):
        parser.add_argument("--scope", type=int, required=True, help="the scope's id")
        parser.add_argument("--key-file", required=True, help="V3 keystore JSON of an authority key")
        parser.add_argument(
            "--password-file", help="file holding the keystore's passphrase (otherwise asked for)"
        )

    def handle(self, *args, scope, key_file, password_file, **options):
        row = PermissionScope.objects.select_related("wallet").filter(pk=scope).first()
        if row is None:
            raise CommandError(f"no scope {scope}")
        document = scope_typed_data(row)
        self.stdout.write(json.dumps(document["message"], indent=2))
        try:
            signature = sign_typed_data_with_keyfile(
                document,
                key_file=Path(key_file),
                password_file=Path(password_file) if password_file else None,
            )
            signed = scope_signature_attach(scope=row, signature=signature)
        except (ScopeError, ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"scope {signed.pk} signed by {signed.signed_by}"))
