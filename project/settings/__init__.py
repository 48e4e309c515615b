"""Settings package: `base` declares every setting; `test` and `production` adjust it."""
