"""`manage.py audit_verify`: check every trade's hash-chained audit trail; exit 1 at the first broken link."""

import sys

from django.core.management.base import BaseCommand

from apps.trades.audit import audit_verify


class Command(BaseCommand):
    help = "Verify the audit chain of every trade and name the first broken link."

    def handle(self, *args, **options):
        checked, broken = audit_verify()
        if broken is None:
            self.stdout.write(self.style.SUCCESS(f"audit chain intact: {checked} events verified"))
            return
        self.stdout.write(
            f"audit chain BROKEN at trade {broken.trade_id}, event {broken.event_id}: {broken.problem} "
            f"({checked} events verified before it)"
        )
        sys.exit(1)
