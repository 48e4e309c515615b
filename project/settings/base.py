"""Every Custos setting, each with a safe default, read from one django-environ `env`.

Precedence: the process environment, then `var/env` (written by `make services` when it had to start
a private PostgreSQL/Redis), then `.env` (the owner's file), then the defaults below.
"""

from pathlib import Path

import environ
from psycopg import IsolationLevel

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# read_env never overrides a variable that is already set, so the first file read wins.
for _name in ("var/env", ".env"):
    if (BASE_DIR / _name).is_file():
        environ.Env.read_env(BASE_DIR / _name)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The development default is only ever used on a loopback bind; production.py refuses it.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
# `make run` creates a demo admin login; never enable this on a machine others can reach.
ALLOW_DEMO_ADMIN = env.bool("ALLOW_DEMO_ADMIN", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    # Without autodiscovery: project/urls.py loads the admin modules, so only the processes that
    # serve URLs (web, tests) import the admin and the gateway services it uses; workers stay smaller.
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "project",
    "apps.chain",
    "apps.wallets",
    "apps.trades",
    "apps.signing",
    "apps.watcher",
    "apps.market",
    "apps.ml",
    "apps.strategies",
    "apps.gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Every connection runs SERIALIZABLE with server-side timeouts so a stuck statement, lock wait or
# abandoned transaction cannot hold rows forever. Services own their transactions (no
# ATOMIC_REQUESTS); project.db.serializable retries serialization failures.
DB_STATEMENT_TIMEOUT_MS = env.int("DB_STATEMENT_TIMEOUT_MS", default=15_000)
DB_LOCK_TIMEOUT_MS = env.int("DB_LOCK_TIMEOUT_MS", default=5_000)
DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = env.int("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default=60_000)

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/custos"),
}
# Each process connects as its own least-privilege role (manage.py setup_db_roles creates them);
# empty = the DATABASE_URL user (migrations and development tools).
DB_ROLE = env.str("DB_ROLE", default="")
if DB_ROLE:
    DATABASES["default"]["USER"] = DB_ROLE
    DATABASES["default"]["PASSWORD"] = env.str("DB_ROLE_PASSWORD", default="")
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {}).update(
    {
        "isolation_level": IsolationLevel.SERIALIZABLE,
        "options": (
            "-c default_transaction_isolation=serializable"
            f" -c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
            f" -c lock_timeout={DB_LOCK_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={DB_IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        ),
    }
)
DATABASES["default"]["TEST"] = {"NAME": env.str("DATABASE_TEST_NAME", default="test_custos")}

# Serialization-failure retries (project.db.serializable).
DB_SERIALIZABLE_MAX_ATTEMPTS = env.int("DB_SERIALIZABLE_MAX_ATTEMPTS", default=8)
DB_SERIALIZABLE_BACKOFF_BASE_MS = env.int("DB_SERIALIZABLE_BACKOFF_BASE_MS", default=5)
DB_SERIALIZABLE_BACKOFF_CAP_MS = env.int("DB_SERIALIZABLE_BACKOFF_CAP_MS", default=500)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# --- Redis, cache and Celery ----------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("CACHE_URL", default=REDIS_URL),
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
# Longest task hard limit; the broker's visibility timeout must stay above it (celery_app checks).
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=120)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=150)
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
# Run tasks in-process (only a few end-to-end tests and nothing in production).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# A worker is "live" for /api/v1/health while its heartbeat key is younger than this.
WORKER_HEARTBEAT_SECONDS = env.int("WORKER_HEARTBEAT_SECONDS", default=10)
WORKER_HEARTBEAT_TTL_SECONDS = env.int("WORKER_HEARTBEAT_TTL_SECONDS", default=30)
# Concurrency per worker process (child processes of the prefork pool). The execution queue's steps
# mostly wait on PostgreSQL and the node, so it runs more children than a small machine has cores:
# on 2 cores, bench/pipeline.py measured 26.7-29.8 swaps/s with 4 against 25.4-28.5 with 2.
WORKER_CONCURRENCY_EXECUTION = env.int("WORKER_CONCURRENCY_EXECUTION", default=4)
WORKER_CONCURRENCY_SIGNER = env.int("WORKER_CONCURRENCY_SIGNER", default=2)
WORKER_CONCURRENCY_WATCHER = env.int("WORKER_CONCURRENCY_WATCHER", default=1)
WORKER_CONCURRENCY_MARKET = env.int("WORKER_CONCURRENCY_MARKET", default=1)
WORKER_CONCURRENCY_ML = env.int("WORKER_CONCURRENCY_ML", default=1)
# Pool of the watcher, market and ml workers: prefork (a parent and its children) or solo (tasks
# run in the worker process itself: one process less, no hard time limit). Execution and signer
# are always prefork.
WORKER_POOL_WATCHER = env.str("WORKER_POOL_WATCHER", default="prefork")
WORKER_POOL_MARKET = env.str("WORKER_POOL_MARKET", default="prefork")
WORKER_POOL_ML = env.str("WORKER_POOL_ML", default="prefork")
# The signer's child process is replaced after this many tasks, so a key a backend had to load
# never outlives the task that used it.
SIGNER_MAX_TASKS_PER_CHILD = env.int("SIGNER_MAX_TASKS_PER_CHILD", default=1)
# At most this many waiting trades are judged and signed in one signer transaction (1: one by one).
SIGNER_BATCH_SIZE = env.int("SIGNER_BATCH_SIZE", default=64)
# How often beat probes every RPC endpoint (chain id, head, latency).
RPC_PROBE_INTERVAL_SECONDS = env.int("RPC_PROBE_INTERVAL_SECONDS", default=30)

# --- Chains ---------------------------------------------------------------------------------
# The dev chain `manage.py devchain up` starts and the chain the RPC-using workers check at start.
DEVCHAIN_HOST = env.str("DEVCHAIN_HOST", default="127.0.0.1")
DEVCHAIN_PORT = env.int("DEVCHAIN_PORT", default=8545)
DEVCHAIN_CHAIN_ID = env.int("DEVCHAIN_CHAIN_ID", default=31337)
# Interval mining for `devchain up`, in milliseconds (0 = automine: one block per transaction).
DEVCHAIN_BLOCK_MS = env.int("DEVCHAIN_BLOCK_MS", default=1000)
# Chain ids the execution and watcher workers must find at their RPC endpoints before starting.
CHAIN_IDS = env.list("CHAIN_IDS", cast=int, default=[DEVCHAIN_CHAIN_ID])
# RPC endpoints kept in .env as a JSON list, written to the database by `manage.py
# rpc_endpoints_sync` and before an RPC-using worker starts (matched by chain and URL; endpoints added
# in the admin are left alone). Fields: chain_id, name, url (required); kind (private|public),
# priority, weight, rate_limit_per_second, active.
RPC_ENDPOINTS = env.json("RPC_ENDPOINTS", default=[])
RPC_TIMEOUT_SECONDS = env.float("RPC_TIMEOUT_SECONDS", default=10.0)
# Health probes use a short timeout so a dead endpoint cannot stall /api/v1/health.
HEALTH_RPC_TIMEOUT_SECONDS = env.float("HEALTH_RPC_TIMEOUT_SECONDS", default=2.0)

# --- Key custody (credentials are read only by the signer process) ---------------------------
# Backend for new wallets: keystore (development default), pkcs11 or vault.
KEY_BACKEND_DEFAULT = env.str("KEY_BACKEND_DEFAULT", default="keystore")
# pkcs11: any PKCS#11 module; SoftHSM2 in development (make services initialises the token).
SOFTHSM2_CONF = env.str("SOFTHSM2_CONF", default=str(BASE_DIR / "var" / "softhsm" / "softhsm2.conf"))
PKCS11_MODULE = env.str("PKCS11_MODULE", default="/usr/lib/softhsm/libsofthsm2.so")
PKCS11_TOKEN_LABEL = env.str("PKCS11_TOKEN_LABEL", default="custos-dev")
PKCS11_PIN_FILE = env.str("PKCS11_PIN_FILE", default=str(BASE_DIR / "var" / "secrets" / "hsm.pin"))
# keystore: Ethereum V3 keystore files (scrypt) and the file holding their passphrase.
KEYSTORE_DIR = env.str("KEYSTORE_DIR", default=str(BASE_DIR / "var" / "keystore"))
KEYSTORE_PASSPHRASE_FILE = env.str(
    "KEYSTORE_PASSPHRASE_FILE", default=str(BASE_DIR / "var" / "secrets" / "keystore.pass")
)
# scrypt cost for new keystore files (2**18 is geth's standard; lower only for tests).
KEYSTORE_SCRYPT_N = env.int("KEYSTORE_SCRYPT_N", default=262144)
# vault: the owner's self-hosted HashiCorp Vault, keys in KV v2 at VAULT_KV_MOUNT/VAULT_KV_PREFIX.
VAULT_ADDR = env.str("VAULT_ADDR", default="http://127.0.0.1:8200")
VAULT_AUTH_METHOD = env.str("VAULT_AUTH_METHOD", default="approle")  # approle or token
VAULT_TOKEN_FILE = env.str("VAULT_TOKEN_FILE", default="")
VAULT_ROLE_ID = env.str("VAULT_ROLE_ID", default="")
VAULT_SECRET_ID_FILE = env.str("VAULT_SECRET_ID_FILE", default="")
VAULT_KV_MOUNT = env.str("VAULT_KV_MOUNT", default="secret")
VAULT_KV_PREFIX = env.str("VAULT_KV_PREFIX", default="custos/keys")
VAULT_TIMEOUT_SECONDS = env.float("VAULT_TIMEOUT_SECONDS", default=5.0)
# Renew the Vault token when less than this many seconds of its TTL remain.
VAULT_RENEW_BELOW_SECONDS = env.int("VAULT_RENEW_BELOW_SECONDS", default=300)

# --- Scope and signing rules ----------------------------------------------------------------
# A swap's deadline may lie at most this far after the moment it is checked.
MAX_TRADE_DEADLINE_SECONDS = env.int("MAX_TRADE_DEADLINE_SECONDS", default=3600)
# A replacement (gas bump or cancel) must raise both fee fields by at least this much (1000 = 10%).
REPLACEMENT_MIN_BUMP_BPS = env.int("REPLACEMENT_MIN_BUMP_BPS", default=1000)

# --- Trade engine ---------------------------------------------------------------------------
# Gas limit = simulated gas plus this margin.
GAS_LIMIT_MARGIN_PERCENT = env.int("GAS_LIMIT_MARGIN_PERCENT", default=20)
# Added to a swap's gas limit: a swap estimated at the pinned block and mined in a later one pays
# for the pair's price-accumulator writes the estimate did not include. Unused gas is not charged.
SWAP_GAS_HEADROOM = env.int("SWAP_GAS_HEADROOM", default=50_000)
# Gas limit for a swap whose gas the node cannot estimate with the approval's state override
# (Hardhat): the call itself is still simulated. A V2 two-token swap uses about 140k.
SWAP_GAS_WITHOUT_ESTIMATE = env.int("SWAP_GAS_WITHOUT_ESTIMATE", default=250_000)
# Gas limit of an approve the simulation did not estimate: the allowance it saw was enough, but another
# in-flight trade of the wallet will spend it first. A standard ERC-20's zero-to-nonzero allowance
# write uses about 46k; unused gas is not charged.
APPROVE_GAS_WITHOUT_ESTIMATE = env.int("APPROVE_GAS_WITHOUT_ESTIMATE", default=80_000)
# Validations of one wallet queue for its nonce cursor; whoever holds it judges up to this many of
# the wallet's waiting trades in one transaction (each in its own savepoint).
VALIDATE_BATCH_SIZE = env.int("VALIDATE_BATCH_SIZE", default=16)
# A non-terminal trade untouched this long has its step re-enqueued by recover_stalled_trades.
TRADE_STALL_SECONDS = env.int("TRADE_STALL_SECONDS", default=60)
# How many times in a row the holder of a wallet's lock (its validator, its broadcaster) tries a
# failed round again in place, after a short pause, when the error heals (contention, an RPC error),
# before it lets go and its task is retried: the wallet's other trades wait on that holder.
HOLDER_RETRIES_IN_PLACE = env.int("HOLDER_RETRIES_IN_PLACE", default=5)
# How many times an engine step that met contention (or a nonce one step ahead) runs again in its
# own task, after a pause of 50-400 ms, before its task is retried through the queue (to the back,
# behind a whole burst).
STEP_RETRIES_IN_PLACE = env.int("STEP_RETRIES_IN_PLACE", default=3)
# A proposed scope's fee budget per transaction, when the owner gives none: its max fee per gas
# times this much gas (a V2 swap with an approve uses about 200,000).
SCOPE_FEE_BUDGET_DEFAULT_GAS = env.int("SCOPE_FEE_BUDGET_DEFAULT_GAS", default=600_000)
# A broadcast transaction unmined after this many blocks gets a replacement with both fees raised
# by REPLACEMENT_BUMP_BPS (1250 = 12.5%), capped by the scope.
REPLACE_AFTER_BLOCKS = env.int("REPLACE_AFTER_BLOCKS", default=5)
REPLACEMENT_BUMP_BPS = env.int("REPLACEMENT_BUMP_BPS", default=1250)
# How often beat checks receipts of every CONFIRMING trade and recovers stalled ones.
TRADE_TICK_SECONDS = env.int("TRADE_TICK_SECONDS", default=2)
# A trades.tick still running after this long is presumed dead and the next tick may start.
TRADE_TICK_LOCK_SECONDS = env.int("TRADE_TICK_LOCK_SECONDS", default=120)

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Custos API",
    "DESCRIPTION": "Self-hosted, non-custodial DEX trade executor.",
    "VERSION": "1.0.0",
}

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"scrub_keys": {"()": "apps.signing.log_filters.KeyMaterialFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["scrub_keys"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # One line per HTTP request would drown the log (every RPC call is one).
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# --- chain truth (issue 5) ------------------------------------------------------------------
# An endpoint whose head is more than this many blocks behind the best one is "lagging".
RPC_LAG_BLOCKS = env.int("RPC_LAG_BLOCKS", default=3)
# Unreachable endpoints are retried after base * 2**(failures-1) seconds, capped.
RPC_BACKOFF_BASE_SECONDS = env.float("RPC_BACKOFF_BASE_SECONDS", default=1.0)
RPC_BACKOFF_MAX_SECONDS = env.float("RPC_BACKOFF_MAX_SECONDS", default=60.0)
# How long a rate-limited endpoint rests when its 429 carries no Retry-After.
RPC_RATE_LIMIT_DEFAULT_SECONDS = env.float("RPC_RATE_LIMIT_DEFAULT_SECONDS", default=10.0)
# JSON-RPC requests per HTTP batch (public endpoints often cap batches at 100).
RPC_BATCH_SIZE = env.int("RPC_BATCH_SIZE", default=100)
# A process re-reads its chains' endpoint list (new, removed, re-ordered endpoints) at most this
# often; an endpoint saved in the same process is seen at once.
RPC_POOL_REFRESH_SECONDS = env.float("RPC_POOL_REFRESH_SECONDS", default=5.0)
# How often beat asks the watcher to look at each chain (each chain is then ticked at its block time).
WATCHER_TICK_SECONDS = env.int("WATCHER_TICK_SECONDS", default=1)
# Stored hashes re-verified every tick below the tip (1-5 is plenty: any reorg changes the tip).
WATCHER_RECHECK_DEPTH = env.int("WATCHER_RECHECK_DEPTH", default=5)
# Deepest reorg the watcher walks back; anything deeper raises a finality alarm.
WATCHER_MAX_REORG_DEPTH = env.int("WATCHER_MAX_REORG_DEPTH", default=64)
# Canonical headers kept per chain (older ones are pruned).
WATCHER_WINDOW_BLOCKS = env.int("WATCHER_WINDOW_BLOCKS", default=256)
# The single-run lock of a chain's tick expires after this (a crashed tick cannot block forever).
WATCHER_LOCK_TTL_SECONDS = env.int("WATCHER_LOCK_TTL_SECONDS", default=60)

# --- API gateway (issue 6) ----------------------------------------------------------------------
# Requests per token (per client address before authentication) in a fixed window, counted in the
# Redis cache: "<count>/<s|min|hour>". Over the limit: 429 with Retry-After.
API_THROTTLE_RATE = env.str("API_THROTTLE_RATE", default="600/min")
# Largest accepted request body of a write (validation_2026); larger gets 413.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=16_384)
# A trade's deadline must lie at least this far ahead (and at most MAX_TRADE_DEADLINE_SECONDS).
API_MIN_DEADLINE_SECONDS = env.int("API_MIN_DEADLINE_SECONDS", default=30)
# A token's last_used_at is written at most once per this many seconds (not on every request).
API_TOKEN_LAST_USED_RESOLUTION_SECONDS = env.int("API_TOKEN_LAST_USED_RESOLUTION_SECONDS", default=60)
# GET /api/v1/trades/updates (long-poll): longest hold of a request, and how often it re-reads.
API_LONGPOLL_MAX_SECONDS = env.int("API_LONGPOLL_MAX_SECONDS", default=20)
API_LONGPOLL_INTERVAL_SECONDS = env.float("API_LONGPOLL_INTERVAL_SECONDS", default=0.5)
# The API authenticates named per-device tokens only; Django sessions serve the admin console.
REST_FRAMEWORK.update(
    {
        "DEFAULT_SCHEMA_CLASS": "apps.gateway.schema.GatewayAutoSchema",
        "DEFAULT_AUTHENTICATION_CLASSES": ["apps.gateway.auth.ApiTokenAuthentication"],
        "DEFAULT_THROTTLE_CLASSES": ["apps.gateway.throttling.TokenRateThrottle"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        "EXCEPTION_HANDLER": "apps.gateway.errors.api_exception_handler",
        # Client address for throttling before authentication: REMOTE_ADDR unless Custos runs behind
        # this many trusted reverse proxies (a spoofed X-Forwarded-For must not dodge the throttle).
        "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    }
)
INSTALLED_APPS += ["drf_spectacular_sidecar"]
# gunicorn serves the admin's and the schema UI's static files itself, straight from the installed
# apps (no collectstatic step and no second web server on a 1 GiB machine).
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "apps.gateway.static_files.StaticFilesMiddleware",
)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False
SPECTACULAR_SETTINGS.update(
    {
        "SERVE_INCLUDE_SCHEMA": False,
        "COMPONENT_SPLIT_REQUEST": True,
        "SCHEMA_PATH_PREFIX": r"/api/v1",
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
    }
)

# --- market data (issue 7) ----------------------------------------------------------------------
# CoinCap REST API (https://pro.coincap.io/api-docs): base URL, version path and the owner's free key.
COINCAP_BASE_URL = env.str("COINCAP_BASE_URL", default="https://rest.coincap.io")
COINCAP_API_VERSION = env.str("COINCAP_API_VERSION", default="v3")
COINCAP_API_KEY = env.str("COINCAP_API_KEY", default="")
# Client-side limit ("<n>/<s|min|hour>") and the free plan's monthly allowance (see docs/market.md:
# neither figure could be confirmed from CoinCap's current pages; set them from your dashboard).
COINCAP_RATE_LIMIT = env.str("COINCAP_RATE_LIMIT", default="60/min")
COINCAP_FREE_CALLS_PER_MONTH = env.int("COINCAP_FREE_CALLS_PER_MONTH", default=2500)
COINCAP_REFRESH_SECONDS = env.int("COINCAP_REFRESH_SECONDS", default=1200)
# CoinLore (https://www.coinlore.com/cryptocurrency-data-api): no key; about one request a second.
COINLORE_BASE_URL = env.str("COINLORE_BASE_URL", default="https://api.coinlore.net/api")
COINLORE_RATE_LIMIT = env.str("COINLORE_RATE_LIMIT", default="1/s")
COINLORE_FREE_CALLS_PER_MONTH = env.int("COINLORE_FREE_CALLS_PER_MONTH", default=0)
COINLORE_REFRESH_SECONDS = env.int("COINLORE_REFRESH_SECONDS", default=60)
# HTTP: per-request timeout, retries of 5xx/network errors with exponential backoff, and the longest
# a 429's Retry-After is waited out inline (longer: the source is skipped until then).
MARKET_HTTP_TIMEOUT_SECONDS = env.float("MARKET_HTTP_TIMEOUT_SECONDS", default=5.0)
MARKET_HTTP_RETRIES = env.int("MARKET_HTTP_RETRIES", default=3)
MARKET_HTTP_BACKOFF_SECONDS = env.float("MARKET_HTTP_BACKOFF_SECONDS", default=0.5)
MARKET_RETRY_AFTER_MAX_WAIT_SECONDS = env.float("MARKET_RETRY_AFTER_MAX_WAIT_SECONDS", default=5.0)
# Identical requests within this many seconds are answered from the Redis cache.
MARKET_CACHE_TTL_SECONDS = env.int("MARKET_CACHE_TTL_SECONDS", default=30)
# Asset ids per request (both APIs take a comma-separated list).
MARKET_IDS_PER_REQUEST = env.int("MARKET_IDS_PER_REQUEST", default=50)
# Reference price: ticks older than this are stale; fresh sources further apart than this (bps of
# their median) are divergent; fewer fresh sources than this is "no independent price".
MARKET_MAX_PRICE_AGE_SECONDS = env.int("MARKET_MAX_PRICE_AGE_SECONDS", default=300)
MARKET_MAX_DIVERGENCE_BPS = env.int("MARKET_MAX_DIVERGENCE_BPS", default=200)
MARKET_MIN_FRESH_SOURCES = env.int("MARKET_MIN_FRESH_SOURCES", default=1)
# On-chain TWAP window (Uniswap V2 cumulative prices).
MARKET_TWAP_WINDOW_SECONDS = env.int("MARKET_TWAP_WINDOW_SECONDS", default=1800)
# How often beat runs the refresh (each source is then called only when its own interval passed).
MARKET_REFRESH_TICK_SECONDS = env.int("MARKET_REFRESH_TICK_SECONDS", default=60)
# History kept: raw ticks, then candles.
MARKET_TICK_RETENTION_DAYS = env.int("MARKET_TICK_RETENTION_DAYS", default=30)
MARKET_CANDLE_RETENTION_DAYS = env.int("MARKET_CANDLE_RETENTION_DAYS", default=730)

# --- ML advisory (issue 8) ------------------------------------------------------------------
# Advice only: nothing in apps.ml can start, size or sign a trade. Only the ml worker imports torch.
# False (ML_ENABLED=0, the t3.micro profile): PyTorch is not installed (requirements-ml.txt), the ml
# worker does not run and health does not expect one.
ML_ENABLED = env.bool("ML_ENABLED", default=True)
# Trained weights (with their sha256 recorded in the database) and backtest charts live here.
ML_MODEL_DIR = env.str("ML_MODEL_DIR", default=str(BASE_DIR / "var" / "ml" / "models"))
ML_BACKTEST_DIR = env.str("ML_BACKTEST_DIR", default=str(BASE_DIR / "var" / "ml" / "backtests"))
# Price history is resampled to bars of this many seconds; horizons are counted in bars.
ML_BAR_SECONDS = env.int("ML_BAR_SECONDS", default=3600)
ML_HORIZONS = env.list("ML_HORIZONS", cast=int, default=[1, 4])
# Days of stored history a training run uses (ml_train --days overrides).
ML_TRAIN_DAYS = env.int("ML_TRAIN_DAYS", default=90)
ML_TRAIN_EPOCHS = env.int("ML_TRAIN_EPOCHS", default=300)
ML_SEED = env.int("ML_SEED", default=7)
# auto = CUDA when available, else CPU; or "cpu" / "cuda".
ML_DEVICE = env.str("ML_DEVICE", default="auto")
# CPU threads torch may use (the small VPS has 2 cores shared with the rest of Custos).
ML_TORCH_THREADS = env.int("ML_TORCH_THREADS", default=1)
# Abstain when the newest price is older than this, or a feature lies more than this many training
# standard deviations away, or the model's held-out Brier skill (vs always-flat) is below the minimum.
ML_STALE_SECONDS = env.int("ML_STALE_SECONDS", default=7200)
ML_OOD_MAX_Z = env.float("ML_OOD_MAX_Z", default=6.0)
ML_MIN_SKILL = env.float("ML_MIN_SKILL", default=0.01)
# Held-out Brier skill at which a model's margin |2p-1| counts in full towards confidence.
ML_FULL_CONFIDENCE_SKILL = env.float("ML_FULL_CONFIDENCE_SKILL", default=0.10)
# How often beat asks the ml worker for fresh advice on every pair with recent prices.
ML_ADVISE_INTERVAL_SECONDS = env.int("ML_ADVISE_INTERVAL_SECONDS", default=900)

# --- strategies (docs/strategies.md) --------------------------------------------------------
# Beat sends strategies.tick this often: ended runs are learned, due strategies run.
STRATEGY_TICK_SECONDS = env.int("STRATEGY_TICK_SECONDS", default=5)
# At most this many due strategies per tick (oldest due first; the rest wait for the next tick).
STRATEGY_TICK_BATCH = env.int("STRATEGY_TICK_BATCH", default=50)
# A price-triggered strategy is judged at most this often.
STRATEGY_PRICE_CHECK_SECONDS = env.int("STRATEGY_PRICE_CHECK_SECONDS", default=5)
# Shortest interval between two runs of a recurring strategy, or two slices of a TWAP.
STRATEGY_MIN_INTERVAL_SECONDS = env.int("STRATEGY_MIN_INTERVAL_SECONDS", default=60)
# Smallest amount one run (one slice) may trade, in base units of the input token.
STRATEGY_MIN_RUN_AMOUNT = env.int("STRATEGY_MIN_RUN_AMOUNT", default=1)
# The pool TWAP window a strategy judges prices over unless it sets its own, and the shortest one
# it may set: a shorter window is cheaper to push.
STRATEGY_TWAP_WINDOW_SECONDS = env.int("STRATEGY_TWAP_WINDOW_SECONDS", default=300)
STRATEGY_MIN_TWAP_WINDOW_SECONDS = env.int("STRATEGY_MIN_TWAP_WINDOW_SECONDS", default=60)
# The independent reference price and the pool's TWAP must agree within this (bps) for a trigger
# to fire; further apart, the run is skipped as "disagreeing".
STRATEGY_MAX_PRICE_GAP_BPS = env.int("STRATEGY_MAX_PRICE_GAP_BPS", default=200)
# A chain head older than this (the node stopped following the chain) is stale: nothing fires.
STRATEGY_MAX_HEAD_AGE_SECONDS = env.int("STRATEGY_MAX_HEAD_AGE_SECONDS", default=120)
# Deadline of each run's trade, from the moment the run creates it (capped by
# MAX_TRADE_DEADLINE_SECONDS).
STRATEGY_TRADE_DEADLINE_SECONDS = env.int("STRATEGY_TRADE_DEADLINE_SECONDS", default=600)
# The OpenAPI schema names the strategy's state enum apart from the trade's (which keeps its name).
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update(
    {
        "StateEnum": "apps.trades.models.TradeState.values",
        "StrategyStateEnum": "apps.strategies.models.StrategyState.values",
    }
)
