"""Test settings: the real PostgreSQL and Redis, on a separate Redis database."""

from .base import *  # noqa: F403
from .base import env

REDIS_URL = env.str("TEST_REDIS_URL", default=REDIS_URL.rsplit("/", 1)[0] + "/9")  # noqa: F405
CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
CELERY_BROKER_URL = REDIS_URL
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests switch endpoints on and off with queryset updates (no save signal) and expect the next call
# to see it; tests/chain/test_pool.py covers the refresh interval itself.
RPC_POOL_REFRESH_SECONDS = 0
