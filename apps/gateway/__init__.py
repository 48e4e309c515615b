"""The API gateway: DRF routing, authentication, throttling, validation and health."""
