"""Chains, tokens, DEXes and pairs, the JSON-RPC access to them, and the dev-chain tooling."""
