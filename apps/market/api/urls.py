"""Market read endpoints, for the gateway to include: path("market/", include("apps.market.api.urls"))."""

from django.urls import path

from apps.market.api import views

urlpatterns = [
    path("prices", views.MarketPriceView.as_view(), name="market-price"),
    path("history", views.MarketHistoryView.as_view(), name="market-history"),
]
