"""Trade endpoints: thin. The write is validated by validation_2026 (GatewayView) before the handler
runs and calls one engine service; reads go through apps.trades.selectors, which filter by owner, so
another owner's trade is a 404. A reused idempotency key with other inputs is the engine's
IdempotencyConflict, answered 409 by apps.gateway.errors.

Not routed by this app: apps/gateway owns the URL map (see apps/trades/api/urls.py)."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from apps.gateway.api.base import Conflict, GatewayView, validated_query
from apps.gateway.models import TokenLevel
from apps.gateway.validation_2026 import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN, EmptyInput
from apps.trades import selectors
from apps.trades.api import serializers as s
from apps.trades.models import CANCELLABLE, OwnerRequest, TradeState
from apps.trades.real_money_transaction_manager import trade_submit
from apps.trades.services import owner_request_create

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=True,
    pattern=IDEMPOTENCY_KEY_PATTERN,
    description="Same key and body: the same trade again. Same key, other body: 409.",
)


# Trade bodies are the selectors' plain dicts, rendered as they are: the output serializers document
# them in the schema (and schemathesis checks every response against it), but running DRF's
# field-by-field serialization on a nested timeline tripled the detail endpoint's latency.


class TradeListView(GatewayView):
    input_serializer_class = s.TradeCreateInput
    idempotency_header = True
    required_levels = {"GET": TokenLevel.READ, "POST": TokenLevel.TRADE}

    @extend_schema(parameters=[s.TradeListQuery], responses={200: s.TradeOutput(many=True)})
    def get(self, request):
        query = validated_query(s.TradeListQuery, request)
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
        submitted = trade_submit(owner=request.user, idempotency_key=self.idempotency_key, **self.validated)
        headers = {} if submitted.created else {"Idempotent-Replayed": "true"}
        return Response(
            # The owner's own trade: trade_submit was called with request.user.
            selectors.trade_detail_view(submitted.trade),
            status=status.HTTP_201_CREATED,
            headers=headers,
        )


class TradeDetailView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(responses={200: s.TradeDetailOutput})
    def get(self, request, trade_id: int):
        trade = selectors.trade_of(request.user, trade_id)
        return Response(selectors.trade_detail_view(trade))


class TradeCancelView(GatewayView):
    input_serializer_class = EmptyInput
    required_levels = {"POST": TokenLevel.TRADE}

    @extend_schema(
        request=None,
        responses={202: s.TradeCancelOutput, 200: s.TradeCancelOutput},
        description=(
            "Asks the engine to cancel the trade (before SIGNING only): 202 with the request and the "
            "trade as it is now; the engine cancels it moments later (the trade's timeline gets a "
            "`cancel` event, or `cancel_refused` if it reached SIGNING first). 200 if it is already "
            "cancelled; 409 `not_cancellable` if it is past PENDING, SIMULATING and VALIDATING."
        ),
    )
    def post(self, request, trade_id: int):
        # The web process may not move a trade (its database role has no UPDATE on trades): it records
        # the request, which the engine carries out (apps.trades.services, docs/api.md).
        trade = selectors.trade_of(request.user, trade_id)
        if trade.state == TradeState.CANCELLED:
            latest = trade.owner_requests.filter(kind=OwnerRequest.Kind.CANCEL).order_by("-pk").first()
            return Response(s.trade_cancel_view(latest, selectors.trade_detail_view(trade)))
        if trade.state not in CANCELLABLE:
            raise Conflict(f"A trade in {trade.state} cannot be cancelled.", code="not_cancellable")
        asked = owner_request_create(
            trade=trade,
            kind=OwnerRequest.Kind.CANCEL,
            requested_by=request.user,
            reason="cancelled by the owner",
        )
        return Response(
            s.trade_cancel_view(asked, selectors.trade_detail_view(trade)), status=status.HTTP_202_ACCEPTED
        )


class TradeUpdatesView(GatewayView):
    """Long-poll for the owner's trade events after a cursor (event ids, which only grow).

    Long-poll rather than server-sent events: an SSE stream holds a gunicorn worker or thread for as
    long as an app stays open and needs streaming through every proxy (React Native has no built-in
    EventSource); a long-poll holds one for at most API_LONGPOLL_MAX_SECONDS, answers as soon as
    something happens, and the cursor makes reconnects lossless. See docs/api.md for the threaded
    gunicorn workers this wants."""

    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(parameters=[s.TradeUpdatesQuery], responses={200: s.TradeUpdatesOutput})
    def get(self, request):
        query = validated_query(s.TradeUpdatesQuery, request)
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
