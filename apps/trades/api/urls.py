"""Trade endpoints, for the gateway to include: path("", include("apps.trades.api.urls"))."""

from django.urls import path

from apps.gateway import converters  # noqa: F401 - registers <id:...>
from apps.trades.api import views

urlpatterns = [
    path("trades", views.TradeListView.as_view(), name="trades"),
    path("trades/updates", views.TradeUpdatesView.as_view(), name="trade-updates"),
    path("trades/<id:trade_id>", views.TradeDetailView.as_view(), name="trade"),
    path("trades/<id:trade_id>/cancel", views.TradeCancelView.as_view(), name="trade-cancel"),
]
