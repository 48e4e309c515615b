"""apps.chain.txcodec against eth-account: the same signing hash and the same signed bytes for
generated EIP-1559 transactions, and a clear refusal for what Custos does not sign."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.chain.txcodec import TxCodecError, encode_signed, payload_hash, signing_hash

uint = st.one_of(
    st.integers(0, 2**64), st.integers(0, 2**256 - 1), st.sampled_from([0, 1, 127, 128, 255, 256])
)
transactions = st.fixed_dictionaries(
    {
        "type": st.just(2),
        "chainId": st.integers(1, 2**64),
        "nonce": st.integers(0, 2**64 - 1),
        "to": st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b)),
        "value": uint,
        "data": st.one_of(
            st.binary(max_size=300).map(lambda b: "0x" + b.hex()),
            st.sampled_from(["0x", "0x00", "0x7f", "0x80"]),
        ),
        "gas": st.integers(0, 2**64 - 1),
        "maxFeePerGas": uint,
        "maxPriorityFeePerGas": uint,
        "accessList": st.one_of(
            st.just([]),
            st.lists(
                st.fixed_dictionaries(
                    {
                        "address": st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b)),
                        "storageKeys": st.lists(
                            st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()), max_size=3
                        ),
                    }
                ),
                max_size=3,
            ),
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(transactions)
def test_the_signing_hash_is_eth_accounts(tx):
    assert signing_hash(tx) == bytes(TypedTransaction.from_dict(tx).hash())
    assert payload_hash(tx) == "0x" + signing_hash(tx).hex()


@settings(max_examples=200, deadline=None)
@given(transactions, st.integers(0, 1), st.integers(1, 2**256 - 1), st.integers(1, 2**255))
def test_the_signed_encoding_is_eth_accounts(tx, y_parity, r, s):
    ours = encode_signed(tx, y_parity=y_parity, r=r, s=s)
    theirs = bytes(TypedTransaction.from_dict({**tx, "v": y_parity, "r": r, "s": s}).encode())
    assert ours == theirs


def test_a_real_signature_recovers_to_the_signer():
    account = Account.create()
    tx = {
        "type": 2,
        "chainId": 31337,
        "nonce": 7,
        "to": account.address,
        "value": 0,
        "data": "0x",
        "gas": 21_000,
        "maxFeePerGas": 2 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    expected = account.sign_transaction(tx)
    signed = Account._keys.PrivateKey(account.key).sign_msg_hash(signing_hash(tx))
    raw = encode_signed(tx, y_parity=signed.v, r=signed.r, s=signed.s)
    assert raw == bytes(expected.raw_transaction)
    assert keccak(raw) == bytes(expected.hash)
    assert Account.recover_transaction(raw) == account.address


BASE_TO = to_checksum_address("0x" + "ab" * 20)
BASE = {
    "type": 2,
    "chainId": 1,
    "nonce": 0,
    "to": BASE_TO,
    "value": 0,
    "data": "0x",
    "gas": 21_000,
    "maxFeePerGas": 1,
    "maxPriorityFeePerGas": 1,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": "0x" + "ab" * 20}, "not a checksummed address"),
        ({"to": None}, "20-byte address"),
        ({"to": "0x1234"}, "20-byte address"),
        ({"nonce": -1}, "`nonce` must be an integer"),
        ({"value": 2**256}, "`value` must be an integer"),
        ({"gas": "21000"}, "`gas` must be an integer"),
        ({"gas": True}, "`gas` must be an integer"),
        ({"data": "0xzz"}, "`data` is not hex"),
        ({"type": 0}, "only type 2"),
        ({"gasPrice": 1}, "cannot carry: gasPrice"),
        ({"accessList": [{"address": "0x" + "ab" * 20, "storageKeys": []}]}, "not a checksummed"),
        ({"accessList": [{"address": BASE_TO, "storageKeys": ["0x01"]}]}, "not 32 bytes"),
        ({"accessList": [{"address": BASE_TO}]}, "address, storageKeys"),
    ],
)
def test_what_custos_does_not_sign_is_refused_by_name(change, message):
    with pytest.raises(TxCodecError, match=message):
        signing_hash({**BASE, **change})


def test_a_missing_field_is_named():
    tx = dict(BASE)
    del tx["maxFeePerGas"]
    with pytest.raises(TxCodecError, match="missing maxFeePerGas"):
        signing_hash(tx)
