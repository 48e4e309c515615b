"""validation_2026: the gateway's one validation layer for writes.

Every API view derives from `ValidatedWriteMixin` (through apps.gateway.api.base.GatewayView), whose
`initial()` runs `validate_write` before any handler of a POST, PUT, PATCH or DELETE: body size, JSON
media type, the Idempotency-Key format where the view takes one, and the view's input serializer,
which must be a `StrictSerializer` (unknown fields rejected, every string bounded). The field types
below check what money inputs need: EIP-55 addresses, registered chain ids, decimal-string amounts
within the token's decimals and below 2**256, slippage bounds and deadline bounds.
tests/gateway/test_validation_routes.py enumerates every route to prove no write skips this.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, UnsupportedMediaType, ValidationError

from apps.chain.abi import is_checksum_address
from apps.chain.models import Chain

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UINT256_MAX = 2**256 - 1
# Plain decimal notation only: no sign, exponent, spaces or leading zeros. JSON numbers are refused
# because clients' float parsing silently rounds large amounts.
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,77})(\.[0-9]{1,78})?$"
_AMOUNT_RE = re.compile(AMOUNT_PATTERN)
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"
_IDEMPOTENCY_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
IDEMPOTENCY_HEADER = "Idempotency-Key"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
_ADDRESS_RE = re.compile(ADDRESS_PATTERN)
SLIPPAGE_MIN_BPS, SLIPPAGE_MAX_BPS = 1, 5000


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "body_too_large"


# --- fields ---------------------------------------------------------------------------------------


class ChecksumAddressField(serializers.CharField):
    """An EIP-55 checksummed address; an all-lowercase one is refused because it carries no checksum."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_length", 42)
        kwargs.setdefault("max_length", 42)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not _ADDRESS_RE.match(value):
            raise ValidationError("not an address: 0x followed by 40 hexadecimal digits")
        if not is_checksum_address(value):
            raise ValidationError("not an EIP-55 checksummed address (check for a typo)")
        return value


class ChainIdField(serializers.IntegerField):
    """A chain id from the registry; the validated value is the Chain row."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(**kwargs)

    def run_validation(self, data=serializers.empty):
        chain_id = super().run_validation(data)  # an integer within bounds
        if chain_id is None:
            return None
        chain = Chain.objects.filter(chain_id=chain_id).first()
        if chain is None:
            raise ValidationError(f"unknown chain id {chain_id}")
        return chain

    def to_representation(self, value):
        return value.chain_id if isinstance(value, Chain) else value


class DecimalStringField(serializers.CharField):
    """A positive amount written as a decimal string ("1.5"); the validated value is a Decimal.
    `decimals` (when known from the field alone) bounds the fractional digits."""

    def __init__(
        self,
        *,
        decimals: int | None = None,
        allow_zero: bool = False,
        max_value: Decimal | None = None,
        **kwargs,
    ):
        self.decimals = decimals
        self.allow_zero = allow_zero
        self.max_amount = max_value
        kwargs.setdefault("max_length", 160)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def run_validation(self, data=serializers.empty):
        if data is not serializers.empty and data is not None and not isinstance(data, str):
            raise ValidationError('must be a decimal string such as "1.5", not a JSON number')
        value = super().run_validation(data)  # a bounded string
        if value is None:
            return None
        if not _AMOUNT_RE.match(value):
            raise ValidationError('must be a plain decimal string such as "1.5"')
        amount = Decimal(value)
        if amount <= 0 and not (self.allow_zero and amount == 0):
            raise ValidationError("must be positive")
        if self.max_amount is not None and amount > self.max_amount:
            raise ValidationError(f"must be at most {self.max_amount}")
        if self.decimals is not None:
            to_base_units(amount, self.decimals)
        return amount


def to_base_units(amount: Decimal, decimals: int) -> int:
    """`amount` token units as integer base units, exactly (integer arithmetic: Decimal operations
    round to the context's 28 digits); refuses more fractional digits than the token has and
    anything at or above 2**256."""
    _, digit_tuple, exponent = amount.as_tuple()
    if not isinstance(exponent, int):
        raise ValidationError("not a finite number")
    digits = list(digit_tuple)
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:  # "1.50" is "1.5"
        digits.pop()
        exponent += 1
    fraction_digits = max(0, -exponent)
    if fraction_digits > decimals:
        raise ValidationError(f"at most {decimals} decimal places for this token")
    base = int("".join(map(str, digits)) or "0") * 10 ** (exponent + decimals)
    if base > UINT256_MAX:
        raise ValidationError("too large: the amount in base units must be below 2**256")
    return base


def base_units_of(attrs: dict, field: str, decimals: int) -> int:
    """`attrs[field]` in base units, for a serializer's validate() once the token (so its decimals)
    is known; a refusal names the field."""
    try:
        return to_base_units(attrs[field], decimals)
    except ValidationError as exc:
        raise ValidationError({field: exc.detail}) from exc


def field_error(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


class SlippageBpsField(serializers.IntegerField):
    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", SLIPPAGE_MIN_BPS)
        kwargs.setdefault("max_value", SLIPPAGE_MAX_BPS)
        super().__init__(**kwargs)


class DeadlineField(serializers.DateTimeField):
    """A moment at least API_MIN_DEADLINE_SECONDS and at most MAX_TRADE_DEADLINE_SECONDS from now."""

    def to_internal_value(self, value):
        deadline = super().to_internal_value(value)
        now = timezone.now()
        earliest = now + timedelta(seconds=settings.API_MIN_DEADLINE_SECONDS)
        latest = now + timedelta(seconds=settings.MAX_TRADE_DEADLINE_SECONDS)
        if deadline < earliest:
            raise ValidationError(f"must be at least {settings.API_MIN_DEADLINE_SECONDS} seconds from now")
        if deadline > latest:
            raise ValidationError(f"must be at most {settings.MAX_TRADE_DEADLINE_SECONDS} seconds from now")
        return deadline


# --- serializers ------------------------------------------------------------------------------------


def _unbounded_strings(fields) -> list[str]:
    out = []
    for name, field in fields.items():
        if isinstance(field, serializers.CharField) and field.max_length is None:
            out.append(name)
        child = getattr(field, "child", None)
        if isinstance(child, serializers.CharField) and child.max_length is None:
            out.append(name)
    return out


class StrictSerializer(serializers.Serializer):
    """The base of every write endpoint's input: unknown fields are errors, every string is bounded."""

    def get_fields(self):
        fields = super().get_fields()
        unbounded = _unbounded_strings(fields)
        if unbounded:
            raise ImproperlyConfigured(f"{type(self).__name__}: strings without max_length: {unbounded}")
        return fields

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        known = {name for name, field in self.fields.items() if not field.read_only}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError({str(name)[:64]: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class EmptyInput(StrictSerializer):
    """The input of an action that takes no body (cancel, revoke): any field is an error."""


# --- the one mechanism --------------------------------------------------------------------------------


def idempotency_key_validate(value: str | None) -> str:
    if not value:
        raise ValidationError({IDEMPOTENCY_HEADER: ["this header is required"]})
    if not _IDEMPOTENCY_KEY_RE.match(value):
        raise ValidationError(
            {IDEMPOTENCY_HEADER: ["8 to 128 characters of letters, digits, '.', '_', ':' or '-'"]}
        )
    return value


def _body_size_check(request) -> None:
    limit = settings.API_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit or len(request.body) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")


def validate_write(view, request) -> dict:
    """Run every check for a write request and return the validated input."""
    input_class = getattr(view, "input_serializer_class", None)
    if input_class is None or not issubclass(input_class, StrictSerializer):
        raise ImproperlyConfigured(f"{type(view).__name__} must name a StrictSerializer input")
    _body_size_check(request)
    if request.body and request.content_type.split(";")[0].strip() != "application/json":
        raise UnsupportedMediaType(request.content_type)
    if getattr(view, "idempotency_header", False):
        view.idempotency_key = idempotency_key_validate(request.headers.get(IDEMPOTENCY_HEADER))
    data = request.data if request.body else {}
    serializer = input_class(data=data, context={"request": request, "view": view})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ValidatedWriteMixin:
    """Validates every write request before its handler runs; the handler reads `self.validated`."""

    input_serializer_class: type[StrictSerializer] | None = None
    idempotency_header = False

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # A method the view does not handle gets DRF's 405; every handled write is validated.
        if request.method in WRITE_METHODS and hasattr(self, request.method.lower()):
            self.validated = validate_write(self, request)
