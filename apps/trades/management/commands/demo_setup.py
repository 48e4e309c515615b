"""`manage.py demo_setup`: a demo owner, wallet (key made by the running signer), funds, and a scope
signed by a development authority key kept in var/secrets/ (as an owner's phone would sign it).

Idempotent; development chains only. Used by `make run` before the demo swap."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.chain import devchain
from apps.chain.models import Dex, Token
from apps.chain.rpc import RpcError, rpc_request
from apps.trades.chainio import endpoint_for
from apps.wallets.authority import scope_typed_data
from apps.wallets.keyfile import keyfile_address, keyfile_create, sign_typed_data_with_keyfile
from apps.wallets.models import PermissionScope, Wallet
from apps.wallets.services import authority_add, scope_propose, scope_signature_attach, wallet_create

GWEI = 10**9


class Command(BaseCommand):
    help = "Create the demo wallet (keystore), fund it on the dev chain and grant it a dUSDC/dDAI scope."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=int, default=60)

    def handle(self, *args, timeout, **options):
        dex = Dex.objects.filter(chain__is_dev=True).select_related("chain").first()
        if dex is None:
            raise CommandError("no dev chain recorded: run `manage.py devchain up` first")
        owner, _ = get_user_model().objects.get_or_create(username="demo")
        wallet = Wallet.objects.filter(owner=owner, label="demo", active=True).first()
        if wallet is not None and self._stale(wallet):
            # This checkout has another keystore: that wallet cannot sign here any more. Keep it on
            # record, start a new one. (A restarted dev chain is not a reason: `devchain up` started
            # a new epoch and restarted the chain's nonce cursors; the wallet is funded again below.)
            Wallet.objects.filter(pk=wallet.pk).update(label=f"demo (retired {wallet.pk})", active=False)
            self.stdout.write(f"retired demo wallet {wallet.address}: it does not match this dev chain")
            wallet = None
        if wallet is None:
            wallet = wallet_create(owner=owner, label="demo", key_backend="keystore")
            self.stdout.write("demo wallet requested; waiting for the signer to create its key")
        deadline = time.monotonic() + timeout
        while wallet.status == Wallet.Status.PROVISIONING and time.monotonic() < deadline:
            time.sleep(0.5)
            wallet.refresh_from_db()
        if wallet.status != Wallet.Status.ACTIVE:
            raise CommandError("the signer did not create the demo wallet's key: is worker-signer running?")
        url = endpoint_for(dex.chain)
        try:
            balance = int(rpc_request(url, "eth_getBalance", [wallet.address, "latest"], timeout=5), 16)
        except RpcError as exc:
            raise CommandError(f"dev chain unreachable: {exc}") from exc
        if balance < 10**18:
            devchain.fund_address(url=url, address=wallet.address, eth=Decimal(10), token_units=100_000)
            self.stdout.write(f"funded {wallet.address} with 10 ETH and 100,000 of each dev token")
        usdc = Token.objects.get(chain=dex.chain, symbol="dUSDC")
        dai = Token.objects.get(chain=dex.chain, symbol="dDAI")
        now = timezone.now()
        key_file, password_file = self._authority_key(owner)
        signed = PermissionScope.objects.filter(
            wallet=wallet, active=True, revoked_at__isnull=True, valid_until__gt=now
        ).exclude(signature="")
        if not signed.exists():
            scope = scope_propose(
                wallet=wallet,
                dex=dex,
                token_in=usdc,
                token_out=dai,
                allow_reverse=True,
                max_amount_in=10_000 * 10**18,
                max_slippage_bps=100,
                max_fee_per_gas=500 * GWEI,
                max_priority_fee_per_gas=10 * GWEI,
                valid_from=now - timedelta(minutes=1),
                valid_until=now + timedelta(days=30),
                # The dev tokens are listed by no market data API: the demo scope explicitly accepts
                # the pool's own price (apps.market.reference); production scopes default to refusing.
                allow_onchain_only_pricing=True,
            )
            signature = sign_typed_data_with_keyfile(
                scope_typed_data(scope), key_file=key_file, password_file=password_file
            )
            scope_signature_attach(scope=scope, signature=signature)
            self.stdout.write("the demo owner signed a dUSDC <-> dDAI scope for the demo wallet")
        self.stdout.write(self.style.SUCCESS(f"demo wallet {wallet.address} ready"))

    def _authority_key(self, owner) -> tuple[Path, Path]:
        """The demo owner's development authority key (var/secrets/demo-authority.json and its
        passphrase), made and registered on first use."""
        secrets_dir = Path(settings.BASE_DIR) / "var" / "secrets"
        key_file, password_file = secrets_dir / "demo-authority.json", secrets_dir / "demo-authority.pass"
        if not (key_file.exists() and password_file.exists()):
            address = keyfile_create(key_file=key_file, password_file=password_file)
            self.stdout.write(f"made a development authority key {address} in {key_file}")
        authority_add(owner=owner, address=keyfile_address(key_file), label="demo (development)")
        return key_file, password_file

    def _stale(self, wallet: Wallet) -> bool:
        return (
            wallet.status == Wallet.Status.ACTIVE
            and wallet.key_backend == "keystore"
            and not (Path(settings.KEYSTORE_DIR) / f"{wallet.key_id}.json").exists()
        )
