"""Wallet and scope endpoints: thin. Writes are validated by validation_2026 (GatewayView) before the
handler runs; each handler calls one service and serializes the result; reads go through
apps.wallets.selectors, which filter by owner, so another owner's wallet or scope is a 404.

Not routed by this app: apps/gateway owns the URL map (see apps/wallets/api/urls.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from apps.gateway.api.base import GatewayView
from apps.gateway.validation_2026 import EmptyInput
from apps.wallets import selectors
from apps.wallets.api import serializers as s
from apps.wallets.services import scope_grant, scope_revoke, wallet_create


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
