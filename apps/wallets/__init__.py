"""Wallets, key references (never keys), permission scopes, nonce cursors and the spend ledger."""
