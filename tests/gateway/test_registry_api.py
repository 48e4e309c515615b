"""Chains, tokens and DEXes (read-only registry)."""

from __future__ import annotations

import pytest

from apps.chain.models import Chain, Token
from tests.gateway.conftest import DAI, USDC

pytestmark = pytest.mark.django_db


def test_chains_tokens_and_dexes_are_listed(alice, registry):
    other = Chain.objects.create(chain_id=10, name="other")
    Token.objects.create(chain=other, address=DAI, symbol="oDAI", name="Other DAI", decimals=18)
    chains = alice.client.get("/api/v1/chains").json()
    assert [c["chain_id"] for c in chains] == [10, 31337]
    tokens = alice.client.get("/api/v1/tokens?chain_id=31337").json()
    assert [(t["symbol"], t["address"], t["decimals"]) for t in tokens] == [
        ("dDAI", DAI, 18),
        ("dUSDC", USDC, 6),
    ]
    assert len(alice.client.get("/api/v1/tokens").json()) == 3
    dexes = alice.client.get("/api/v1/dexes?chain_id=31337").json()
    assert [(d["id"], d["router"]) for d in dexes] == [(registry["dex"].pk, registry["dex"].router)]
    assert alice.client.get("/api/v1/dexes?chain_id=10").json() == []


def test_the_registry_is_read_only_and_needs_a_token(alice, registry):
    assert alice.client.post("/api/v1/chains", {}, format="json").status_code == 405
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/tokens").status_code == 401


def test_a_bad_chain_filter_is_a_400_naming_it(alice, registry):
    response = alice.client.get("/api/v1/tokens?chain_id=abc")
    assert response.status_code == 400
    assert "chain_id" in response.json()["error"]["fields"]
