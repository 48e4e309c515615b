"""Native ETH at either end of a swap: swapExactETHForTokens and swapExactTokensForETH, built,
simulated, scope-checked, signed and settled on the dev chain, with balances moving as quoted."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from web3 import Web3

from apps.chain import devchain
from apps.chain.calldata import SWAP_EXACT_ETH_FOR_TOKENS, SWAP_EXACT_TOKENS_FOR_ETH, encode_call
from apps.chain.models import Chain, Dex, Token
from apps.chain.txcodec import payload_hash
from apps.signing import services as signer
from apps.signing.models import SigningRefusal
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from apps.trades.real_money_transaction_manager import signed as signed_step
from apps.wallets.services import wallet_create
from tests.factories import UserFactory, grant_scope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


@pytest.fixture
def wallet(deployed_devchain, settings, tmp_path):
    (tmp_path / "pass").write_text("native test passphrase")
    settings.KEYSTORE_DIR = str(tmp_path / "keys")
    settings.KEYSTORE_PASSPHRASE_FILE = str(tmp_path / "pass")
    settings.KEYSTORE_SCRYPT_N = 2**10
    signer.backend.cache_clear()
    Chain.objects.update(confirmations_required=2)
    wallet = signer.wallet_key_create(
        wallet_id=wallet_create(owner=UserFactory(), label="native", key_backend="keystore").pk
    )
    devchain.fund_address(url=deployed_devchain, address=wallet.address, eth=Decimal(20), token_units=50_000)
    yield wallet
    signer.backend.cache_clear()


def _submit(wallet, native: str, path: list[str], amount_in: int, key: str) -> Trade:
    return rmtm.trade_submit(
        owner=wallet.owner,
        wallet=wallet,
        dex=Dex.objects.get(),
        path=path,
        amount_in=amount_in,
        slippage_bps=100,
        idempotency_key=key,
        deadline=timezone.now() + timedelta(minutes=20),
        native=native,
    ).trade


def _settle(trade: Trade, url: str) -> Trade:
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    outcome = signer.trade_sign(trade_id=trade.pk, attempt=1)
    assert outcome.signed, outcome.refusal
    signed_step.persist_signer_answers([(trade.pk, 1)])
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    w3 = Web3(Web3.HTTPProvider(url))
    for _ in range(2):
        w3.provider.make_request("evm_mine", [])
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    return trade


def _gas_paid(w3: Web3, trade: Trade) -> int:
    total = 0
    for tx_hash in trade.transactions.values_list("tx_hash", flat=True):
        receipt = w3.eth.get_transaction_receipt(tx_hash)
        total += receipt["gasUsed"] * receipt["effectiveGasPrice"]
    return total


def test_eth_in_swaps_native_value_with_no_approval(wallet, deployed_devchain):
    weth, dai = Token.objects.get(symbol="WETH"), Token.objects.get(symbol="dDAI")
    grant_scope(wallet, token_in=weth, token_out=dai, max_amount_in=10**18)
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    dai_c = w3.eth.contract(address=dai.address, abi=devchain.load_artifact("DevToken")["abi"])
    eth_before, dai_before = (
        w3.eth.get_balance(wallet.address),
        dai_c.functions.balanceOf(wallet.address).call(),
    )

    trade = _settle(_submit(wallet, "in", [weth.address, dai.address], 10**17, "eth-in"), deployed_devchain)
    (swap,) = trade.transactions.all()  # native value needs no approve
    assert swap.kind == "swap"
    assert int(swap.value) == 10**17
    assert swap.data[:10] == SWAP_EXACT_ETH_FOR_TOKENS.selector
    # The limit covers the pair's accumulator writes when mined a block after the estimate.
    estimated = trade.events.get(kind="start_validation").data["swap_gas"]
    assert int(swap.gas) == estimated * 120 // 100 + settings.SWAP_GAS_HEADROOM
    assert dai_c.functions.balanceOf(wallet.address).call() - dai_before == int(trade.quoted_amount_out)
    assert eth_before - w3.eth.get_balance(wallet.address) == 10**17 + _gas_paid(w3, trade)


def test_eth_out_approves_the_token_and_receives_native_eth(wallet, deployed_devchain):
    usdc, weth = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="WETH")
    grant_scope(wallet, token_in=usdc, token_out=weth)
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    eth_before = w3.eth.get_balance(wallet.address)

    trade = _settle(
        _submit(wallet, "out", [usdc.address, weth.address], 300 * 10**6, "eth-out"), deployed_devchain
    )
    assert list(trade.transactions.order_by("sequence").values_list("kind", "value")) == [
        ("approve", 0),
        ("swap", 0),
    ]
    swap = trade.transactions.get(kind="swap")
    assert swap.data[:10] == SWAP_EXACT_TOKENS_FOR_ETH.selector
    received = w3.eth.get_balance(wallet.address) - eth_before + _gas_paid(w3, trade)
    assert received == int(trade.quoted_amount_out)


def test_a_native_trade_needs_the_wrapped_token_at_its_native_end(wallet):
    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    with pytest.raises(rmtm.TradeInputError) as error:
        _submit(wallet, "in", [usdc.address, dai.address], 10**6, "bad-native")
    assert error.value.field == "path"
    with pytest.raises(rmtm.TradeInputError) as error:
        _submit(wallet, "sideways", [usdc.address, dai.address], 10**6, "bad-native-2")
    assert error.value.field == "native"
    assert not Trade.objects.exists()


def test_the_signer_refuses_a_token_swap_forged_onto_a_native_trade(wallet):
    weth, dai = Token.objects.get(symbol="WETH"), Token.objects.get(symbol="dDAI")
    grant_scope(wallet, token_in=weth, token_out=dai, max_amount_in=10**18)
    trade = _submit(wallet, "in", [weth.address, dai.address], 10**17, "forged-native")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    swap = Trade.objects.get(pk=trade.pk).transactions.get(kind="swap")
    # Spend the wallet's WETH tokens instead of the ETH the owner asked to swap; hash kept consistent.
    forged = encode_call(
        SWAP_EXACT_TOKENS_FOR_ETH,
        10**17,
        int(Trade.objects.get(pk=trade.pk).amount_out_min),
        [weth.address, dai.address],
        wallet.address,
        int(trade.deadline.timestamp()),
    )
    swap.data, swap.value = forged, 0
    swap.unsigned_hash = payload_hash(swap.as_unsigned_dict())
    swap.save()
    assert not signer.trade_sign(trade_id=trade.pk, attempt=1).signed
    assert SigningRefusal.objects.get(trade=trade).code == "function_mismatch"


def test_the_cli_takes_eth_as_either_side(wallet):
    from django.core.management import call_command

    weth, dai = Token.objects.get(symbol="WETH"), Token.objects.get(symbol="dDAI")
    call_command("trade_submit", "--wallet", "native", "--sell", "ETH", "--buy", "dDAI", "--amount", "0.25")
    call_command("trade_submit", "--wallet", "native", "--sell", "dDAI", "--buy", "ETH", "--amount", "3")
    rows = list(Trade.objects.order_by("pk").values_list("native", "path", "amount_in"))
    assert rows == [
        ("in", [weth.address, dai.address], Decimal(25 * 10**16)),
        ("out", [dai.address, weth.address], Decimal(3 * 10**18)),
    ]
