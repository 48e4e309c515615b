"""Strategy endpoints, for the gateway to include: path("", include("apps.strategies.api.urls"))."""

from django.urls import path

from apps.gateway import converters  # noqa: F401 - registers <id:...>
from apps.strategies.api import views

urlpatterns = [
    path("strategies", views.StrategyListView.as_view(), name="strategies"),
    path("strategies/<id:strategy_id>", views.StrategyDetailView.as_view(), name="strategy"),
    path("strategies/<id:strategy_id>/pause", views.StrategyPauseView.as_view(), name="strategy-pause"),
    path("strategies/<id:strategy_id>/resume", views.StrategyResumeView.as_view(), name="strategy-resume"),
    path("strategies/<id:strategy_id>/cancel", views.StrategyCancelView.as_view(), name="strategy-cancel"),
    path("strategies/<id:strategy_id>/runs", views.StrategyRunsView.as_view(), name="strategy-runs"),
]
