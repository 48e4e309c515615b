"""Wallet and scope endpoints, for the gateway to include: path("", include("apps.wallets.api.urls"))."""

from django.urls import path

from apps.gateway import converters  # noqa: F401 - registers <id:...>
from apps.wallets.api import views

urlpatterns = [
    path("wallets", views.WalletListView.as_view(), name="wallets"),
    path("wallets/<id:wallet_id>", views.WalletDetailView.as_view(), name="wallet"),
    path("wallets/<id:wallet_id>/scopes", views.ScopeListView.as_view(), name="wallet-scopes"),
    path("scopes/<id:scope_id>/signature", views.ScopeSignatureView.as_view(), name="scope-signature"),
    path("scopes/<id:scope_id>/revoke", views.ScopeRevokeView.as_view(), name="scope-revoke"),
]
