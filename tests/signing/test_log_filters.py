"""The log filter scrubs key-shaped text from messages, arguments, extra fields, tracebacks and stacks,
and lets ordinary operational text through."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from eth_account import Account

from apps.signing.log_filters import REDACTED, KeyMaterialFilter, scrub

KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
PEM = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHQCAQEEIEwIg6aRApN9YjFHG127YgT+USlhcIJ5KuRo0Bo/NiMYoAcGBSuBBAAK\n"
    "-----END EC PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    "text",
    [
        f"key={KEY}",
        f"key=0x{KEY}",
        f"KEY 0X{KEY.upper()} end",
        f"blob 0x{'00' * 12}{KEY}{'ff' * 20}",  # a key inside a longer hex run
        f'{{"crypto": {{"ciphertext": "{KEY[:40]}", "cipher": "aes-128-ctr"}}}}',
        f'{{"private_key": "{KEY[:40]}"}}',
        f"{{'privateKey': '{KEY[:40]}'}}",
        f"private={KEY[:40]}",
        f"loaded\n{PEM}\nthen more",
        PEM.replace("EC PRIVATE KEY", "PRIVATE KEY").rsplit("\n", 1)[0],  # cut off before its END line
    ],
)
def test_key_shaped_text_is_scrubbed(text):
    cleaned = scrub(text)
    assert KEY not in cleaned.lower()
    assert KEY[:40] not in cleaned
    assert "MHQCAQEEIEwIg6aRApN9" not in cleaned
    assert REDACTED in cleaned


def test_the_keystore_json_of_a_real_key_is_scrubbed():
    keyfile = Account.encrypt(KEY, "passphrase", kdf="scrypt", iterations=2**4)
    text = json.dumps(keyfile)
    cleaned = scrub(text)
    assert keyfile["crypto"]["ciphertext"] not in cleaned
    assert keyfile["address"] in cleaned  # the address is public


@pytest.mark.parametrize(
    "text",
    [
        f"trade 42 attempt 1 signed for {Account.from_key(KEY).address} nonce 7",
        "wallet 3 scope: router 0x" + "ab" * 20 + ", amount 1000000000000000000000",
        "private RPC endpoint rotated",
        "63 hex digits stay: " + KEY[:63],
    ],
)
def test_ordinary_text_passes_through(text):
    assert scrub(text) == text


def _record(msg, args=(), **extra) -> logging.LogRecord:
    record = logging.LogRecord("custos.test", logging.ERROR, __file__, 1, msg, args, None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_the_filter_scrubs_arguments_extra_fields_tracebacks_and_stacks():
    record = _record("loaded %s for wallet %d", (KEY, 3), detail={"private_key": "0x" + KEY}, trade=42)
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        record.exc_info = sys.exc_info()
    record.stack_info = f"Stack (most recent call last):\n  sign(key='{KEY}')"
    assert KeyMaterialFilter().filter(record) is True
    assert KEY not in record.getMessage()
    assert "for wallet 3" in record.getMessage()
    assert KEY not in json.dumps(record.detail)
    assert record.trade == 42
    assert record.exc_info is None
    assert KEY not in record.exc_text
    assert "ValueError" in record.exc_text
    assert KEY not in record.stack_info


def test_the_filter_leaves_clean_records_untouched():
    record = _record("trade %d signed", (42,))
    try:
        raise RuntimeError("rpc timeout")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    KeyMaterialFilter().filter(record)
    assert (record.msg, record.args) == ("trade %d signed", (42,))
    assert record.exc_info is not None


def test_a_handler_with_the_filter_writes_no_key():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(KeyMaterialFilter())
    logger = logging.getLogger("custos.test.handler")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("secret %s", KEY)
        try:
            raise KeyError(KEY)
        except KeyError:
            logger.exception("lookup failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert KEY not in output
    assert output.count(REDACTED) >= 2


def test_the_filter_is_installed_on_the_console_handler():
    from django.conf import settings

    assert "scrub_keys" in settings.LOGGING["handlers"]["console"]["filters"]
    assert settings.LOGGING["filters"]["scrub_keys"]["()"] == "apps.signing.log_filters.KeyMaterialFilter"
