"""Wallet and scope endpoints: thin. Writes are validated by validation_2026 (GatewayView) before the
handler runs; each handler calls one service and serializes the result; reads go through
apps.wallets.selectors, which filter by owner, so another owner's wallet or scope is a 404.

Not routed by this app: apps/gateway owns the URL map (see apps/wallets/api/urls.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from apps.gateway.api.base import GatewayView
from apps.gateway.models import TokenLevel
from apps.gateway.validation_2026 import EmptyInput
from apps.wallets import selectors
from apps.wallets.api import serializers as s
from apps.wallets.services import scope_propose, scope_revoke, scope_signature_attach, wallet_create


class WalletListView(GatewayView):
    input_serializer_class = s.WalletCreateInput
    required_levels = {"GET": TokenLevel.READ, "POST": TokenLevel.MANAGE}

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
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(responses={200: s.WalletOutput})
    def get(self, request, wallet_id: int):
        return Response(s.WalletOutput(selectors.wallet_of(request.user, wallet_id)).data)


class ScopeListView(GatewayView):
    input_serializer_class = s.ScopeGrantInput
    required_levels = {"GET": TokenLevel.READ, "POST": TokenLevel.MANAGE}

    @extend_schema(responses={200: s.ScopeOutput(many=True)})
    def get(self, request, wallet_id: int):
        wallet = selectors.wallet_of(request.user, wallet_id)
        scopes = selectors.scopes_of(request.user, wallet=wallet)
        return Response(s.ScopeOutput([selectors.scope_view(x) for x in scopes], many=True).data)

    @extend_schema(
        request=s.ScopeGrantInput,
        responses={201: s.ScopeOutput},
        description="Creates a PROPOSED scope, which allows nothing until its owner signs the returned "
        "`typed_data` with an authority key (eth_signTypedData_v4) and posts the signature to "
        "/scopes/{id}/signature.",
    )
    def post(self, request, wallet_id: int):
        wallet = selectors.wallet_of(request.user, wallet_id)
        scope = scope_propose(wallet=wallet, **self.validated)
        scope = selectors.scope_of(request.user, scope.pk)
        return Response(s.ScopeOutput(selectors.scope_view(scope)).data, status=status.HTTP_201_CREATED)


class ScopeRevokeView(GatewayView):
    input_serializer_class = EmptyInput
    required_levels = {"POST": TokenLevel.MANAGE}

    @extend_schema(
        request=None,
        responses={200: s.ScopeOutput},
        description="Effective at once, also for trades not yet signed: the signer re-reads scopes.",
    )
    def post(self, request, scope_id: int):
        scope = scope_revoke(scope=selectors.scope_of(request.user, scope_id))
        return Response(s.ScopeOutput(selectors.scope_view(scope)).data)


class ScopeSignatureView(GatewayView):
    input_serializer_class = s.ScopeSignatureInput
    required_levels = {"POST": TokenLevel.MANAGE}

    @extend_schema(
        request=s.ScopeSignatureInput,
        responses={200: s.ScopeOutput},
        description="Attach the owner's signature of the scope's typed_data. Checked at once: it must "
        "recover, over the scope's own fields, to one of the owner's authority keys; otherwise a 400 "
        "naming `signature`, and the scope stays proposed.",
    )
    def post(self, request, scope_id: int):
        scope = scope_signature_attach(scope=selectors.scope_of(request.user, scope_id), **self.validated)
        return Response(s.ScopeOutput(selectors.scope_view(scope)).data)
