"""Wallet test fixtures: a chain registry written straight to the database (no Hardhat node: the
nonce allocator and the scope check read and write PostgreSQL only) and an active wallet as the
signer leaves one, with an address and a key reference."""

from __future__ import annotations

import pytest

from apps.chain.models import Chain, Dex, Token
from apps.wallets.models import Wallet
from tests.factories import UserFactory

# The addresses the dev deployment gives its contracts (EIP-55), so the rows look like the real ones.
USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DAI = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ROUTER = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
FACTORY = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"
WETH = "0xDc64a140Aa3E981100a9becA4E685f962f0cF6C9"
# Hardhat's first two accounts: checksummed addresses nobody here holds a key for.
WALLET_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
OTHER_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture
def registry(db):
    chain = Chain.objects.create(chain_id=31337, name="devchain", is_dev=True, confirmations_required=3)
    usdc = Token.objects.create(
        chain=chain, address=USDC, symbol="dUSDC", name="Dev USDC", decimals=6, is_stablecoin=True
    )
    dai = Token.objects.create(chain=chain, address=DAI, symbol="dDAI", name="Dev DAI", decimals=18)
    weth = Token.objects.create(
        chain=chain, address=WETH, symbol="dWETH", name="Dev WETH", decimals=18, is_wrapped_native=True
    )
    dex = Dex.objects.create(chain=chain, name="devswap", router=ROUTER, factory=FACTORY, wrapped_native=weth)
    return {"chain": chain, "usdc": usdc, "dai": dai, "weth": weth, "dex": dex}


def active_wallet(*, address: str = WALLET_ADDRESS, label: str = "main", key_id: str = "k-main") -> Wallet:
    return Wallet.objects.create(
        owner=UserFactory(),
        label=label,
        address=address,
        key_backend=Wallet.Backend.KEYSTORE,
        key_id=key_id,
        status=Wallet.Status.ACTIVE,
    )


@pytest.fixture
def wallet(registry) -> Wallet:
    return active_wallet()


@pytest.fixture
def other_wallet(registry) -> Wallet:
    return active_wallet(address=OTHER_ADDRESS, label="other", key_id="k-other")
