"""Chains, their RPC endpoints, and the tokens, DEXes and pairs Custos trades on them."""

from django.db import models


class Chain(models.Model):
    chain_id = models.PositiveBigIntegerField(unique=True)
    name = models.CharField(max_length=64)
    native_symbol = models.CharField(max_length=16, default="ETH")
    confirmations_required = models.PositiveIntegerField(default=12)
    block_time_ms = models.PositiveIntegerField(default=12_000)
    is_dev = models.BooleanField(default=False)
    # Public endpoints leak a pending transaction to the mempool; only send there when allowed.
    broadcast_to_public = models.BooleanField(default=False)
    # Quorum for the settlement gate: this many endpoints must report the same inclusion block hash
    # (capped at the number of active endpoints, so a one-endpoint dev chain still settles).
    settlement_quorum = models.PositiveSmallIntegerField(default=2)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["chain_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.chain_id})"


class RpcEndpoint(models.Model):
    class Kind(models.TextChoices):
        PRIVATE = "private"
        PUBLIC = "public"

    class Health(models.TextChoices):
        ALIVE = "alive"
        LAGGING = "lagging"
        RATE_LIMITED = "rate_limited"
        UNREACHABLE = "unreachable"
        WRONG_CHAIN = "wrong_chain"

    chain = models.ForeignKey(Chain, on_delete=models.CASCADE, related_name="rpc_endpoints")
    name = models.CharField(max_length=64)
    url = models.URLField(max_length=500)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PRIVATE)
    priority = models.PositiveSmallIntegerField(default=100, help_text="lower is tried first")
    weight = models.PositiveSmallIntegerField(default=1)
    rate_limit_per_second = models.PositiveIntegerField(default=25, help_text="0: no limit (a local node)")
    active = models.BooleanField(default=True)
    # Last probe (chain.probe_endpoints): what the endpoint said and how fast.
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_head = models.PositiveBigIntegerField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    # Health as the RPC pool last saw it (apps/chain/pool.py writes it on every change).
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.ALIVE)
    health_until = models.DateTimeField(null=True, blank=True, help_text="not retried before this")
    consecutive_failures = models.PositiveIntegerField(default=0)
    latency_ewma_ms = models.PositiveIntegerField(null=True, blank=True, help_text="moving average")

    class Meta:
        ordering = ["chain_id", "priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "url"], name="rpc_endpoint_unique_url"),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.kind}]"


class Token(models.Model):
    chain = models.ForeignKey(Chain, on_delete=models.PROTECT, related_name="tokens")
    address = models.CharField(max_length=42, help_text="EIP-55 checksummed")
    symbol = models.CharField(max_length=16)
    name = models.CharField(max_length=64)
    decimals = models.PositiveSmallIntegerField()
    # The chain's wrapped native coin (WETH): swaps from/to ETH route through it.
    is_wrapped_native = models.BooleanField(default=False)
    is_stablecoin = models.BooleanField(default=False)

    class Meta:
        ordering = ["chain_id", "symbol"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "address"], name="token_unique_address"),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} on {self.chain_id}"


class Dex(models.Model):
    class Kind(models.TextChoices):
        UNISWAP_V2 = "uniswap_v2"

    chain = models.ForeignKey(Chain, on_delete=models.PROTECT, related_name="dexes")
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.UNISWAP_V2)
    router = models.CharField(max_length=42)
    factory = models.CharField(max_length=42)
    wrapped_native = models.ForeignKey(Token, on_delete=models.PROTECT, null=True, blank=True)

    class Meta:
        ordering = ["chain_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "router"], name="dex_unique_router"),
        ]

    def __str__(self) -> str:
        return f"{self.name} on {self.chain_id}"


class Pair(models.Model):
    dex = models.ForeignKey(Dex, on_delete=models.PROTECT, related_name="pairs")
    address = models.CharField(max_length=42)
    # Uniswap orders a pair's tokens by address: token0 < token1.
    token0 = models.ForeignKey(Token, on_delete=models.PROTECT, related_name="+")
    token1 = models.ForeignKey(Token, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["dex_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["dex", "address"], name="pair_unique_address"),
        ]

    def __str__(self) -> str:
        return f"{self.token0.symbol}/{self.token1.symbol}"
