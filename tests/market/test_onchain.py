"""Spot and TWAP from the dev chain's Uniswap V2 dUSDC/dDAI pair, before and after a swap moves it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Dex, Pair, Token
from apps.market.onchain import OnchainPriceError, spot_price, twap_price

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


@pytest.fixture
def time_travel(deployed_devchain):
    """Moving the node's clock ahead would make later tests' wall-clock deadlines EXPIRED on this
    shared node: snapshot first, revert (state and clock) after."""
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield
    assert w3.provider.make_request("evm_revert", [snapshot])["result"] is True


def _close(a: Decimal, b: Decimal, rel: Decimal = Decimal("1e-12")) -> bool:
    return abs(a - b) <= abs(b) * rel


def _setup(url):
    w3 = Web3(Web3.HTTPProvider(url))
    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    pair = Pair.objects.get(token0__in=[usdc, dai], token1__in=[usdc, dai])
    contract = w3.eth.contract(address=pair.address, abi=devchain.load_artifact("UniswapV2Pair")["abi"])
    return w3, usdc, dai, pair, contract


def _reserve_price(contract, pair, usdc, dai, block="latest") -> Decimal:
    """dDAI per dUSDC from the raw reserves, in whole units: computed here independently."""
    r0, r1, _ = contract.functions.getReserves().call(block_identifier=block)
    r_usdc, r_dai = (r0, r1) if pair.token0_id == usdc.pk else (r1, r0)
    return (Decimal(r_dai) / Decimal(10**18)) / (Decimal(r_usdc) / Decimal(10**6))


def _advance(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def _swap_usdc(w3, usdc, dai, units: int) -> int:
    dex = Dex.objects.get()
    router = w3.eth.contract(address=dex.router, abi=devchain.load_artifact("UniswapV2Router02")["abi"])
    account = w3.eth.accounts[0]  # the deployer: holds dev tokens and approved the router
    deadline = w3.eth.get_block("latest")["timestamp"] + 600
    tx = router.functions.swapExactTokensForTokens(
        units * 10**6, 0, [usdc.address, dai.address], account, deadline
    ).transact({"from": account})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 1
    return int(w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def test_spot_and_twap_before_and_after_a_swap(deployed_devchain, time_travel):
    w3, usdc, dai, pair, contract = _setup(deployed_devchain)
    _advance(w3, 3600)  # a quiet hour: the window below sees one constant price

    before = spot_price(pair=pair, base=usdc)
    assert before.quote == dai
    assert before.price == _reserve_price(contract, pair, usdc, dai)
    inverse = spot_price(pair=pair, base=dai)
    assert _close(inverse.price * before.price, Decimal(1))
    twap_before = twap_price(pair=pair, base=usdc, window_seconds=600)
    assert twap_before.start_timestamp <= twap_before.timestamp - 600
    assert _close(twap_before.price, before.price)

    swapped_at = _swap_usdc(w3, usdc, dai, 100_000)
    after = spot_price(pair=pair, base=usdc)
    assert after.price == _reserve_price(contract, pair, usdc, dai)
    assert after.price < before.price * Decimal("0.85")  # 100k into ~1M moves it ~20%

    # Right after the swap the TWAP has barely moved; later it is the time-weighted mix.
    just_after = twap_price(pair=pair, base=usdc, window_seconds=600)
    assert abs(just_after.price - before.price) < abs(after.price - before.price) / 50
    _advance(w3, 300)
    later = twap_price(pair=pair, base=usdc, window_seconds=600)
    span = Decimal(later.timestamp - later.start_timestamp)
    expected = (
        before.price * (swapped_at - later.start_timestamp) + after.price * (later.timestamp - swapped_at)
    ) / span
    assert _close(later.price, expected, Decimal("1e-9"))
    assert after.price < later.price < before.price


def test_twap_longer_than_the_pair_is_a_clear_error(deployed_devchain):
    w3, usdc, _dai, pair, _contract = _setup(deployed_devchain)
    head = w3.eth.get_block("latest")
    with pytest.raises(OnchainPriceError):
        twap_price(pair=pair, base=usdc, window_seconds=int(head["timestamp"]) + 10)


def test_token_not_in_pair_is_a_clear_error(deployed_devchain):
    _w3, _usdc, _dai, pair, _contract = _setup(deployed_devchain)
    weth = Token.objects.get(symbol="WETH")
    with pytest.raises(OnchainPriceError, match="not in pair"):
        spot_price(pair=pair, base=weth)


def test_refresh_stores_spot_and_twap_ticks_of_active_scope_pairs(
    deployed_devchain, time_travel, market_sources, settings
):
    from apps.market.models import MarketSource, PriceTick
    from apps.market.services import market_refresh
    from apps.wallets.models import Wallet
    from tests.factories import UserFactory, grant_scope

    w3, usdc, dai, pair, contract = _setup(deployed_devchain)
    wallet = Wallet.objects.create(
        owner=UserFactory(), label="r", address=w3.eth.accounts[2], key_backend="keystore", status="active"
    )
    grant_scope(wallet)
    settings.MARKET_TWAP_WINDOW_SECONDS = 10**9  # longer than the chain: a clear error, no tick
    report = market_refresh()
    (spot,) = PriceTick.objects.filter(source__slug="onchain")
    assert (spot.token, spot.quote_token) == (usdc, dai)
    assert spot.price == _reserve_price(contract, pair, usdc, dai)
    assert spot.block_number == w3.eth.block_number
    assert report.ticks["onchain-twap"] == 0
    assert "window" in MarketSource.objects.get(slug="onchain-twap").last_error

    _advance(w3, 120)
    settings.MARKET_TWAP_WINDOW_SECONDS = 60
    market_refresh()
    (twap,) = PriceTick.objects.filter(source__slug="onchain-twap")
    assert _close(twap.price, spot.price)  # nothing traded: the mean is the spot
