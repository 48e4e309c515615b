"""`manage.py trade_submit`: submit a swap for a wallet and (with --follow) stream it to the end."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.chain.models import Dex, Token
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import TERMINAL, Trade
from apps.wallets.models import Wallet

NATIVE = "ETH"  # the chain's native coin, swapped through the DEX's wrapped native token


class Command(BaseCommand):
    help = "Submit a swap (amount in whole tokens) and optionally follow it until it ends."

    def add_arguments(self, parser):
        parser.add_argument("--wallet", required=True, help="wallet label or address")
        parser.add_argument(
            "--sell", required=True, help=f"symbol of the token to sell ({NATIVE} for native)"
        )
        parser.add_argument("--buy", required=True, help=f"symbol of the token to buy ({NATIVE} for native)")
        parser.add_argument("--amount", required=True, help="whole tokens to sell, e.g. 100.5")
        parser.add_argument("--slippage-bps", type=int, default=50)
        parser.add_argument("--deadline-minutes", type=int, default=20)
        parser.add_argument("--idempotency-key", default=None)
        parser.add_argument("--follow", action="store_true", help="stream state changes until it ends")
        parser.add_argument("--timeout", type=int, default=300)

    def handle(self, *args, **o):
        wallet = (
            Wallet.objects.filter(label=o["wallet"], active=True).first()
            or Wallet.objects.filter(address__iexact=o["wallet"]).first()
        )
        if wallet is None:
            raise CommandError(f"--wallet: no wallet labelled or addressed {o['wallet']!r}")
        if o["sell"] == o["buy"]:
            raise CommandError("--buy: must differ from --sell")
        native = "in" if o["sell"] == NATIVE else "out" if o["buy"] == NATIVE else ""
        token_symbol = o["buy"] if native == "in" else o["sell"]
        dexes = Dex.objects.filter(chain__tokens__symbol=token_symbol)
        dex = (dexes.filter(wrapped_native__isnull=False) if native else dexes).distinct().first()
        if dex is None:
            raise CommandError(f"--sell: no DEX trades {o['sell']!r}")
        try:
            sell = (
                dex.wrapped_native if native == "in" else Token.objects.get(chain=dex.chain, symbol=o["sell"])
            )
            buy = (
                dex.wrapped_native if native == "out" else Token.objects.get(chain=dex.chain, symbol=o["buy"])
            )
        except Token.DoesNotExist as exc:
            raise CommandError("--sell/--buy: unknown token symbol") from exc
        try:
            amount = Decimal(o["amount"])
        except InvalidOperation as exc:
            raise CommandError("--amount: not a decimal number") from exc
        units = amount * (Decimal(10) ** sell.decimals)
        if units != units.to_integral_value() or units <= 0:
            raise CommandError(f"--amount: must be positive with at most {sell.decimals} decimals")
        try:
            submitted = rmtm.trade_submit(
                owner=wallet.owner,
                wallet=wallet,
                dex=dex,
                path=[sell.address, buy.address],
                amount_in=int(units),
                slippage_bps=o["slippage_bps"],
                deadline=timezone.now() + timedelta(minutes=o["deadline_minutes"]),
                idempotency_key=o["idempotency_key"] or f"cli-{uuid.uuid4()}",
                native=native,
            )
        except rmtm.TradeInputError as exc:
            raise CommandError(str(exc)) from exc
        trade = submitted.trade
        self.stdout.write(
            f"trade {trade.pk}: {'submitted' if submitted.created else 'already submitted'} — "
            f"sell {amount} {o['sell']} for {o['buy']}"
        )
        if o["follow"]:
            self._follow(trade.pk, o["timeout"])

    def _follow(self, trade_id: int, timeout: int) -> None:
        seen = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            trade = Trade.objects.get(pk=trade_id)
            for event in trade.events.order_by("id")[seen:]:
                seen += 1
                label = f"{event.from_state or '·'} → {event.to_state}" if event.to_state else event.kind
                self.stdout.write(f"  {event.created_at:%H:%M:%S} {label} {_summary(event.data)}")
                self.stdout.flush()
            if trade.state in TERMINAL:
                style = self.style.SUCCESS if trade.state == "SETTLED" else self.style.ERROR
                self.stdout.write(style(f"trade {trade.pk} {trade.state} {trade.reason}".rstrip()))
                if trade.state != "SETTLED":
                    raise CommandError(f"trade ended {trade.state}")
                return
            time.sleep(0.5)
        raise CommandError(f"trade {trade_id} still not finished after {timeout}s")


def _summary(data: dict) -> str:
    keys = ("reason", "tx", "block", "quoted_out", "nonces", "head", "signer_refused")
    return " ".join(f"{k}={data[k]}" for k in keys if k in data)
