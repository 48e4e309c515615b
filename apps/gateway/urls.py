"""Routes under /api/v1/. Every view is a GatewayView, so every write route runs validation_2026
(tests/gateway/test_validation_routes.py enumerates them)."""

from django.urls import include, path, register_converter

from apps.gateway import schema  # noqa: F401 - registers the OpenAPI auth extension before any schema is made
from apps.gateway.api import views


class IdConverter:
    """A database id: at most 18 digits, so it always fits a bigint (no 500 on a huge number)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(int(value))


register_converter(IdConverter, "id")

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("ping", views.PingView.as_view(), name="ping"),
    path("auth/tokens", views.ApiTokenListView.as_view(), name="api-tokens"),
    path("auth/tokens/<id:token_id>/revoke", views.ApiTokenRevokeView.as_view(), name="api-token-revoke"),
    path("wallets", views.WalletListView.as_view(), name="wallets"),
    path("wallets/<id:wallet_id>", views.WalletDetailView.as_view(), name="wallet"),
    path("wallets/<id:wallet_id>/scopes", views.ScopeListView.as_view(), name="wallet-scopes"),
    path("scopes/<id:scope_id>/revoke", views.ScopeRevokeView.as_view(), name="scope-revoke"),
    path("trades", views.TradeListView.as_view(), name="trades"),
    path("trades/updates", views.TradeUpdatesView.as_view(), name="trade-updates"),
    path("trades/<id:trade_id>", views.TradeDetailView.as_view(), name="trade"),
    path("trades/<id:trade_id>/cancel", views.TradeCancelView.as_view(), name="trade-cancel"),
    path("chains", views.ChainListView.as_view(), name="chains"),
    path("tokens", views.TokenListView.as_view(), name="tokens"),
    path("dexes", views.DexListView.as_view(), name="dexes"),
    path("market/", include("apps.market.api.urls")),
    path("ml/", include("apps.ml.api.urls")),
]
