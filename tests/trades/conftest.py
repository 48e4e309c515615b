"""Fixtures of the critical path's tests: a funded keystore wallet on the dev chain, with and without
a trading scope."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.chain import devchain
from apps.chain.models import Chain
from apps.signing import services as signer
from apps.wallets.services import wallet_create
from tests.factories import UserFactory, grant_scope


@pytest.fixture
def funded_wallet(deployed_devchain, keystore):
    Chain.objects.update(confirmations_required=3)
    wallet = wallet_create(owner=UserFactory(), label="engine", key_backend="keystore")
    wallet = signer.wallet_key_create(wallet_id=wallet.pk)
    devchain.fund_address(url=deployed_devchain, address=wallet.address, eth=Decimal(5), token_units=50_000)
    return wallet


@pytest.fixture
def scoped_wallet(funded_wallet):
    grant_scope(funded_wallet)
    return funded_wallet
