"""ML read endpoints, for the gateway to include: path("ml/", include("apps.ml.api.urls"))."""

from django.urls import path

from apps.ml.api import views

urlpatterns = [
    path("advice", views.AdviceListView.as_view(), name="ml-advice"),
    path("models", views.ModelVersionListView.as_view(), name="ml-models"),
]
