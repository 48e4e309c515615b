"""Strategy endpoints: thin. Writes are validated by validation_2026 (GatewayView) before the handler
runs and call one service; reads go through apps.strategies.selectors, which filter by owner (another
owner's strategy is a 404). Reads need a `read` token, every write a `trade` one.

Not routed by this app: apps/gateway owns the URL map (see apps/strategies/api/urls.py)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from apps.gateway.api.base import Conflict, GatewayView, validated_query
from apps.gateway.models import TokenLevel
from apps.gateway.validation_2026 import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN, EmptyInput, field_error
from apps.strategies import selectors
from apps.strategies import services as svc
from apps.strategies.api import serializers as s
from apps.strategies.kinds import StrategyInputError

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=True,
    pattern=IDEMPOTENCY_KEY_PATTERN,
    description="Same key and body: the same strategy again. Same key, other body: 409.",
)


def _conflict(exc: svc.StrategyStateError) -> Conflict:
    return Conflict(str(exc), code="strategy_ended")


class StrategyListView(GatewayView):
    input_serializer_class = s.StrategyCreateInput
    idempotency_header = True
    required_levels = {"GET": TokenLevel.READ, "POST": TokenLevel.TRADE}

    @extend_schema(parameters=[s.StrategyListQuery], responses={200: s.StrategyOutput(many=True)})
    def get(self, request):
        query = validated_query(s.StrategyListQuery, request)
        strategies = selectors.strategies_of(
            request.user, state=query.get("state"), before_id=query.get("before"), limit=query["limit"]
        )
        return Response([selectors.strategy_view(strategy) for strategy in strategies])

    @extend_schema(
        request=s.StrategyCreateInput,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.StrategyDetailOutput},
        description=(
            "Creates an ACTIVE strategy; its runs are ordinary trades, judged by the same engine and "
            "signer scope check as any other. Every invalid parameter is a 400 naming the field "
            "(`params.<name>` for a kind's parameter) and nothing is written."
        ),
    )
    def post(self, request):
        try:
            created = svc.strategy_create(
                owner=request.user, idempotency_key=self.idempotency_key, **self.validated
            )
        except StrategyInputError as exc:  # a change between validation and the write
            raise field_error(exc.field, exc.message) from exc
        except svc.StrategyConflict as exc:
            raise Conflict(
                f"{IDEMPOTENCY_HEADER} {exc.key!r} was already used for a different strategy.",
                code="idempotency_key_reused",
            ) from exc
        headers = {} if created.created else {"Idempotent-Replayed": "true"}
        return Response(
            selectors.strategy_detail_view(created.strategy), status=status.HTTP_201_CREATED, headers=headers
        )


class StrategyDetailView(GatewayView):
    input_serializer_class = s.StrategyCapsInput
    required_levels = {"GET": TokenLevel.READ, "PATCH": TokenLevel.TRADE}

    @extend_schema(responses={200: s.StrategyDetailOutput})
    def get(self, request, strategy_id: int):
        strategy = selectors.strategy_of(request.user, strategy_id)
        return Response(selectors.strategy_detail_view(strategy))

    @extend_schema(
        request=s.StrategyCapsInput,
        responses={200: s.StrategyDetailOutput},
        description="Lowers caps (or brings the expiry forward); a higher value is a 400 naming the field.",
    )
    def patch(self, request, strategy_id: int):
        try:
            caps = dict(self.validated)
            strategy = svc.strategy_caps_lower(strategy=caps.pop("strategy"), **caps)
        except StrategyInputError as exc:
            raise field_error(exc.field, exc.message) from exc
        except svc.StrategyStateError as exc:
            raise _conflict(exc) from exc
        return Response(selectors.strategy_detail_view(strategy))


class StrategyPauseView(GatewayView):
    input_serializer_class = EmptyInput
    required_levels = {"POST": TokenLevel.TRADE}

    @extend_schema(
        request=None,
        responses={200: s.StrategyDetailOutput},
        description="ACTIVE -> PAUSED (a trade already on its way goes on). 409 once the strategy has ended.",
    )
    def post(self, request, strategy_id: int):
        strategy = selectors.strategy_of(request.user, strategy_id)
        try:
            strategy = svc.strategy_pause(strategy=strategy)
        except svc.StrategyStateError as exc:
            raise _conflict(exc) from exc
        return Response(selectors.strategy_detail_view(strategy))


class StrategyResumeView(GatewayView):
    input_serializer_class = s.StrategyResumeInput
    required_levels = {"POST": TokenLevel.TRADE}

    @extend_schema(
        request=s.StrategyResumeInput,
        responses={200: s.StrategyDetailOutput},
        description=(
            "PAUSED -> ACTIVE, due at its next time without catching up on the runs missed while paused, "
            "unless `catch_up` is true. 409 once the strategy has ended."
        ),
    )
    def post(self, request, strategy_id: int):
        strategy = selectors.strategy_of(request.user, strategy_id)
        try:
            strategy = svc.strategy_resume(strategy=strategy, catch_up=self.validated["catch_up"])
        except svc.StrategyStateError as exc:
            raise _conflict(exc) from exc
        return Response(selectors.strategy_detail_view(strategy))


class StrategyCancelView(GatewayView):
    input_serializer_class = EmptyInput
    required_levels = {"POST": TokenLevel.TRADE}

    @extend_schema(
        request=None,
        responses={200: s.StrategyDetailOutput},
        description="ACTIVE or PAUSED -> CANCELLED, for good (a trade already on its way goes on).",
    )
    def post(self, request, strategy_id: int):
        strategy = selectors.strategy_of(request.user, strategy_id)
        try:
            strategy = svc.strategy_cancel(strategy=strategy)
        except svc.StrategyStateError as exc:
            raise _conflict(exc) from exc
        return Response(selectors.strategy_detail_view(strategy))


class StrategyRunsView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(parameters=[s.StrategyRunsQuery], responses={200: s.StrategyRunOutput(many=True)})
    def get(self, request, strategy_id: int):
        strategy = selectors.strategy_of(request.user, strategy_id)
        query = validated_query(s.StrategyRunsQuery, request)
        runs = selectors.runs_of(strategy, before=query.get("before"), limit=query["limit"])
        return Response(selectors.runs_view(strategy, runs))
