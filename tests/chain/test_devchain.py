"""`manage.py devchain up` on a real Hardhat node: deploy, swap through the router, re-run changes nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Chain, Dex, Pair, RpcEndpoint, Token
from tests.conftest import free_port

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def _rows():
    return {
        model.__name__: sorted(model.objects.values_list("id", flat=True))
        for model in (Chain, RpcEndpoint, Token, Dex, Pair)
    } | {"tokens": sorted(Token.objects.values_list("symbol", "address", "decimals"))}


@pytest.fixture
def devchain_port(settings):
    port = free_port()
    yield port
    call_command("devchain", "down", "--port", str(port), stdout=io.StringIO())


def test_devchain_up_deploys_then_a_real_swap_moves_balances_as_quoted(devchain_port):
    out = io.StringIO()
    call_command("devchain", "up", "--port", str(devchain_port), "--block-ms", "0", stdout=out)
    assert "starting hardhat node" in out.getvalue()
    assert "deployed" in out.getvalue()

    w3 = Web3(Web3.HTTPProvider(devchain.devchain_url(devchain_port)))
    tokens = {t.symbol: t for t in Token.objects.all()}
    assert {s: t.decimals for s, t in tokens.items()} == {"WETH": 18, "dUSDC": 6, "dDAI": 18}
    erc20 = devchain.load_artifact("DevToken")["abi"]
    usdc = w3.eth.contract(address=tokens["dUSDC"].address, abi=erc20)
    dai = w3.eth.contract(address=tokens["dDAI"].address, abi=erc20)
    assert usdc.functions.decimals().call() == 6
    assert dai.functions.decimals().call() == 18
    assert Pair.objects.count() == 3

    dex = Dex.objects.get()
    router = w3.eth.contract(address=dex.router, abi=devchain.load_artifact("UniswapV2Router02")["abi"])
    trader = w3.eth.accounts[1]
    amount_in = 250 * 10**6  # 250 dUSDC
    path = [usdc.address, dai.address]
    quoted = router.functions.getAmountsOut(amount_in, path).call()[-1]
    usdc_before = usdc.functions.balanceOf(trader).call()
    dai_before = dai.functions.balanceOf(trader).call()
    assert usdc_before == devchain.FUND_AMOUNT_UNITS * 10**6

    usdc.functions.approve(dex.router, amount_in).transact({"from": trader})
    deadline = w3.eth.get_block("latest")["timestamp"] + 600
    tx = router.functions.swapExactTokensForTokens(amount_in, quoted, path, trader, deadline).transact(
        {"from": trader}
    )
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1

    assert usdc.functions.balanceOf(trader).call() == usdc_before - amount_in
    assert dai.functions.balanceOf(trader).call() == dai_before + quoted
    # A 1:1 pool of 1M each: 250 in gives a little under 250 out (0.3% fee, price impact).
    assert 249 * 10**18 < quoted < 250 * 10**18


def test_devchain_up_twice_changes_nothing(devchain_port):
    call_command("devchain", "up", "--port", str(devchain_port), "--block-ms", "0", stdout=io.StringIO())
    w3 = Web3(Web3.HTTPProvider(devchain.devchain_url(devchain_port)))
    deployer = w3.eth.accounts[0]
    nonce_before = w3.eth.get_transaction_count(deployer)
    block_before = w3.eth.block_number
    rows_before = _rows()

    out = io.StringIO()
    call_command("devchain", "up", "--port", str(devchain_port), stdout=out)

    assert "already answering" in out.getvalue()
    assert "nothing to do" in out.getvalue()
    assert w3.eth.get_transaction_count(deployer) == nonce_before
    assert w3.eth.block_number == block_before
    assert _rows() == rows_before


def test_devchain_redeploys_when_the_node_lost_its_state(hardhat_url):
    """A restarted node has no contracts: the recorded rows are re-pointed, not duplicated."""
    devchain.deploy_devchain(url=hardhat_url, log=lambda _m: None)
    Dex.objects.update(router="0x" + "11" * 20)  # the recorded router has no code any more
    report = devchain.deploy_devchain(url=hardhat_url, log=lambda _m: None)
    assert report.deployed
    assert Dex.objects.count() == 1
    assert Token.objects.count() == 3
    assert Pair.objects.count() == 3
    assert devchain.recorded_deployment_is_live(Web3(Web3.HTTPProvider(hardhat_url)), report.chain.chain_id)
