"""Key backends: pkcs11 (HSM), vault (the owner's HashiCorp Vault, KV v2) and keystore (V3 files).

`backend_from_settings` is called only in the signer process: it is the one place that reads key
credentials (PIN file, Vault secret id or token file, keystore passphrase file).
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from apps.signing.backends.base import KeyBackend, KeyBackendError, KeyRef, Signature

__all__ = ["KeyBackend", "KeyBackendError", "KeyRef", "Signature", "backend_from_settings"]


def _read_secret(path: str, setting: str) -> str:
    if not path:
        raise KeyBackendError(f"{setting} is not set: only the signer process holds key credentials")
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise KeyBackendError(f"{setting} ({path}) is not readable") from exc


def backend_from_settings(name: str) -> KeyBackend:
    if name == "keystore":
        from apps.signing.backends.keystore import KeystoreBackend

        if not settings.KEYSTORE_PASSPHRASE_FILE:
            raise KeyBackendError(
                "KEYSTORE_PASSPHRASE_FILE is not set: only the signer holds key credentials"
            )
        return KeystoreBackend(
            directory=settings.KEYSTORE_DIR,
            passphrase_file=settings.KEYSTORE_PASSPHRASE_FILE,
            scrypt_n=settings.KEYSTORE_SCRYPT_N,
        )
    if name == "pkcs11":
        from apps.signing.backends.pkcs11 import Pkcs11Backend

        return Pkcs11Backend(
            module_path=settings.PKCS11_MODULE,
            token_label=settings.PKCS11_TOKEN_LABEL,
            pin=_read_secret(settings.PKCS11_PIN_FILE, "PKCS11_PIN_FILE"),
            softhsm_conf=settings.SOFTHSM2_CONF,
        )
    if name == "vault":
        from apps.signing.backends.vault import VaultBackend

        token = secret_id = None
        if settings.VAULT_AUTH_METHOD == "token":
            token = _read_secret(settings.VAULT_TOKEN_FILE, "VAULT_TOKEN_FILE")
        else:
            secret_id = _read_secret(settings.VAULT_SECRET_ID_FILE, "VAULT_SECRET_ID_FILE")
        return VaultBackend(
            addr=settings.VAULT_ADDR,
            auth_method=settings.VAULT_AUTH_METHOD,
            token=token,
            role_id=settings.VAULT_ROLE_ID,
            secret_id=secret_id,
            kv_mount=settings.VAULT_KV_MOUNT,
            kv_prefix=settings.VAULT_KV_PREFIX,
            timeout=settings.VAULT_TIMEOUT_SECONDS,
            renew_below_seconds=settings.VAULT_RENEW_BELOW_SECONDS,
        )
    raise KeyBackendError(f"unknown key backend {name!r}")
