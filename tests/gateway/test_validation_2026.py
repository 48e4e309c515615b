"""The field rules of validation_2026 at their edges."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from apps.gateway.validation_2026 import (
    UINT256_MAX,
    ChecksumAddressField,
    DecimalStringField,
    StrictSerializer,
    idempotency_key_validate,
    to_base_units,
)
from apps.wallets.selectors import units_text
from tests.gateway.conftest import DAI


def test_base_units_stop_just_below_two_to_the_256():
    assert to_base_units(Decimal(UINT256_MAX), 0) == UINT256_MAX
    with pytest.raises(ValidationError, match="2\\*\\*256"):
        to_base_units(Decimal(UINT256_MAX + 1), 0)
    assert to_base_units(Decimal("1.000001"), 6) == 1_000_001
    assert to_base_units(Decimal("1.50000000"), 1) == 15  # trailing zeros are not precision
    assert to_base_units(Decimal("100"), 0) == 100
    with pytest.raises(ValidationError, match="at most 6 decimal places"):
        to_base_units(Decimal("1.0000001"), 6)


@pytest.mark.parametrize("bad", [1.5, 15, "1e3", "-1", "01", "1.", ".5", " 1", "0", "0.0", "1_000"])
def test_decimal_strings_are_plain_positive_and_never_numbers(bad):
    with pytest.raises(ValidationError):
        DecimalStringField().run_validation(bad)


def test_a_decimal_string_keeps_its_exact_value():
    assert DecimalStringField().run_validation("0.000000000000000001") == Decimal("1E-18")


def test_addresses_must_carry_their_eip55_checksum():
    assert ChecksumAddressField().run_validation(DAI) == DAI
    for bad in (DAI.lower(), DAI.upper().replace("0X", "0x"), DAI[:-1], DAI + "0", "0x" + "g" * 40):
        with pytest.raises(ValidationError):
            ChecksumAddressField().run_validation(bad)


def test_idempotency_key_format():
    assert idempotency_key_validate("phone:2026-11-24T20.00_ab-1") == "phone:2026-11-24T20.00_ab-1"
    for bad in (None, "", "short", "x" * 129, "with space", "slash/key"):
        with pytest.raises(ValidationError):
            idempotency_key_validate(bad)


def test_a_strict_serializer_refuses_to_load_with_an_unbounded_string():
    class Unbounded(StrictSerializer):
        note = serializers.CharField()

    with pytest.raises(ImproperlyConfigured, match="note"):
        Unbounded(data={}).is_valid()


def test_unknown_fields_are_named():
    class Input(StrictSerializer):
        label = serializers.CharField(max_length=8)

    serializer = Input(data={"label": "ok", "owner": 1, "is_staff": True})
    assert not serializer.is_valid()
    assert serializer.errors == {"is_staff": ["unknown field"], "owner": ["unknown field"]}


def test_amounts_beyond_28_digits_convert_exactly_both_ways():
    text = "123456789012345678901234567890.123456789012345678"
    base = to_base_units(DecimalStringField().run_validation(text), 18)
    assert base == 123456789012345678901234567890123456789012345678
    assert units_text(base, 18) == text
    assert units_text(10**18, 18) == "1"
    assert units_text(1, 18) == "0.000000000000000001"
    assert units_text(0, 6) == "0"
