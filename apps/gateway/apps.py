from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"

    def ready(self) -> None:
        # The system check only; the OpenAPI auth extension registers with the URLs (apps/gateway/urls.py),
        # so processes that serve no URL (the workers, beat) never import DRF's schema machinery.
        from apps.gateway import checks  # noqa: F401
