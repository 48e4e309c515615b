"""Admin pages: sources with last success, last error and calls used; mappings with the stablecoin flag."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.market.models import AssetMapping, MarketSource


def test_admin_pages_show_source_health_and_mappings(market_world, client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    MarketSource.objects.filter(slug="coinlore").update(
        last_error="coinlore: HTTP 503 after 4 attempts", last_error_at=timezone.now(), calls_month=4321
    )
    AssetMapping.objects.create(
        source=MarketSource.objects.get(slug="coincap"), token=market_world.usdc, external_id="usd-coin"
    )
    sources = client.get("/admin/market/marketsource/")
    assert sources.status_code == 200
    assert b"coinlore: HTTP 503 after 4 attempts" in sources.content
    assert b"4321" in sources.content
    mappings = client.get("/admin/market/assetmapping/")
    assert mappings.status_code == 200
    assert b"usd-coin" in mappings.content
    assert b"icon-yes" in mappings.content  # USDC is marked as a stablecoin
    for page in ("pricetick", "candle"):
        assert client.get(f"/admin/market/{page}/").status_code == 200
    assert client.get("/admin/market/pricetick/add/").status_code == 403
