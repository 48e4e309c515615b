"""factory_boy factories and builders shared by the app tests."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from apps.chain.calldata import APPROVE, SWAP_EXACT_TOKENS_FOR_TOKENS, encode_call
from apps.chain.models import Dex, Token
from apps.chain.txcodec import payload_hash
from apps.trades.models import ChainTransaction, Trade
from apps.wallets.authority import scope_typed_data
from apps.wallets.models import PermissionScope, Wallet
from apps.wallets.services import authority_add, nonce_allocate, scope_propose, scope_signature_attach

GWEI = 10**9
# The owner's authority key in tests: held only by the test, as a phone would hold it. Test-only.
TEST_AUTHORITY_KEY = "0x" + "a1" * 32


# Nobody's authority key: a key an attacker or a mistaken device might sign with.
STRANGER_AUTHORITY_KEY = "0x" + "b2" * 32


def eth_sign_typed_data(document: dict, key: str = TEST_AUTHORITY_KEY) -> str:
    """An EIP-712 signature of `document`, made with eth-account (an implementation independent of
    apps.wallets.authority), as a wallet's eth_signTypedData_v4 would make it."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    signed = Account.sign_message(encode_typed_data(full_message=document), key)
    return "0x" + signed.signature.hex().removeprefix("0x")


def owner_signature(scope: PermissionScope, key: str = TEST_AUTHORITY_KEY) -> str:
    """The owner's signature over the scope's typed data."""
    return eth_sign_typed_data(scope_typed_data(scope), key)


def authority_address(key: str = TEST_AUTHORITY_KEY) -> str:
    from eth_account import Account

    return Account.from_key(key).address


def sign_scope(scope: PermissionScope, key: str = TEST_AUTHORITY_KEY) -> PermissionScope:
    """Register `key` as an authority key of the wallet's owner (if it is not yet) and sign the scope."""
    authority_add(owner=scope.wallet.owner, address=authority_address(key))
    return scope_signature_attach(scope=scope, signature=owner_signature(scope, key))


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"owner{n}")


def grant_scope(wallet: Wallet, **overrides) -> PermissionScope:
    """A dUSDC -> dDAI scope on the dev DEX with generous but finite limits. The dev tokens have no
    market listing, so it accepts on-chain-only pricing unless the test says otherwise."""
    onchain_only = overrides.pop("allow_onchain_only_pricing", True)
    dex = Dex.objects.get()
    usdc = Token.objects.get(symbol="dUSDC")
    dai = Token.objects.get(symbol="dDAI")
    now = timezone.now()
    params = {
        "wallet": wallet,
        "dex": dex,
        "token_in": usdc,
        "token_out": dai,
        "max_amount_in": 1_000 * 10**6,
        "max_slippage_bps": 100,
        "max_fee_per_gas": 100 * GWEI,
        "max_priority_fee_per_gas": 5 * GWEI,
        "valid_from": now - timedelta(minutes=1),
        "valid_until": now + timedelta(days=1),
    }
    signed = overrides.pop("signed", True)
    params.update(overrides)
    scope = scope_propose(allow_onchain_only_pricing=onchain_only, **params)
    return sign_scope(scope) if signed else scope


def walk_to(trade: Trade, state: str) -> Trade:
    """Take a PENDING trade through each transition up to `state` (no skipped states)."""
    steps = {
        "SIMULATING": "start_simulation",
        "VALIDATING": "start_validation",
        "SIGNING": "start_signing",
        "CONFIRMING": "start_confirming",
    }
    order = ["SIMULATING", "VALIDATING", "SIGNING", "CONFIRMING"]
    for target in order[: order.index(state) + 1]:
        getattr(trade, steps[target])()
        trade.save()
    return trade


def signing_trade(
    wallet: Wallet,
    *,
    amount_in: int = 100 * 10**6,
    quoted_out: int = 99 * 10**18,
    state: str = "SIGNING",
    with_approve: bool = True,
    tx_overrides: dict | None = None,
    call_overrides: dict | None = None,
    path: list[str] | None = None,
) -> Trade:
    """A trade in SIGNING with frozen approve + swap transactions, nonces allocated as the engine would."""
    dex = Dex.objects.get()
    usdc = Token.objects.get(symbol="dUSDC")
    dai = Token.objects.get(symbol="dDAI")
    path = path or [usdc.address, dai.address]
    deadline = (timezone.now() + timedelta(minutes=20)).replace(microsecond=0)
    trade = Trade.objects.create(
        owner=wallet.owner,
        wallet=wallet,
        chain=dex.chain,
        dex=dex,
        path=path,
        amount_in=amount_in,
        slippage_bps=50,
        deadline=deadline,
        idempotency_key=f"k-{timezone.now().timestamp()}-{id(path)}",
        quoted_amount_out=quoted_out,
        amount_out_min=quoted_out * 9950 // 10_000,
    )
    walk_to(trade, state)
    call = {
        "amount_in": amount_in,
        "amount_out_min": quoted_out * 9950 // 10_000,
        "path": path,
        "recipient": wallet.address,
        "deadline": int(deadline.timestamp()),
    }
    call.update(call_overrides or {})
    with transaction.atomic():
        nonces = nonce_allocate(wallet=wallet, chain=dex.chain, count=2 if with_approve else 1)
    calls = []
    if with_approve:
        calls.append(("approve", path[0], encode_call(APPROVE, dex.router, amount_in)))
    calls.append(
        (
            "swap",
            dex.router,
            encode_call(
                SWAP_EXACT_TOKENS_FOR_TOKENS,
                call["amount_in"],
                call["amount_out_min"],
                call["path"],
                call["recipient"],
                call["deadline"],
            ),
        )
    )
    for sequence, ((kind, to, data), nonce) in enumerate(zip(calls, nonces, strict=True)):
        fields = {
            "chain_id": dex.chain.chain_id,
            "sender": wallet.address,
            "nonce": nonce,
            "to": to,
            "value": 0,
            "data": data,
            "gas": 300_000,
            "max_fee_per_gas": 20 * GWEI,
            "max_priority_fee_per_gas": 1 * GWEI,
        }
        if kind == "swap":
            fields.update(tx_overrides or {})
        tx = ChainTransaction(trade=trade, sequence=sequence, kind=kind, attempt=1, **fields)
        tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
        tx.save()
    return trade


def model_version_row(**overrides):
    """An active ModelVersion row with no weights behind it: enough for the advisory gate, which
    reads advice rows only."""
    from apps.ml.models import ModelVersion

    now = timezone.now()
    fields = {
        "name": "mlp-h1",
        "horizon_bars": 1,
        "bar_seconds": 3600,
        "features": ["ret_1"],
        "feature_spec": {},
        "feature_stats": {},
        "hidden_units": 8,
        "trained_on": ["test"],
        "train_start": now,
        "train_end": now,
        "samples": {},
        "metrics": {},
        "seed": 1,
        "device": "cpu",
        "weights_file": "x.pt",
        "weights_sha256": "0" * 64,
        "active": True,
    }
    return ModelVersion.objects.create(**{**fields, **overrides})


@contextmanager
def tampering(table: str):
    """Edit rows that no role may change (audit events, signed scopes), as only someone who can
    alter the table itself could: its triggers are off inside this block's transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        # Deferred foreign-key checks of the test's own transaction must run before an ALTER TABLE.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
        yield
        cursor.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
