"""Free market data (CoinCap, CoinLore) and on-chain prices."""
