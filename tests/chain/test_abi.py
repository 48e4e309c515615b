"""apps.chain.abi against eth-abi and eth-utils: the same bytes, the same values, the same addresses
for generated inputs, and a refusal (never a wrong value) for what does not decode."""

from __future__ import annotations

import eth_abi
import pytest
from eth_utils import function_signature_to_4byte_selector, is_checksum_address, keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.chain import abi

address_bytes = st.binary(min_size=20, max_size=20)
addresses = address_bytes.map(lambda b: to_checksum_address(b))
uints = st.one_of(st.integers(0, 2**256 - 1), st.sampled_from([0, 1, 2**255, 2**256 - 1]))
SHAPES = {
    "uint256": uints,
    "address": addresses,
    "address[]": st.lists(addresses, max_size=6),
    "uint256[]": st.lists(uints, max_size=6),
    "string": st.text(max_size=80),
    "bytes": st.binary(max_size=80),
}
kinds = st.lists(st.sampled_from(sorted(SHAPES)), min_size=1, max_size=6)


def lower(value):
    """eth-abi returns checksummed addresses and lists as tuples; ours return lowercase."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    if isinstance(value, list | tuple):
        return tuple(lower(v) for v in value)
    return value


@settings(max_examples=300, deadline=None)
@given(data=st.data(), types=kinds)
def test_encode_and_decode_match_eth_abi(data, types):
    values = [data.draw(SHAPES[t]) for t in types]
    ours = abi.encode(types, values)
    assert ours == eth_abi.encode(types, values)
    assert abi.decode(types, ours) == lower(eth_abi.decode(types, ours))


@settings(max_examples=300, deadline=None)
@given(raw=address_bytes)
def test_checksum_addresses_match_eth_utils(raw):
    expected = to_checksum_address(raw)
    assert abi.to_checksum_address(raw) == expected
    assert abi.to_checksum_address("0x" + raw.hex()) == expected
    assert abi.to_checksum_address(raw.hex().upper()) == expected
    assert abi.is_checksum_address(expected) is True
    assert abi.is_checksum_address(expected.lower()) is is_checksum_address(expected.lower())


@given(data=st.binary(max_size=64))
def test_keccak_and_selector_match(data):
    assert abi.keccak256(data) == keccak(data)


def test_selectors():
    for signature in (
        "approve(address,uint256)",
        "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)",
    ):
        assert abi.selector(signature) == function_signature_to_4byte_selector(signature)


@pytest.mark.parametrize(
    "value",
    ["0x" + "a" * 39, "0x" + "g" * 40, "0x" + "a" * 41, " 0x" + "a" * 40, b"\x00" * 19, 12],
)
def test_bad_addresses_are_refused(value):
    with pytest.raises((ValueError, TypeError)):
        abi.to_checksum_address(value)
    assert abi.is_checksum_address(value) is False


def test_a_mixed_case_address_with_a_wrong_checksum_is_not_encoded():
    good = to_checksum_address("0x" + "ab" * 20)
    wrong = good[:2] + good[2:].swapcase()
    assert wrong.lower() != wrong
    assert wrong.upper()[2:] != wrong[2:]
    with pytest.raises(abi.AbiError, match="checksum"):
        abi.encode(["address"], [wrong])
    assert abi.encode(["address"], [good.lower()]) == abi.encode(["address"], [good])


@pytest.mark.parametrize(
    ("types", "values", "match"),
    [
        (["uint256"], [-1], "outside"),
        (["uint256"], [2**256], "outside"),
        (["uint256"], [True], "integer"),
        (["uint256"], ["1"], "integer"),
        (["address[]"], ["0x" + "00" * 20], "list"),
        (["string"], [b"x"], "str"),
        (["uint8"], [1], "unsupported"),
        (["uint256", "uint256"], [1], "2 types but 1 values"),
    ],
)
def test_values_that_do_not_fit_their_type_are_refused(types, values, match):
    with pytest.raises(abi.AbiError, match=match):
        abi.encode(types, values)


def test_malformed_data_is_refused_not_misread():
    good = abi.encode(["uint256", "address[]"], [5, ["0x" + "11" * 20, "0x" + "22" * 20]])
    with pytest.raises(abi.AbiError, match="outside"):
        abi.decode(["uint256", "address[]"], good[:40])  # the head is cut
    huge = good[:32] + (2**200).to_bytes(32, "big") + good[64:]
    with pytest.raises(abi.AbiError, match="outside"):
        abi.decode(["uint256", "address[]"], huge)  # the offset points past the end
    too_many = good[:64] + (10**6).to_bytes(32, "big") + good[96:]
    with pytest.raises(abi.AbiError, match="do not fit"):
        abi.decode(["uint256", "address[]"], too_many)
    dirty = good[:96] + b"\x01" + good[97:]
    with pytest.raises(abi.AbiError, match="padding"):
        abi.decode(["uint256", "address[]"], dirty)
    with pytest.raises(abi.AbiError, match="UTF-8"):
        abi.decode(["string"], abi.encode(["bytes"], [b"\xff\xfe"]))
