"""PKCS#11 HSM keys (SoftHSM2 in development; a YubiHSM 2, Nitrokey HSM or CloudHSM in production).

secp256k1 key pairs are generated on the token as SENSITIVE, non-EXTRACTABLE token objects: the
private key never leaves the token. Mechanism.ECDSA over the 32-byte digest returns r||s; the shared
helper folds s low and finds the recovery id against the public key read from EC_POINT. One
logged-in session is kept per backend instance and serialised with a lock (a PKCS#11 session is not
safe for concurrent use, and opening one per signature is slow).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass

import pkcs11
from asn1crypto.core import OctetString
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey, NoSuchToken, PinIncorrect, PKCS11Error
from pkcs11.util.ec import encode_named_curve_parameters

from apps.signing.backends.base import (
    KeyBackend,
    KeyBackendError,
    KeyRef,
    Signature,
    address_from_public_key,
    check_digest,
    check_key_id,
    new_key_id,
    normalise_signature,
    rs_from_bytes,
)

SECP256K1_OID = "1.3.132.0.10"

# A PKCS#11 module is loaded and C_Initialize'd once per process, and SoftHSM reads SOFTHSM2_CONF at
# that moment. module path -> the SOFTHSM2_CONF it was initialised with.
_initialised_conf: dict[str, str | None] = {}
_lock = threading.Lock()
# PKCS#11 login state belongs to the application, not to a session: a second C_Login fails and any
# session's C_Logout logs every session out. So each token is logged in once per process by a session
# this registry owns, backends open their own sessions under that login, and the last one to close
# logs out. (module path, token label) -> _Login.
_logins: dict[tuple[str, str], _Login] = {}
_PIN_MAC_KEY = secrets.token_bytes(32)


def _pin_mac(pin: str) -> bytes:
    return hmac.new(_PIN_MAC_KEY, pin.encode(), hashlib.sha256).digest()


@dataclass
class _Login:
    session: object
    pin_mac: bytes  # to check the PIN of later backends without another C_Login; never the PIN
    users: int = 0


def _library(module_path: str, softhsm_conf: str | None):
    """The initialised module (caller holds _lock)."""
    if softhsm_conf is None:
        lib = pkcs11.lib(module_path)
        _initialised_conf.setdefault(module_path, os.environ.get("SOFTHSM2_CONF"))
        return lib
    if module_path not in _initialised_conf:
        os.environ["SOFTHSM2_CONF"] = softhsm_conf
        lib = pkcs11.lib(module_path)
        _initialised_conf[module_path] = softhsm_conf
        return lib
    lib = pkcs11.lib(module_path)
    if _initialised_conf[module_path] != softhsm_conf:
        # Another configuration needs C_Finalize + C_Initialize, which ends every session of the
        # module: allowed only while no backend uses it (tests and benchmarks; a signer has one).
        if any(path == module_path for path, _label in _logins):
            raise KeyBackendError(
                f"the PKCS#11 module {module_path} is in use with SOFTHSM2_CONF="
                f"{_initialised_conf[module_path]}; one process serves one token configuration"
            )
        os.environ["SOFTHSM2_CONF"] = softhsm_conf
        lib.reinitialize()
        _initialised_conf[module_path] = softhsm_conf
    return lib


def ec_point_bytes(der_or_raw: bytes) -> bytes:
    """04||X||Y from a CKA_EC_POINT value: a DER OCTET STRING around the point (PKCS#11 2.40), or the
    bare point that some modules return."""
    raw = bytes(der_or_raw)
    if len(raw) == 65 and raw[0] == 0x04:
        return raw
    try:
        point = OctetString.load(raw).native
    except ValueError as exc:
        raise KeyBackendError("the token returned an unreadable EC_POINT") from exc
    if len(point) != 65 or point[0] != 0x04:
        raise KeyBackendError("the token's EC_POINT is not an uncompressed secp256k1 point")
    return point


class Pkcs11Backend(KeyBackend):
    name = "pkcs11"

    def __init__(self, *, module_path: str, token_label: str, pin: str, softhsm_conf: str | None = None):
        self._login_key = (module_path, token_label)
        self._session = None
        self._lock = threading.Lock()  # a PKCS#11 session must not be used by two threads at once
        # Object handles and public points only: the private key never enters this process.
        self._keys: dict[str, tuple[object, bytes]] = {}
        with _lock:
            try:
                token = _library(module_path, softhsm_conf).get_token(token_label=token_label)
                login = _logins.get(self._login_key)
                if login is None:
                    login = _Login(session=token.open(user_pin=pin, rw=True), pin_mac=_pin_mac(pin))
                elif not hmac.compare_digest(login.pin_mac, _pin_mac(pin)):
                    raise PinIncorrect()
                self._session = token.open(rw=True)  # a session under the process's login
                login.users += 1
                _logins[self._login_key] = login
            except NoSuchToken as exc:
                raise KeyBackendError(
                    f"no PKCS#11 token labelled {token_label!r} in {module_path}: check PKCS11_TOKEN_LABEL "
                    "(and SOFTHSM2_CONF for SoftHSM), or initialise the token"
                ) from exc
            except PinIncorrect as exc:
                raise KeyBackendError(
                    f"the PIN for PKCS#11 token {token_label!r} is incorrect: check PKCS11_PIN_FILE"
                ) from exc
            except PKCS11Error as exc:
                raise KeyBackendError(
                    f"PKCS#11 token {token_label!r} could not be opened ({type(exc).__name__}): check "
                    "PKCS11_MODULE, PKCS11_TOKEN_LABEL and the PIN in PKCS11_PIN_FILE"
                ) from exc

    def close(self) -> None:
        """Close this backend's session; the last backend of the token logs the process out."""
        with _lock, self._lock:
            if self._session is None:
                return
            try:
                self._session.close()
            finally:
                self._session = None
                self._keys.clear()
                login = _logins.get(self._login_key)
                if login is not None:
                    login.users -= 1
                    if login.users <= 0:
                        del _logins[self._login_key]
                        login.session.close()

    def _open_session(self):
        if self._session is None:
            raise KeyBackendError("this PKCS#11 backend was closed")
        return self._session

    def create_key(self, *, label: str) -> KeyRef:
        # CKA_LABEL and CKA_ID both carry the opaque key id: `label` is the caller's name for the key
        # and is kept in the database, not on the token.
        key_id = new_key_id()
        with self._lock:
            session = self._open_session()
            try:
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(SECP256K1_OID)},
                    local=True,
                )
                public, private = params.generate_keypair(
                    store=True,
                    label=key_id,
                    id=bytes.fromhex(key_id),
                    public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
                    private_template={
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.SIGN: True,
                    },
                )
                point = ec_point_bytes(public[Attribute.EC_POINT])
            except PKCS11Error as exc:
                raise KeyBackendError(
                    f"the PKCS#11 token could not generate a secp256k1 key ({type(exc).__name__}): "
                    "check that the token supports EC keys on curve 1.3.132.0.10 and has free space"
                ) from exc
            self._keys[key_id] = (private, point)
        return KeyRef(backend=self.name, key_id=key_id, address=address_from_public_key(point))

    def _find(self, key_id: str, object_class: ObjectClass):
        try:
            return self._open_session().get_key(object_class=object_class, id=bytes.fromhex(key_id))
        except NoSuchKey as exc:
            raise KeyBackendError(
                f"no key {key_id} on the PKCS#11 token: wrong token (PKCS11_TOKEN_LABEL) "
                "or the key was deleted"
            ) from exc

    def _key(self, key_id: str) -> tuple[object, bytes]:
        """(private key handle, public point) of a key, looked up once (caller holds self._lock)."""
        cached = self._keys.get(key_id)
        if cached is None:
            check_key_id(key_id)
            public = self._find(key_id, ObjectClass.PUBLIC_KEY)
            cached = (self._find(key_id, ObjectClass.PRIVATE_KEY), ec_point_bytes(public[Attribute.EC_POINT]))
            self._keys[key_id] = cached
        return cached

    def private_key(self, key_id: str):
        """The token object handle of a private key (for attribute checks and baselines; it holds no
        key material: every read of its value is refused by the token)."""
        with self._lock:
            return self._key(key_id)[0]

    def address_of(self, *, key_id: str) -> str:
        with self._lock:
            return address_from_public_key(self._key(key_id)[1])

    def sign_digest(self, *, key_id: str, digest: bytes) -> Signature:
        digest = check_digest(digest)
        with self._lock:
            handle, point = self._key(key_id)
            try:
                raw = handle.sign(digest, mechanism=Mechanism.ECDSA)
            except PKCS11Error as exc:
                raise KeyBackendError(
                    f"PKCS#11 signing with key {key_id} failed ({type(exc).__name__})"
                ) from exc
        r, s = rs_from_bytes(raw)
        return normalise_signature(digest=digest, r=r, s=s, public_key=point)
