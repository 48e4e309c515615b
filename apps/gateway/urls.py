"""Routes under /api/v1/: the gateway's own (health, ping, API tokens) and each app's api/urls.py.
Every view is a GatewayView, so every write route runs validation_2026
(tests/gateway/test_validation_routes.py enumerates them)."""

from django.urls import include, path

from apps.gateway import (
    converters,  # noqa: F401 - registers <id:...> before any app's routes
    schema,  # noqa: F401 - registers the OpenAPI auth extension before any schema is made
)
from apps.gateway.api import views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("ping", views.PingView.as_view(), name="ping"),
    path("auth/tokens", views.ApiTokenListView.as_view(), name="api-tokens"),
    path("auth/tokens/<id:token_id>/revoke", views.ApiTokenRevokeView.as_view(), name="api-token-revoke"),
    path("", include("apps.wallets.api.urls")),
    path("", include("apps.trades.api.urls")),
    path("", include("apps.chain.api.urls")),
    path("", include("apps.strategies.api.urls")),
    path("market/", include("apps.market.api.urls")),
    path("ml/", include("apps.ml.api.urls")),
]
