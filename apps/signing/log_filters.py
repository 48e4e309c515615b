"""A logging filter that scrubs anything shaped like key material before a record is written.

Scrubbed: runs of 64 or more hex digits (a secp256k1 private key, with or without 0x, alone or
inside a longer blob), the values of keystore/secret JSON fields named `ciphertext` or containing
`private`, and PEM blocks. Transaction and block hashes are 64 hex digits too and are scrubbed as
well: log the trade id and attempt instead. Addresses (40 hex digits) pass.
"""

from __future__ import annotations

import logging
import re as _re

REDACTED = "[redacted]"

_PEM = _re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?(?:-----END \1-----|\Z)", _re.S)
# "ciphertext": "...", "private_key": "...", 'privateKey': '...', private=... (JSON, dict repr, k=v)
_FIELD = _re.compile(
    r"""(?P<name>["']?(?:ciphertext|[a-z_]*private[a-z_]*)["']?\s*[:=]\s*)(?P<q>["']?)(?P<value>[^"',}\s]+)""",
    _re.I,
)
_HEX = _re.compile(r"(?<![0-9a-fA-F])(?:0[xX])?[0-9a-fA-F]{64,}(?![0-9a-fA-F])")

# LogRecord attributes that are not `extra` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def scrub(text: str) -> str:
    """`text` with every key-shaped part replaced by [redacted]."""
    if not text:
        return text
    text = _PEM.sub(REDACTED, text)
    text = _FIELD.sub(lambda m: f"{m['name']}{m['q']}{REDACTED}", text)
    return _HEX.sub(REDACTED, text)


def _scrub_value(value, depth: int = 0):
    if isinstance(value, str):
        return scrub(value)
    if depth >= 3:
        return value
    if isinstance(value, dict):
        return {k: _scrub_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v, depth + 1) for v in value)
    return value


class KeyMaterialFilter(logging.Filter):
    """Scrubs the message (after %-formatting), `extra` fields, the traceback and the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is still scrubbed, never dropped
            message = f"{record.msg} {record.args!r}"
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD:
                setattr(record, name, _scrub_value(value))
        if record.exc_info and record.exc_info[1] is not None:
            rendered = record.exc_text or logging.Formatter().formatException(record.exc_info)
            scrubbed = scrub(rendered)
            if scrubbed != rendered:
                # Formatters print exc_text when exc_info is gone: the clean text replaces the traceback.
                record.exc_info = None
                record.exc_text = scrubbed
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
