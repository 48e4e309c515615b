"""`manage.py demo_setup`: a demo owner, wallet (key made by the running signer), funds and a scope.

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
from apps.wallets.models import NonceCursor, PermissionScope, Wallet
from apps.wallets.services import scope_grant, wallet_create

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
        if wallet is not None and self._stale(wallet, dex):
            # The dev chain was restarted (its nonces start again) or this checkout has another
            # keystore: that wallet cannot trade here any more. Keep it on record, start a new one.
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
        if not PermissionScope.objects.filter(wallet=wallet, active=True, valid_until__gt=now).exists():
            scope_grant(
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
            )
            self.stdout.write("granted the demo wallet a dUSDC <-> dDAI scope")
        # The dev tokens are listed by no market data API: the demo scope explicitly accepts the
        # pool's own price (apps.market.reference); production scopes default to refusing that.
        PermissionScope.objects.filter(wallet=wallet, chain=dex.chain, chain__is_dev=True).update(
            allow_onchain_only_pricing=True
        )
        self.stdout.write(self.style.SUCCESS(f"demo wallet {wallet.address} ready"))

    def _stale(self, wallet: Wallet, dex) -> bool:
        if wallet.status != Wallet.Status.ACTIVE:
            return False
        if (
            wallet.key_backend == "keystore"
            and not (Path(settings.KEYSTORE_DIR) / f"{wallet.key_id}.json").exists()
        ):
            return True
        cursor = NonceCursor.objects.filter(wallet=wallet, chain=dex.chain).first()
        if cursor is None:
            return False
        try:
            pending = int(
                rpc_request(
                    endpoint_for(dex.chain), "eth_getTransactionCount", [wallet.address, "pending"], timeout=5
                ),
                16,
            )
        except RpcError:
            return False
        return pending < cursor.next_nonce
