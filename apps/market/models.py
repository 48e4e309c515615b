"""Market data: the sources, which external id each source uses for a token, price ticks and candles.

A token (apps.chain.Token, per chain, with its `is_stablecoin` flag) is the asset; a source maps it to
its own id (CoinCap "usd-coin", CoinLore "33285"). API sources quote in USD; the on-chain sources
(pool spot, pool TWAP) quote a token in another token (`quote_token`).
"""

from django.db import models

PRICE = {"max_digits": 48, "decimal_places": 18}


class MarketSource(models.Model):
    class Kind(models.TextChoices):
        API = "api"
        ONCHAIN = "onchain"

    slug = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    # Only independent sources count towards the reference price: the pool a trade swaps in cannot
    # vouch for its own quote.
    independent = models.BooleanField(default=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    calls_total = models.PositiveBigIntegerField(default=0, help_text="HTTP requests sent, ever")
    calls_month = models.PositiveIntegerField(default=0, help_text="HTTP requests sent this UTC month")
    month_started = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class AssetMapping(models.Model):
    """Which id a source knows a token by. Admin-editable; one mapping per (source, token)."""

    source = models.ForeignKey(MarketSource, on_delete=models.CASCADE, related_name="mappings")
    token = models.ForeignKey("chain.Token", on_delete=models.CASCADE, related_name="market_mappings")
    external_id = models.CharField(max_length=64, help_text='e.g. CoinCap "ethereum", CoinLore "80"')
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["source_id", "token_id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "token"], name="market_mapping_unique_token"),
        ]

    def __str__(self) -> str:
        return f"{self.token} = {self.source.slug}:{self.external_id}"


class PriceTick(models.Model):
    """One observed price of `token`: in USD (quote_token empty) or in units of `quote_token`."""

    source = models.ForeignKey(MarketSource, on_delete=models.CASCADE, related_name="ticks")
    token = models.ForeignKey("chain.Token", on_delete=models.CASCADE, related_name="+")
    quote_token = models.ForeignKey(
        "chain.Token", on_delete=models.CASCADE, related_name="+", null=True, blank=True
    )
    price = models.DecimalField(**PRICE)
    # When the source says the price was true (its own timestamp, or the block's); freshness uses it.
    observed_at = models.DateTimeField()
    fetched_at = models.DateTimeField()
    block_number = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-observed_at", "-id"]
        indexes = [
            models.Index(fields=["token", "source", "-observed_at"], name="market_tick_latest"),
            models.Index(fields=["observed_at"], name="market_tick_observed"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(price__gt=0), name="market_tick_price_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.token} {self.price} @ {self.observed_at:%Y-%m-%d %H:%M:%S} ({self.source_id})"


class Candle(models.Model):
    class Interval(models.TextChoices):
        MINUTE = "1m"
        HOUR = "1h"
        DAY = "1d"

    source = models.ForeignKey(MarketSource, on_delete=models.CASCADE, related_name="candles")
    token = models.ForeignKey("chain.Token", on_delete=models.CASCADE, related_name="+")
    quote_token = models.ForeignKey(
        "chain.Token", on_delete=models.CASCADE, related_name="+", null=True, blank=True
    )
    interval = models.CharField(max_length=4, choices=Interval.choices)
    start = models.DateTimeField()
    open = models.DecimalField(**PRICE)
    high = models.DecimalField(**PRICE)
    low = models.DecimalField(**PRICE)
    close = models.DecimalField(**PRICE)
    ticks = models.PositiveIntegerField()

    class Meta:
        ordering = ["-start"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "token", "quote_token", "interval", "start"],
                name="market_candle_unique",
                nulls_distinct=False,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.token} {self.interval} {self.start:%Y-%m-%d %H:%M}"
