"""Gateway views: thin. Writes are validated by validation_2026 (GatewayView) before the handler
runs; each handler calls one service and serializes the result; reads go through selectors that
filter by owner, so another owner's object is a 404."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.chain.models import Chain, Dex, Token
from apps.gateway import selectors
from apps.gateway.api import serializers as s
from apps.gateway.api.base import GatewayView
from apps.gateway.models import ApiToken
from apps.gateway.services import api_token_create, api_token_revoke
from apps.gateway.validation_2026 import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN, EmptyInput
from apps.trades.models import Trade, TradeState
from apps.trades.real_money_transaction_manager import trade_cancel, trade_submit
from apps.wallets.services import scope_grant, scope_revoke, wallet_create


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the resource's current state."
    default_code = "conflict"


def _query(serializer_class, request) -> dict:
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


# --- health ----------------------------------------------------------------------------------------


class HealthView(GatewayView):
    """200 when the database, broker, every queue's worker and every chain answer; else 503 naming
    what does not."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT})
    def get(self, request):
        report = selectors.health_report()
        return Response(report.as_dict(), status=200 if report.ok else 503)


class PingView(GatewayView):
    """A trivial authenticated read: the baseline bench/api.py measures the other endpoints against."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"ok": True})


# --- API tokens ------------------------------------------------------------------------------------


class ApiTokenListView(GatewayView):
    input_serializer_class = s.ApiTokenCreateInput

    @extend_schema(responses={200: s.ApiTokenOutput(many=True)})
    def get(self, request):
        tokens = ApiToken.objects.filter(user=request.user).order_by("id")
        return Response(s.ApiTokenOutput(tokens, many=True).data)

    @extend_schema(request=s.ApiTokenCreateInput, responses={201: s.ApiTokenIssuedOutput})
    def post(self, request):
        issued = api_token_create(user=request.user, name=self.validated["name"])
        body = {**s.ApiTokenOutput(issued.token).data, "token": issued.raw}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiTokenRevokeView(GatewayView):
    input_serializer_class = EmptyInput

    @extend_schema(request=None, responses={200: s.ApiTokenOutput})
    def post(self, request, token_id: int):
        token = get_object_or_404(ApiToken, user=request.user, pk=token_id)
        return Response(s.ApiTokenOutput(api_token_revoke(token=token)).data)


# --- wallets and scopes ---------------------------------------------------------------------------


class WalletListView(GatewayView):
    input_serializer_class = s.WalletCreateInput

    @extend_schema(responses={200: s.WalletOutput(many=True)})
    def get(self, request):
        return Response(s.WalletOutput(selectors.wallets_of(request.user), many=True).data)

    @extend_schema(
        request=s.WalletCreateInput,
        responses={202: s.WalletOutput},
        description="Accepted: the signer creates the key; the wallet is `provisioning` until then.",
    )
    def post(self, request):
        wallet = wallet_create(owner=request.user, **self.validated)
        return Response(s.WalletOutput(wallet).data, status=status.HTTP_202_ACCEPTED)


class WalletDetailView(GatewayView):
    @extend_schema(responses={200: s.WalletOutput})
    def get(self, request, wallet_id: int):
        return Response(s.WalletOutput(selectors.wallet_of(request.user, wallet_id)).data)


class ScopeListView(GatewayView):
    input_serializer_class = s.ScopeGrantInput

    @extend_schema(responses={200: s.ScopeOutput(many=True)})
    def get(self, request, wallet_id: int):
        wallet = selectors.wallet_of(request.user, wallet_id)
        scopes = selectors.scopes_of(request.user, wallet=wallet)
        return Response(s.ScopeOutput([selectors.scope_view(x) for x in scopes], many=True).data)

    @extend_schema(request=s.ScopeGrantInput, responses={201: s.ScopeOutput})
    def post(self, request, wallet_id: int):
        wallet = selectors.wallet_of(request.user, wallet_id)
        scope = scope_grant(wallet=wallet, **self.validated)
        scope = selectors.scope_of(request.user, scope.pk)
        return Response(s.ScopeOutput(selectors.scope_view(scope)).data, status=status.HTTP_201_CREATED)


class ScopeRevokeView(GatewayView):
    input_serializer_class = EmptyInput

    @extend_schema(
        request=None,
        responses={200: s.ScopeOutput},
        description="Effective at once, also for trades not yet signed: the signer re-reads scopes.",
    )
    def post(self, request, scope_id: int):
        scope = scope_revoke(scope=selectors.scope_of(request.user, scope_id))
        return Response(s.ScopeOutput(selectors.scope_view(scope)).data)


# --- trades -----------------------------------------------------------------------------------------

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=True,
    pattern=IDEMPOTENCY_KEY_PATTERN,
    description="Same key and body: the same trade again. Same key, other body: 409.",
)


def _same_inputs(trade: Trade, wanted: dict) -> bool:
    return (
        trade.wallet_id == wanted["wallet"].pk
        and trade.dex_id == wanted["dex"].pk
        and list(trade.path) == list(wanted["path"])
        and int(trade.amount_in) == wanted["amount_in"]
        and trade.slippage_bps == wanted["slippage_bps"]
        and (None if trade.min_amount_out is None else int(trade.min_amount_out)) == wanted["min_amount_out"]
        and trade.deadline == wanted["deadline"].replace(microsecond=0)
    )


# Trade bodies are the selectors' plain dicts, rendered as they are: the output serializers document
# them in the schema (and schemathesis checks every response against it), but running DRF's
# field-by-field serialization on a nested timeline tripled the detail endpoint's latency.


class TradeListView(GatewayView):
    input_serializer_class = s.TradeCreateInput
    idempotency_header = True

    @extend_schema(parameters=[s.TradeListQuery], responses={200: s.TradeOutput(many=True)})
    def get(self, request):
        query = _query(s.TradeListQuery, request)
        trades = selectors.trades_of(
            request.user,
            state=query.get("state"),
            wallet_id=query.get("wallet"),
            chain_id=query.get("chain_id"),
            before_id=query.get("before"),
            limit=query["limit"],
        )
        return Response(selectors.trade_list_view(trades))

    @extend_schema(
        request=s.TradeCreateInput,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.TradeDetailOutput},
    )
    def post(self, request):
        wanted = self.validated
        submitted = trade_submit(owner=request.user, idempotency_key=self.idempotency_key, **wanted)
        if not submitted.created and not _same_inputs(submitted.trade, wanted):
            raise Conflict(
                f"{IDEMPOTENCY_HEADER} {self.idempotency_key!r} was already used for a different trade.",
                code="idempotency_key_reused",
            )
        trade = submitted.trade  # the owner's own: trade_submit was called with request.user
        headers = {} if submitted.created else {"Idempotent-Replayed": "true"}
        return Response(
            selectors.trade_detail_view(trade),
            status=status.HTTP_201_CREATED,
            headers=headers,
        )


class TradeDetailView(GatewayView):
    @extend_schema(responses={200: s.TradeDetailOutput})
    def get(self, request, trade_id: int):
        trade = selectors.trade_of(request.user, trade_id)
        return Response(selectors.trade_detail_view(trade))


CANCELLABLE = {TradeState.PENDING, TradeState.SIMULATING, TradeState.VALIDATING}


class TradeCancelView(GatewayView):
    input_serializer_class = EmptyInput

    @extend_schema(
        request=None,
        responses={200: s.TradeDetailOutput},
        description="Before SIGNING only; later a trade can no longer be cancelled here (409).",
    )
    def post(self, request, trade_id: int):
        trade = selectors.trade_of(request.user, trade_id)
        if trade.state != TradeState.CANCELLED:
            trade = trade_cancel(trade_id=trade.pk) or trade
        if trade.state != TradeState.CANCELLED:
            raise Conflict(f"A trade in {trade.state} cannot be cancelled.", code="not_cancellable")
        trade = selectors.trade_of(request.user, trade.pk)
        return Response(selectors.trade_detail_view(trade))


class TradeUpdatesView(GatewayView):
    """Long-poll for the owner's trade events after a cursor (event ids, which only grow).

    Long-poll rather than server-sent events: an SSE stream holds a gunicorn worker or thread for as
    long as an app stays open and needs streaming through every proxy (React Native has no built-in
    EventSource); a long-poll holds one for at most API_LONGPOLL_MAX_SECONDS, answers as soon as
    something happens, and the cursor makes reconnects lossless. See docs/api.md for the threaded
    gunicorn workers this wants."""

    @extend_schema(parameters=[s.TradeUpdatesQuery], responses={200: s.TradeUpdatesOutput})
    def get(self, request):
        query = _query(s.TradeUpdatesQuery, request)
        if "after" not in query:
            return Response({"cursor": selectors.latest_event_id(), "events": []})
        wait = min(query.get("timeout", settings.API_LONGPOLL_MAX_SECONDS), settings.API_LONGPOLL_MAX_SECONDS)
        deadline = time.monotonic() + wait
        while True:
            events = selectors.trade_events_after(
                request.user, after_id=query["after"], trade_id=query.get("trade")
            )
            if events or time.monotonic() >= deadline:
                break
            # Give the connection back between polls rather than idling inside a transaction.
            connection.close_if_unusable_or_obsolete()
            time.sleep(settings.API_LONGPOLL_INTERVAL_SECONDS)
        cursor = events[-1]["id"] if events else query["after"]
        return Response(s.TradeUpdatesOutput({"cursor": cursor, "events": events}).data)


# --- registry (read) -----------------------------------------------------------------------------------


class ChainListView(GatewayView):
    @extend_schema(responses={200: s.ChainOutput(many=True)})
    def get(self, request):
        return Response(s.ChainOutput(Chain.objects.order_by("chain_id"), many=True).data)


class TokenListView(GatewayView):
    @extend_schema(parameters=[s.ChainFilterQuery], responses={200: s.TokenOutput(many=True)})
    def get(self, request):
        query = _query(s.ChainFilterQuery, request)
        tokens = Token.objects.select_related("chain").order_by("chain__chain_id", "symbol")
        if "chain_id" in query:
            tokens = tokens.filter(chain__chain_id=query["chain_id"])
        return Response(s.TokenOutput(tokens, many=True).data)


class DexListView(GatewayView):
    @extend_schema(parameters=[s.ChainFilterQuery], responses={200: s.DexOutput(many=True)})
    def get(self, request):
        query = _query(s.ChainFilterQuery, request)
        dexes = Dex.objects.select_related("chain").order_by("chain__chain_id", "name")
        if "chain_id" in query:
            dexes = dexes.filter(chain__chain_id=query["chain_id"])
        return Response(s.DexOutput(dexes, many=True).data)
