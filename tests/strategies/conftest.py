"""Fixtures of the strategies' tests: a funded keystore wallet with a signed dUSDC -> dDAI scope on the
dev chain (tests/trades/conftest.py), and helpers that create strategies, tick, settle their trades
in-process and move the dev pool's price with another account's swaps."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Dex, Pair, Token
from apps.market.models import MarketSource, PriceTick
from apps.strategies.engine import strategies_tick
from apps.strategies.kinds import units_of
from apps.strategies.models import Strategy, StrategyRun
from apps.strategies.services import strategy_create
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from tests.trades.conftest import funded_wallet, scoped_wallet  # noqa: F401 - fixtures
from tests.trades.steps import _mine, _run_to_confirming

ROUTER_ABI = "UniswapV2Router02"
TRADER = 3  # a funded dev account that is not the strategy's wallet: it moves the pool


@pytest.fixture(autouse=True)
def _strategy_settings(settings):
    settings.STRATEGY_PRICE_CHECK_SECONDS = 0
    settings.STRATEGY_MIN_TWAP_WINDOW_SECONDS = 10


def tokens():
    return Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")


def create(
    wallet,
    kind: str,
    params: dict,
    *,
    total: str = "100",
    key: str | None = None,
    slippage_bps: int = 100,
    path=None,
    **caps,
) -> Strategy:
    """A strategy selling dUSDC for dDAI (amounts in dUSDC units), through the owner's service."""
    usdc, dai = tokens()
    if "max_per_run" in caps and isinstance(caps["max_per_run"], str):
        caps["max_per_run"] = units_of(caps["max_per_run"], "max_per_run", usdc.decimals)
    return strategy_create(
        owner=wallet.owner,
        idempotency_key=key or f"s-{kind}-{time.monotonic_ns()}",
        wallet=wallet,
        dex=Dex.objects.get(),
        path=path or [usdc.address, dai.address],
        kind=kind,
        params=params,
        total_amount_in=units_of(total, "total_amount_in", usdc.decimals),
        max_slippage_bps=slippage_bps,
        **caps,
    ).strategy


def tick(now=None) -> dict:
    return strategies_tick(now=now)


def runs(strategy: Strategy) -> list[StrategyRun]:
    return list(StrategyRun.objects.filter(strategy=strategy).select_related("trade").order_by("sequence"))


def reload(strategy: Strategy) -> Strategy:
    return Strategy.objects.get(pk=strategy.pk)


def settle(url: str, trade: Trade) -> Trade:
    """Drive a PENDING trade through the engine in-process to SETTLED (or wherever it ends)."""
    trade = _run_to_confirming(trade)
    if trade.state == "CONFIRMING":
        _mine(url, 3)
        rmtm.trade_confirm(trade_ids=[trade.pk])
    return Trade.objects.get(pk=trade.pk)


def later(strategy: Strategy, seconds: float):
    """A moment `seconds` after the strategy's schedule anchor (the tick's `now`: time passing)."""
    return reload(strategy).anchor_at + timedelta(seconds=seconds)


# --- the dev pool, moved by another account ------------------------------------------------------------


class Pool:
    """The dUSDC/dDAI pool on the session's dev chain, traded by dev account TRADER."""

    def __init__(self, url: str):
        self.w3 = Web3(Web3.HTTPProvider(url))
        self.usdc, self.dai = tokens()
        dex = Dex.objects.get()
        self.router = self.w3.eth.contract(address=dex.router, abi=devchain.load_artifact(ROUTER_ABI)["abi"])
        self.pair = Pair.objects.get(token0__in=[self.usdc, self.dai], token1__in=[self.usdc, self.dai])
        self.account = self.w3.eth.accounts[TRADER]
        erc20 = devchain.load_artifact("DevToken")["abi"]
        for token in (self.usdc, self.dai):
            contract = self.w3.eth.contract(address=token.address, abi=erc20)
            self._wait(
                contract.functions.approve(dex.router, devchain.MAX_UINT).transact({"from": self.account})
            )

    def _wait(self, tx_hash) -> dict:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1
        return receipt

    def advance(self, seconds: int) -> None:
        """Let `seconds` pass on the chain (one empty block at the end)."""
        self.w3.provider.make_request("evm_increaseTime", [int(seconds)])
        self.w3.provider.make_request("evm_mine", [])

    def sell_usdc(self, whole: int) -> int:
        """One swap of `whole` dUSDC into the pool (one block): dUSDC's price in dDAI falls. Returns
        the dDAI base units received."""
        return self._swap(whole * 10**6, [self.usdc.address, self.dai.address])

    def sell_dai(self, units: int) -> int:
        """One swap of `units` dDAI base units into the pool: dUSDC's price in dDAI rises."""
        return self._swap(units, [self.dai.address, self.usdc.address])

    def _swap(self, amount: int, path: list[str]) -> int:
        erc20 = devchain.load_artifact("DevToken")["abi"]
        bought = self.w3.eth.contract(address=path[-1], abi=erc20)
        before = bought.functions.balanceOf(self.account).call()
        deadline = self.w3.eth.get_block("latest")["timestamp"] + 3600
        self._wait(
            self.router.functions.swapExactTokensForTokens(amount, 0, path, self.account, deadline).transact(
                {"from": self.account}
            )
        )
        return bought.functions.balanceOf(self.account).call() - before

    def reserves(self) -> tuple[int, int]:
        """(dUSDC, dDAI) base units in the pool now."""
        abi = devchain.load_artifact("UniswapV2Pair")["abi"]
        r0, r1, _ = self.w3.eth.contract(address=self.pair.address, abi=abi).functions.getReserves().call()
        return (r0, r1) if self.pair.token0_id == self.usdc.pk else (r1, r0)

    def spot(self) -> Decimal:
        """dDAI per dUSDC now, from the reserves."""
        r_usdc, r_dai = self.reserves()
        return (Decimal(r_dai) / 10**18) / (Decimal(r_usdc) / 10**6)

    def push_down(self, fraction: str) -> None:
        """One swap of dUSDC that brings its spot price to about `fraction` of what it is."""
        r_usdc, _ = self.reserves()
        units = Decimal(r_usdc) * (1 / Decimal(fraction).sqrt() - 1) / Decimal("0.997")
        self._swap(int(units), [self.usdc.address, self.dai.address])


def price_tick(token, slug: str, price: str, *, age_seconds: int = 5) -> PriceTick:
    """An independent market price of `token` as the market worker would have stored it."""
    now = timezone.now()
    return PriceTick.objects.create(
        source=MarketSource.objects.get(slug=slug),
        token=token,
        price=Decimal(price),
        observed_at=now - timedelta(seconds=age_seconds),
        fetched_at=now,
    )
