"""Keys in the owner's self-hosted HashiCorp Vault (KV v2), through hvac.

Vault's Transit engine has no secp256k1, so a key is a KV v2 secret at
{kv_mount}/data/{kv_prefix}/{key_id}, generated here and written with cas=0 (an existing id is never
overwritten). The signer logs in with AppRole (role id + secret id) or a token, renews its token
when its TTL runs low, and logs in again when the token has expired or been revoked.

A key is held by this code only in a bytearray that is zeroed after use. The HTTP and JSON layers
underneath (requests, json) hand over immutable strings this code cannot wipe; that is why the
signer signs in a child process recycled after each task (docs/architecture.md, "Key custody").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import hvac
import requests
from coincurve import PrivateKey
from hvac import exceptions as hvac_errors

from apps.signing.backends.base import (
    SECP256K1_N,
    KeyBackend,
    KeyBackendError,
    KeyBackendUnavailable,
    KeyRef,
    Signature,
    address_from_public_key,
    check_digest,
    check_key_id,
    generate_private_key,
    log_key_held,
    new_key_id,
    normalise_signature,
    rs_from_bytes,
    wipe,
)
from apps.signing.log_filters import scrub

logger = logging.getLogger(__name__)


class VaultSealedError(KeyBackendUnavailable):
    """Vault answered 503 (sealed) or 501 (not initialised)."""


class VaultPermissionError(KeyBackendError):
    """Vault answered 403, or refused the AppRole credentials."""


class VaultKeyNotFoundError(KeyBackendError):
    """No live secret at the key's path (404)."""


class VaultUnavailableError(KeyBackendUnavailable):
    """Vault could not be reached: connection refused, reset or timed out."""


def _vault_said(exc: hvac_errors.VaultError) -> str:
    errors = exc.errors if isinstance(exc.errors, list) else [exc.errors] if exc.errors else []
    text = "; ".join(str(e) for e in errors)[:200]
    return f" (Vault said: {scrub(text)})" if text else ""


class VaultBackend(KeyBackend):
    name = "vault"

    def __init__(
        self,
        *,
        addr: str,
        auth_method: str = "approle",
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        kv_mount: str = "secret",
        kv_prefix: str = "custos/keys",
        timeout: float = 5.0,
        renew_below_seconds: int = 300,
    ):
        if auth_method not in {"approle", "token"}:
            raise KeyBackendError(f"VAULT_AUTH_METHOD must be 'approle' or 'token', not {auth_method!r}")
        if auth_method == "token" and not token:
            raise KeyBackendError("Vault token auth needs a token: put one in VAULT_TOKEN_FILE")
        if auth_method == "approle" and not (role_id and secret_id):
            raise KeyBackendError(
                "Vault AppRole auth needs VAULT_ROLE_ID and a secret id in VAULT_SECRET_ID_FILE"
            )
        self.addr = addr.rstrip("/")
        self.auth_method = auth_method
        self._static_token = token
        self._role_id = role_id
        self._secret_id = secret_id
        self.kv_mount = kv_mount.strip("/")
        self.kv_prefix = kv_prefix.strip("/")
        self.renew_below_seconds = renew_below_seconds
        self.client = hvac.Client(url=self.addr, timeout=timeout)
        self.client.token = None  # never an ambient VAULT_TOKEN or ~/.vault-token
        self._expires_at = 0.0  # monotonic deadline of the current token; inf when it has no TTL
        self._issued_ttl = 0  # the TTL the current token was issued with
        self._lock = threading.RLock()
        self.logins = 0
        self.renewals = 0

    # --- errors ---------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *, key_id: str | None = None, **kwargs) -> Any:
        """Run one hvac call and turn every failure into an error that says what to do."""
        try:
            return fn(**kwargs)
        except (hvac_errors.VaultDown, hvac_errors.VaultNotInitialized) as exc:
            raise VaultSealedError(
                f"Vault at {self.addr} is sealed or not initialised ({what}){_vault_said(exc)}: "
                "unseal it (vault operator unseal) and retry"
            ) from exc
        except hvac_errors.Forbidden as exc:
            raise VaultPermissionError(
                f"Vault refused {what} (403 permission denied): the token's policy must grant "
                f"create and read on {self.kv_mount}/data/{self.kv_prefix}/*, or the token is invalid"
            ) from exc
        except hvac_errors.InvalidPath as exc:
            if key_id is not None:
                raise VaultKeyNotFoundError(
                    f"Vault has no key {key_id} at {self.kv_mount}/data/{self.kv_prefix}/{key_id} (404): "
                    "check VAULT_KV_MOUNT and VAULT_KV_PREFIX, or the key was deleted"
                ) from exc
            raise KeyBackendError(
                f"Vault has no endpoint for {what} (404): is KV v2 mounted at {self.kv_mount}/ "
                "and AppRole enabled?"
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise VaultUnavailableError(
                f"Vault at {self.addr} is unreachable ({what}: {type(exc).__name__}): check that it is "
                "running, VAULT_ADDR, and the network between the signer and Vault"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise VaultUnavailableError(
                f"the request to Vault at {self.addr} failed ({what}: {type(exc).__name__}): check VAULT_ADDR"
            ) from exc
        except hvac_errors.VaultError as exc:
            raise KeyBackendError(
                f"Vault error during {what} ({type(exc).__name__}){_vault_said(exc)}"
            ) from exc

    # --- authentication --------------------------------------------------------------------------

    def _login(self) -> None:
        """A fresh token: AppRole login, or the configured token checked with lookup-self."""
        self.client.token = None  # a stale token must not ride along on the login request
        if self.auth_method == "token":
            self.client.token = self._static_token
            try:
                data = self._call("token lookup", self.client.auth.token.lookup_self)["data"]
            except VaultPermissionError as exc:
                self.client.token = None
                raise VaultPermissionError(
                    "the Vault token from VAULT_TOKEN_FILE is invalid, expired or revoked (403): "
                    "issue a new token for the signer"
                ) from exc
            ttl = int(data.get("ttl") or 0)
        else:
            try:
                auth = self._call(
                    "AppRole login",
                    self.client.auth.approle.login,
                    role_id=self._role_id,
                    secret_id=self._secret_id,
                    use_token=False,
                )["auth"]
            except KeyBackendError as exc:
                refused = (hvac_errors.InvalidRequest, hvac_errors.Unauthorized, hvac_errors.Forbidden)
                if not isinstance(exc.__cause__, refused):
                    raise
                raise VaultPermissionError(
                    "Vault refused the AppRole login: check VAULT_ROLE_ID and the secret id in "
                    "VAULT_SECRET_ID_FILE (secret ids expire: issue a new one)"
                ) from exc
            self.client.token = auth["client_token"]
            ttl = int(auth.get("lease_duration") or 0)
        self._expires_at = time.monotonic() + ttl if ttl > 0 else float("inf")
        self._issued_ttl = ttl
        self.logins += 1
        logger.info("vault login", extra={"vault_auth": self.auth_method, "ttl": ttl})

    def _relogin_or_raise(self, cause: Exception) -> None:
        if self.auth_method == "approle":
            self._login()
            return
        self.client.token = None
        raise VaultPermissionError(
            "the Vault token from VAULT_TOKEN_FILE has expired or was revoked: "
            "issue a new token for the signer"
        ) from cause

    def _ensure_token(self) -> None:
        """Log in when there is no token; renew it when its TTL runs low; log in again when renewal
        fails or can no longer extend it (its max TTL is reached)."""
        with self._lock:
            if self.client.token is None:
                self._login()
                return
            remaining = self._expires_at - time.monotonic()
            if remaining > self.renew_below_seconds:
                return
            if remaining <= 0:
                self._relogin_or_raise(KeyBackendError("token TTL elapsed"))
                return
            try:
                auth = self._call("token renewal", self.client.auth.token.renew_self)["auth"]
            except VaultPermissionError as exc:  # expired or revoked meanwhile
                self._relogin_or_raise(exc)
                return
            except (VaultSealedError, VaultUnavailableError):
                raise
            except KeyBackendError as exc:  # e.g. 400 "lease is not renewable"
                if self.auth_method == "approle":
                    self._login()
                    return
                logger.warning("vault token renewal refused; it is used until it expires", exc_info=exc)
                return
            ttl = int(auth.get("lease_duration") or 0)
            self.renewals += 1
            if 0 < ttl < self._issued_ttl and self.auth_method == "approle":
                self._login()  # capped by the token's max TTL: only a new login gives a full TTL again
                return
            self._expires_at = time.monotonic() + ttl if ttl > 0 else float("inf")

    def _token_is_valid(self) -> bool:
        try:
            self._call("token lookup", self.client.auth.token.lookup_self)
        except VaultPermissionError:
            return False
        return True

    def _authed(self, what: str, fn: Callable[..., Any], *, key_id: str | None = None, **kwargs) -> Any:
        self._ensure_token()
        token = self.client.token
        try:
            return self._call(what, fn, key_id=key_id, **kwargs)
        except VaultPermissionError as exc:
            # 403 means a bad token or a policy that does not cover the path: ask Vault which.
            with self._lock:
                if self.client.token == token:
                    if self._token_is_valid():
                        raise
                    self._relogin_or_raise(exc)
            return self._call(what, fn, key_id=key_id, **kwargs)

    # --- keys ------------------------------------------------------------------------------------

    def _path(self, key_id: str) -> str:
        return f"{self.kv_prefix}/{check_key_id(key_id)}"

    def create_key(self, *, label: str) -> KeyRef:
        key_id = new_key_id()
        key = generate_private_key()
        try:
            address = address_from_public_key(PrivateKey(bytes(key)).public_key.format(compressed=False))
            self._authed(
                f"writing key {key_id}",
                self.client.secrets.kv.v2.create_or_update_secret,
                path=self._path(key_id),
                secret={"private_key": key.hex(), "address": address, "label": label},
                cas=0,  # create only: never overwrite an existing secret
                mount_point=self.kv_mount,
            )
        finally:
            wipe(key)
            log_key_held(backend=self.name, key_id=key_id, purpose="create it")
        return KeyRef(backend=self.name, key_id=key_id, address=address)

    def _read_key(self, key_id: str) -> bytearray:
        """The key in a bytearray the caller must wipe."""
        response = self._authed(
            f"reading key {key_id}",
            self.client.secrets.kv.v2.read_secret_version,
            key_id=key_id,
            path=self._path(key_id),
            mount_point=self.kv_mount,
            raise_on_deleted_version=True,
        )
        try:
            key = bytearray.fromhex(response["data"]["data"]["private_key"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyBackendError(
                f"the Vault secret for key {key_id} has no hex private_key field: "
                "it was not written by Custos"
            ) from exc
        finally:
            del response
        if len(key) != 32 or not 0 < int.from_bytes(key, "big") < SECP256K1_N:
            wipe(key)
            raise KeyBackendError(f"the Vault secret for key {key_id} is not a secp256k1 private key")
        return key

    def address_of(self, *, key_id: str) -> str:
        key = self._read_key(key_id)
        try:
            return address_from_public_key(PrivateKey(bytes(key)).public_key.format(compressed=False))
        finally:
            wipe(key)
            log_key_held(backend=self.name, key_id=key_id, purpose="derive its address")

    def sign_digest(self, *, key_id: str, digest: bytes) -> Signature:
        digest = check_digest(digest)
        key = self._read_key(key_id)
        try:
            private = PrivateKey(bytes(key))
            raw = private.sign_recoverable(digest, hasher=None)
            public = private.public_key.format(compressed=False)
        finally:
            wipe(key)
            log_key_held(backend=self.name, key_id=key_id, purpose="sign")
        r, s = rs_from_bytes(raw)
        return normalise_signature(digest=digest, r=r, s=s, public_key=public, v_hint=raw[64])
