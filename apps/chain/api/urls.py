"""Registry reads, for the gateway to include: path("", include("apps.chain.api.urls"))."""

from django.urls import path

from apps.chain.api import views

urlpatterns = [
    path("chains", views.ChainListView.as_view(), name="chains"),
    path("tokens", views.TokenListView.as_view(), name="tokens"),
    path("dexes", views.DexListView.as_view(), name="dexes"),
]
