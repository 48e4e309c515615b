"""Fixtures for the key backends: a SoftHSM token for the session, keystore directories, and Vault
(the local fake always; a real `vault server -dev` too whenever a `vault` binary is on PATH)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from apps.signing.backends.keystore import KeystoreBackend
from apps.signing.backends.vault import VaultBackend
from tests.signing.vault_fake import FakeVault

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
KEYSTORE_PASSPHRASE = "correct horse battery staple, signer only"
TEST_SCRYPT_N = 2**10  # production uses 2**18; the format and code path are the same


@dataclass(frozen=True)
class SoftHsmToken:
    conf: str
    label: str
    pin: str
    module: str = SOFTHSM_MODULE


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory) -> Iterator[SoftHsmToken]:
    """A fresh SoftHSM token in a temporary directory, for the whole session.

    SoftHSM reads SOFTHSM2_CONF when the PKCS#11 module is initialised, and python-pkcs11 loads a
    module once per process, so the session has exactly one token configuration: this one. The
    variable is set before any backend loads the module and restored afterwards.
    """
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "custos-test",
            "--pin",
            pin,
            "--so-pin",
            so_pin,
        ],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True,
        capture_output=True,
        timeout=30,
    )
    yield SoftHsmToken(conf=str(conf), label="custos-test", pin=pin)
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture(scope="module")
def pkcs11_backend(softhsm_token):
    """One backend (one logged-in session) per test module, closed at its end."""
    from apps.signing.backends.pkcs11 import Pkcs11Backend

    backend = Pkcs11Backend(
        module_path=softhsm_token.module,
        token_label=softhsm_token.label,
        pin=softhsm_token.pin,
        softhsm_conf=softhsm_token.conf,
    )
    yield backend
    backend.close()


@pytest.fixture
def keystore_backend(tmp_path) -> KeystoreBackend:
    passphrase_file = tmp_path / "keystore.pass"
    passphrase_file.write_text(KEYSTORE_PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    return KeystoreBackend(
        directory=tmp_path / "keystore", passphrase_file=passphrase_file, scrypt_n=TEST_SCRYPT_N
    )


# --- Vault ------------------------------------------------------------------------------------------

# AppRole roles every Vault environment offers: name -> (token_ttl, token_max_ttl) in seconds.
ROLES = {"custos": (3600, 86400), "short": (60, 3600), "capped": (60, 60)}
POLICY = 'path "secret/data/custos/*" { capabilities = ["create", "read", "update"] }'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class VaultEnv:
    """A Vault to test against, driven through the same HTTP API whether fake or real."""

    kind: str
    addr: str
    root_token: str
    roles: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (role_id, secret_id)
    fake: FakeVault | None = None

    def root(self, method: str, path: str, body: dict | None = None) -> dict:
        response = httpx.request(
            method, self.addr + path, json=body, timeout=10, headers={"X-Vault-Token": self.root_token}
        )
        response.raise_for_status()
        return response.json() if response.content else {}

    def seal(self) -> None:
        self.root("PUT", "/v1/sys/seal")

    def revoke(self, token: str) -> None:
        self.root("POST", "/v1/auth/token/revoke", {"token": token})

    def secret(self, path: str) -> dict:
        return self.root("GET", f"/v1/secret/data/{path}")["data"]["data"]

    def backend(self, role: str = "custos", **overrides) -> VaultBackend:
        role_id, secret_id = self.roles[role]
        params = {
            "addr": self.addr,
            "auth_method": "approle",
            "role_id": role_id,
            "secret_id": secret_id,
            "kv_mount": "secret",
            "kv_prefix": "custos/keys",
            "timeout": 5.0,
            "renew_below_seconds": 30,
        }
        params.update(overrides)
        return VaultBackend(**params)


@contextmanager
def fake_vault() -> Iterator[VaultEnv]:
    fake = FakeVault(mount="secret", allowed_prefix="custos/")
    env = VaultEnv(kind="fake", addr=fake.addr, root_token=fake.root_token, fake=fake)
    for name, (ttl, max_ttl) in ROLES.items():
        role = fake.add_role(name, token_ttl=ttl, token_max_ttl=max_ttl)
        env.roles[name] = (role.role_id, role.secret_id)
    with fake:
        yield env


@contextmanager
def real_vault(tmp: Path) -> Iterator[VaultEnv]:
    port = free_port()
    env = VaultEnv(kind="real", addr=f"http://127.0.0.1:{port}", root_token="root-" + secrets.token_hex(12))
    log_path = tmp / "vault.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, the binary found on PATH
            [
                shutil.which("vault") or "vault",
                "server",
                "-dev",
                f"-dev-root-token-id={env.root_token}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{env.addr}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"vault server -dev did not become healthy:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        env.root("POST", "/v1/sys/auth/approle", {"type": "approle"})
        env.root("PUT", "/v1/sys/policies/acl/custos", {"policy": POLICY})
        for name, (ttl, max_ttl) in ROLES.items():
            env.root(
                "POST",
                f"/v1/auth/approle/role/{name}",
                {"token_policies": ["custos"], "token_ttl": f"{ttl}s", "token_max_ttl": f"{max_ttl}s"},
            )
            role_id = env.root("GET", f"/v1/auth/approle/role/{name}/role-id")["data"]["role_id"]
            secret_id = env.root("POST", f"/v1/auth/approle/role/{name}/secret-id")["data"]["secret_id"]
            env.roles[name] = (role_id, secret_id)
        yield env
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def vault_environment(kind: str, tmp: Path):
    """The fake Vault, or a real dev server (skipping the test when no `vault` binary exists)."""
    if kind == "real":
        if shutil.which("vault") is None:
            pytest.skip("no `vault` binary on PATH: the real-Vault run needs HashiCorp Vault installed")
        return real_vault(tmp)
    return fake_vault()


@pytest.fixture(params=["fake", "real"])
def vault_env(request, tmp_path) -> Iterator[VaultEnv]:
    """Vault for one test: the local fake, and a real `vault server -dev` when the binary exists."""
    with vault_environment(request.param, tmp_path) as env:
        yield env


@pytest.fixture(
    params=[
        pytest.param("pkcs11", marks=pytest.mark.hsm),
        "keystore",
        "vault-fake",
        "vault-real",
    ]
)
def any_backend(request, tmp_path):
    """Each backend in turn (pkcs11 on the session's token, keystore, Vault fake and real)."""
    if request.param == "pkcs11":
        yield request.getfixturevalue("pkcs11_backend")
    elif request.param == "keystore":
        yield request.getfixturevalue("keystore_backend")
    else:
        with vault_environment(request.param.removeprefix("vault-"), tmp_path) as env:
            yield env.backend()
