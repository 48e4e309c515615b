from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"

    def ready(self) -> None:
        from apps.gateway import checks, schema  # noqa: F401 - register the system check and the OpenAPI auth extension
