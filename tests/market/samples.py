"""Response bodies shaped as the CoinCap 3.0 and CoinLore documentation show them."""

from __future__ import annotations

import json
import time


def coincap_asset(asset_id: str, symbol: str, price: object, **extra) -> dict:
    row = {
        "id": asset_id,
        "rank": "1",
        "symbol": symbol,
        "name": asset_id.title(),
        "supply": "19788862.0000000000000000",
        "maxSupply": "21000000.0000000000000000",
        "marketCapUsd": "1904557171625.0952172577833640",
        "volumeUsd24Hr": "12724040223.1452060699561802",
        "priceUsd": price,
        "changePercent24Hr": "0.9762522061124105",
        "vwap24Hr": "95583.4674577419449477",
    }
    row.update(extra)
    return row


def coincap_assets(*rows: dict, timestamp_ms: int | None = None) -> str:
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return json.dumps({"data": list(rows), "timestamp": stamp})


def coinlore_ticker(ticker_id: str, symbol: str, price: object) -> dict:
    return {
        "id": ticker_id,
        "symbol": symbol,
        "name": symbol.title(),
        "nameid": symbol.lower(),
        "rank": 1,
        "price_usd": price,
        "percent_change_24h": "0.97",
        "percent_change_1h": "0.05",
        "percent_change_7d": "-1.20",
        "price_btc": "1.00",
        "market_cap_usd": "1904557171625.09",
        "volume24": 12724040223.14,
        "volume24a": 11888431232.11,
        "csupply": "19788862.00",
        "tsupply": "19788862",
        "msupply": "21000000",
    }


def coinlore_tickers(*rows: dict) -> str:
    return json.dumps(list(rows))
