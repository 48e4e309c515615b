"""The sources Custos knows: CoinCap and CoinLore (independent, USD) and the DEX pools themselves (spot, TWAP)."""

from django.db import migrations

SOURCES = [
    {"slug": "coincap", "name": "CoinCap", "kind": "api", "independent": True},
    {"slug": "coinlore", "name": "CoinLore", "kind": "api", "independent": True},
    {"slug": "onchain", "name": "On-chain (Uniswap V2 pools)", "kind": "onchain", "independent": False},
    {"slug": "onchain-twap", "name": "On-chain TWAP (Uniswap V2)", "kind": "onchain", "independent": False},
]


def create_sources(apps, schema_editor):
    source = apps.get_model("market", "MarketSource")
    for row in SOURCES:
        source.objects.get_or_create(slug=row["slug"], defaults=row)


class Migration(migrations.Migration):
    dependencies = [("market", "0001_initial")]

    operations = [migrations.RunPython(create_sources, migrations.RunPython.noop)]
