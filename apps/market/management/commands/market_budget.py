"""`manage.py market_budget`: expected API calls per hour and per month for each market source with
the current settings and active scopes, against the source's free allowance."""

from __future__ import annotations

import math

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.market import selectors
from apps.market.models import MarketSource
from apps.market.ratelimit import Rate

HOURS_PER_MONTH = 24 * 30
SOURCES = {
    # slug: (refresh interval setting, client rate limit setting, free calls per month setting)
    "coincap": ("COINCAP_REFRESH_SECONDS", "COINCAP_RATE_LIMIT", "COINCAP_FREE_CALLS_PER_MONTH"),
    "coinlore": ("COINLORE_REFRESH_SECONDS", "COINLORE_RATE_LIMIT", "COINLORE_FREE_CALLS_PER_MONTH"),
}


def source_budget(slug: str, assets: int) -> dict:
    refresh_setting, rate_setting, month_setting = SOURCES[slug]
    every = max(getattr(settings, refresh_setting), settings.MARKET_REFRESH_TICK_SECONDS, 1)
    requests = math.ceil(assets / max(settings.MARKET_IDS_PER_REQUEST, 1))
    per_hour = requests * 3600 / every
    per_month = per_hour * HOURS_PER_MONTH
    allowance = getattr(settings, month_setting)
    rate = Rate.parse(getattr(settings, rate_setting))
    verdict = "OK"
    if allowance and per_month > allowance:
        verdict = "OVER the monthly allowance"
    elif per_hour > rate.per_hour:
        verdict = "OVER the rate limit"
    return {
        "slug": slug,
        "assets": assets,
        "every": every,
        "requests": requests,
        "per_hour": per_hour,
        "per_month": per_month,
        "allowance": allowance,
        "rate": getattr(settings, rate_setting),
        "verdict": verdict,
    }


class Command(BaseCommand):
    help = "Expected market API calls per hour and per month per source vs its free allowance."

    def add_arguments(self, parser):
        parser.add_argument(
            "--assets",
            type=int,
            default=None,
            help="assume this many mapped assets (default: the current ones)",
        )

    def handle(self, *args, assets, **options):
        now = timezone.now()
        tokens = list(selectors.active_tokens(now=now))
        self.stdout.write(
            f"market budget at {now:%Y-%m-%d %H:%M} UTC; a month = {HOURS_PER_MONTH} hours; "
            f"{settings.MARKET_IDS_PER_REQUEST} ids per request"
        )
        for slug in SOURCES:
            source = MarketSource.objects.filter(slug=slug).first()
            count = assets
            if count is None:
                count = len(selectors.mappings_for(source=source, tokens=tokens)) if source else 0
            row = source_budget(slug, count)
            allowance = f"{row['allowance']:,}/month" if row["allowance"] else "no monthly cap documented"
            enabled = "" if source is None or source.enabled else " (disabled)"
            used = f"; used this month {source.calls_month:,}" if source is not None else ""
            self.stdout.write(
                f"{slug}{enabled}: {row['assets']} asset(s) -> {row['requests']} request(s) every "
                f"{row['every']}s = {row['per_hour']:,.1f}/hour, {row['per_month']:,.0f}/month; "
                f"free allowance {allowance}, client limit {row['rate']}{used}: {row['verdict']}"
            )
