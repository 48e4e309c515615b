"""Signing throughput of the key backends against raw baselines measured in the same run.

- pkcs11: the backend's sign_digest (lock, low-s fold, recovery id) vs raw python-pkcs11
  `key.sign(digest, mechanism=Mechanism.ECDSA)` with the same key on the same SoftHSM token;
  target >= 0.8.
- keystore: the backend (reads and decrypts its V3 file on every signature: scrypt) vs raw coincurve
  with the key already in memory, at a small scrypt n and at the production n = 2**18. Scrypt is the
  point of a keystore, so the ratio is small by design.
- vault: the backend against the local fake Vault API (one KV read over HTTP per signature) vs raw
  coincurve; a real Vault adds its own latency on top.
- child recycling: signing one digest in a fresh process (multiprocessing pool with
  maxtasksperchild=1, as a Celery prefork worker with max-tasks-per-child=1 does; fork and spawn)
  vs signing in-process.
- full_path: apps.signing.services.trade_sign end to end vs raw token signing; target >= 0.3.

Sets up its own SoftHSM token and keystore in a temporary directory. Prints readable lines, then a
JSON object as the last line. Run: .venv/bin/python bench/signing.py [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402 - after the path setup above

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SMALL_SCRYPT_N = 2**10
PRODUCTION_SCRYPT_N = 2**18


def per_second(fn: Callable[[], object], seconds: float, *, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def interleaved(a: Callable[[], object], b: Callable[[], object], seconds: float, batch: int = 100):
    """Rates of a and b from alternating batches (noise from other processes hits both alike):
    the median rate of each, and the median of the per-round ratios b/a."""
    for _ in range(5):
        a(), b()
    rates_a, rates_b, ratios = [], [], []
    deadline = time.perf_counter() + 2 * seconds
    while time.perf_counter() < deadline or len(ratios) < 5:
        start = time.perf_counter()
        for _ in range(batch):
            a()
        middle = time.perf_counter()
        for _ in range(batch):
            b()
        end = time.perf_counter()
        rates_a.append(batch / (middle - start))
        rates_b.append(batch / (end - middle))
        ratios.append(rates_b[-1] / rates_a[-1])
    return statistics.median(rates_a), statistics.median(rates_b), statistics.median(ratios), len(ratios)


def softhsm_token(tmp: Path) -> dict:
    token = common.softhsm_token(tmp, "bench")
    os.environ["SOFTHSM2_CONF"] = token["SOFTHSM2_CONF"]  # before the PKCS#11 module is loaded
    return {
        "conf": token["SOFTHSM2_CONF"],
        "label": token["PKCS11_TOKEN_LABEL"],
        "pin": Path(token["PKCS11_PIN_FILE"]).read_text(),
    }


# Runs in the child processes: module level so that spawn can import it.
def sign_in_child(
    directory: str, passphrase_file: str, key_id: str, digest: bytes
) -> tuple[int, int, int, int]:
    from apps.signing.backends.keystore import KeystoreBackend

    backend = KeystoreBackend(directory=directory, passphrase_file=passphrase_file, scrypt_n=SMALL_SCRYPT_N)
    signature = backend.sign_digest(key_id=key_id, digest=digest)
    return os.getpid(), signature.v, signature.r, signature.s


def bench_pkcs11(tmp: Path, seconds: float, digest: bytes) -> dict:
    from pkcs11 import Mechanism

    from apps.signing.backends.pkcs11 import Pkcs11Backend

    token = softhsm_token(tmp / "softhsm")
    backend = Pkcs11Backend(
        module_path=SOFTHSM_MODULE, token_label=token["label"], pin=token["pin"], softhsm_conf=token["conf"]
    )
    try:
        ref = backend.create_key(label="bench")
        handle = backend.private_key(ref.key_id)
        raw, ours, ratio, rounds = interleaved(
            lambda: handle.sign(digest, mechanism=Mechanism.ECDSA),
            lambda: backend.sign_digest(key_id=ref.key_id, digest=digest),
            seconds,
        )
    finally:
        backend.close()
    print(
        f"pkcs11     raw python-pkcs11 ECDSA {raw:8.0f}/s   backend sign_digest {ours:8.0f}/s   "
        f"ratio {ratio:.2f} (median of {rounds} alternating rounds; target >= 0.8)",
        flush=True,
    )
    return {
        "raw_pkcs11_per_s": round(raw),
        "backend_per_s": round(ours),
        "ratio": round(ratio, 3),
        "rounds": rounds,
        "target": 0.8,
        "meets_target": ratio >= 0.8,
    }


def bench_keystore(tmp: Path, seconds: float, digest: bytes) -> tuple[dict, tuple[str, str, str]]:
    from coincurve import PrivateKey

    from apps.signing.backends.keystore import KeystoreBackend

    passphrase_file = tmp / "keystore.pass"
    passphrase_file.write_text(secrets.token_urlsafe(24))
    in_memory = PrivateKey()
    raw = per_second(lambda: in_memory.sign_recoverable(digest, hasher=None), seconds)
    results: dict = {"raw_coincurve_per_s": round(raw)}
    small_key = None
    for n, budget in ((SMALL_SCRYPT_N, seconds), (PRODUCTION_SCRYPT_N, max(seconds, 3.0))):
        backend = KeystoreBackend(
            directory=tmp / f"keystore-n{n}", passphrase_file=passphrase_file, scrypt_n=n
        )
        ref = backend.create_key(label="bench")
        ours = per_second(
            lambda b=backend, r=ref: b.sign_digest(key_id=r.key_id, digest=digest), budget, warmup=1
        )
        results[f"scrypt_n_{n}"] = {
            "backend_per_s": round(ours, 2),
            "ms_per_signature": round(1000 / ours, 2),
            "ratio": round(ours / raw, 5),
        }
        print(
            f"keystore   raw coincurve (key in memory) {raw:8.0f}/s   "
            f"backend, scrypt n=2^{n.bit_length() - 1:<2d} {ours:8.1f}/s ({1000 / ours:6.1f} ms)   "
            f"ratio {ours / raw:.5f}",
            flush=True,
        )
        if n == SMALL_SCRYPT_N:
            small_key = (str(backend.directory), str(passphrase_file), ref.key_id)
    results["note"] = (
        "every signature reads and scrypt-decrypts the keystore file; nothing key-related is cached"
    )
    return results, small_key


def bench_vault(seconds: float, digest: bytes, raw_coincurve: float) -> dict:
    from apps.signing.backends.vault import VaultBackend
    from tests.signing.vault_fake import FakeVault

    with FakeVault() as fake:
        role = fake.add_role("custos", token_ttl=3600, token_max_ttl=86400)
        backend = VaultBackend(addr=fake.addr, role_id=role.role_id, secret_id=role.secret_id)
        ref = backend.create_key(label="bench")
        ours = per_second(lambda: backend.sign_digest(key_id=ref.key_id, digest=digest), seconds)
    print(
        f"vault      raw coincurve (key in memory) {raw_coincurve:8.0f}/s   "
        f"backend on the local fake Vault API {ours:8.0f}/s   ratio {ours / raw_coincurve:.4f}",
        flush=True,
    )
    return {
        "raw_coincurve_per_s": round(raw_coincurve),
        "backend_per_s": round(ours),
        "ratio": round(ours / raw_coincurve, 4),
        "note": "against tests/signing/vault_fake.py over local HTTP, not a real Vault",
    }


def bench_child_recycling(seconds: float, digest: bytes, small_key: tuple[str, str, str]) -> dict:
    from apps.signing.backends.keystore import KeystoreBackend

    directory, passphrase_file, key_id = small_key
    backend = KeystoreBackend(directory=directory, passphrase_file=passphrase_file, scrypt_n=SMALL_SCRYPT_N)
    in_process = per_second(lambda: backend.sign_digest(key_id=key_id, digest=digest), seconds)
    in_process_ms = 1000 / in_process
    print(f"recycling  in-process keystore sign_digest (n=2^10): {in_process_ms:7.2f} ms", flush=True)
    results: dict = {"in_process_ms": round(in_process_ms, 3)}
    for method in ("fork", "spawn"):
        context = multiprocessing.get_context(method)
        pids: set[int] = set()
        with context.Pool(1, maxtasksperchild=1) as pool:

            def task(pool=pool, pids=pids) -> None:
                pid, *_signature = pool.apply(sign_in_child, (directory, passphrase_file, key_id, digest))
                pids.add(pid)

            rate = per_second(task, seconds if method == "fork" else max(seconds, 3.0), warmup=1)
        fresh_ms = 1000 / rate
        results[method] = {
            "fresh_child_ms_per_signature": round(fresh_ms, 2),
            "recycling_cost_ms": round(fresh_ms - in_process_ms, 2),
            "distinct_child_pids": len(pids),
        }
        print(
            f"recycling  fresh {method:5s} child per signature (Pool maxtasksperchild=1): {fresh_ms:7.2f} ms "
            f"-> recycling costs {fresh_ms - in_process_ms:6.2f} ms per task ({len(pids)} distinct children)",
            flush=True,
        )
    return results


def bench_full_path(tmp: Path, trades: int = 320, batch: int | None = None) -> dict:
    """The signer's full path (decode, scope re-check, nonce and payload checks, SigningRecord and
    ledger in one SERIALIZABLE transaction, the engine told) with the pkcs11 backend, against raw
    token signing on the same token, on a throwaway database: one request per transaction
    (trade_sign, what a lone request costs) and batches of SIGNER_BATCH_SIZE (trade_sign_batch,
    what the signer does when requests wait, as they do under load). The target is judged on the
    batched figure, the way the signer runs under load; both are printed."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.test")
    os.environ.setdefault("DATABASE_TEST_NAME", "bench_signing")
    django.setup()
    from datetime import timedelta

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone
    from pkcs11 import Mechanism

    from apps.chain.models import Chain, Dex, Token
    from apps.signing import services
    from apps.signing.backends.pkcs11 import Pkcs11Backend
    from apps.wallets.models import Wallet
    from tests.factories import UserFactory, grant_scope, signing_trade

    batch = batch or settings.SIGNER_BATCH_SIZE

    token = softhsm_token(tmp / "softhsm-full")
    backend = Pkcs11Backend(
        module_path=SOFTHSM_MODULE, token_label=token["label"], pin=token["pin"], softhsm_conf=token["conf"]
    )
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    original = services.backend
    try:
        chain = Chain.objects.create(chain_id=31337, name="bench")
        for n, (symbol, decimals) in enumerate((("dUSDC", 6), ("dDAI", 18)), start=1):
            Token.objects.create(
                chain=chain,
                address=f"0x{n:040x}",
                symbol=symbol,
                name=symbol,
                decimals=decimals,
                is_stablecoin=True,
            )
        Dex.objects.create(chain=chain, name="bench", router=f"0x{3:040x}", factory=f"0x{4:040x}")
        ref = backend.create_key(label="bench-wallet")
        wallet = Wallet.objects.create(
            owner=UserFactory(),
            label="bench",
            key_backend="pkcs11",
            key_id=ref.key_id,
            address=ref.address,
            status="active",
        )
        grant_scope(wallet, max_amount_in=10**30, valid_until=timezone.now() + timedelta(days=1))
        services.backend = lambda _name: backend  # this run's token, not the settings' one
        warm = [signing_trade(wallet, with_approve=False) for _ in range(batch)]
        single = [signing_trade(wallet, with_approve=False) for _ in range(trades // 4)]
        batched = [signing_trade(wallet, with_approve=False) for _ in range(trades)]
        # A running signer is warm (queries compiled, caches filled): one uncounted batch first.
        assert all(o.signed for o in services.trade_sign_batch([(t.pk, 1) for t in warm]).values())
        handle = backend.private_key(ref.key_id)
        digest = secrets.token_bytes(32)
        raw = per_second(lambda: handle.sign(digest, mechanism=Mechanism.ECDSA), 1.5)
        start = time.perf_counter()
        for trade in single:
            assert services.trade_sign(trade_id=trade.pk, attempt=1).signed
        one_by_one = len(single) / (time.perf_counter() - start)
        start = time.perf_counter()
        for first in range(0, len(batched), batch):
            requests = [(t.pk, 1) for t in batched[first : first + batch]]
            assert all(o.signed for o in services.trade_sign_batch(requests).values())
        full = len(batched) / (time.perf_counter() - start)
        raw_after = per_second(lambda: handle.sign(digest, mechanism=Mechanism.ECDSA), 1.5)
        raw = (raw + raw_after) / 2  # measured before and after, so drift hits both sides alike
    finally:
        services.backend = original
        backend.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    ratio = full / raw
    print(
        f"full path  raw token ECDSA {raw:8.0f}/s   one request per transaction {one_by_one:8.1f}/s "
        f"(ratio {one_by_one / raw:.3f})   batches of {batch} {full:8.1f}/s   "
        f"ratio {ratio:.3f} (target >= 0.3)",
        flush=True,
    )
    return {
        "raw_pkcs11_per_s": round(raw),
        "one_request_per_s": round(one_by_one, 1),
        "one_request_ratio": round(one_by_one / raw, 4),
        "batch_size": batch,
        "batched_per_s": round(full, 1),
        "ratio": round(ratio, 4),
        "trades": trades,
        "target": 0.3,
        "meets_target": ratio >= 0.3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per figure")
    args = parser.parse_args()
    digest = secrets.token_bytes(32)
    tmp = Path(tempfile.mkdtemp(prefix="custos-bench-signing-"))
    try:
        results: dict = {"bench": "signing", "python": sys.version.split()[0], "cpus": os.cpu_count()}
        results["pkcs11"] = bench_pkcs11(tmp, args.seconds, digest)
        results["keystore"], small_key = bench_keystore(tmp, args.seconds, digest)
        results["vault_fake_api"] = bench_vault(
            args.seconds, digest, results["keystore"]["raw_coincurve_per_s"]
        )
        results["child_recycling"] = bench_child_recycling(args.seconds, digest, small_key)
        results["full_path"] = bench_full_path(tmp)
        print(json.dumps(results))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
