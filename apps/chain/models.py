"""Chains, their RPC endpoints, and the tokens, DEXes and pairs Custos trades on them."""

from django.contrib.postgres.fields import ArrayField
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
    # A dev chain's epochs (apps/chain/devchain.py: dev_chain_epoch): a restarted Hardhat node is a
    # new chain, and its trades before `epoch_started_at` are history of the replaced one, neither
    # watched nor counted by health. None: the first epoch, every trade is current. A real chain
    # (is_dev off) never starts another epoch.
    epoch = models.PositiveIntegerField(default=1)
    epoch_started_at = models.DateTimeField(null=True, blank=True)
    # A block above genesis (Hardhat's genesis hash can repeat across restarts) recorded when the
    # dev contracts were deployed: a node whose block there differs is another chain.
    anchor_block_number = models.PositiveBigIntegerField(null=True, blank=True)
    anchor_block_hash = models.CharField(max_length=66, blank=True, default="")

    class Meta:
        ordering = ["chain_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.chain_id})"

    def in_epoch(self, created_at_field: str = "created_at") -> models.Q:
        """Rows of this chain's current epoch, by the creation time `created_at_field` names (e.g.
        `trade__created_at` from a chain transaction): everything until a new epoch has started."""
        if self.epoch_started_at is None:
            return models.Q()
        return models.Q(**{f"{created_at_field}__gte": self.epoch_started_at})


class ChainEpoch(models.Model):
    """A dev chain replaced by a new one (a restarted Hardhat node), as `manage.py devchain up` found
    it: the epoch it started and what it archived of the one before. The replaced chain's block
    headers and reorg records are deleted (their summary is kept in `archive`); its trades stay, each
    with a `dev_chain_replaced` audit event, the open ones ended FAILED."""

    chain = models.ForeignKey(Chain, on_delete=models.CASCADE, related_name="epochs")
    number = models.PositiveIntegerField(help_text="the epoch this started")
    started_at = models.DateTimeField()
    reason = models.CharField(max_length=500)
    archived_headers = models.PositiveIntegerField(default=0)
    archived_trades = ArrayField(models.BigIntegerField(), default=list, blank=True)
    # The replaced chain's anchor and watched tip, and its reorg records.
    archive = models.JSONField(default=dict, blank=True)
    # Set once the earlier epochs' open trades are ended and the chain's nonce cursors restarted.
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["chain_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "number"], name="chainepoch_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.chain_id} epoch {self.number}"


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
