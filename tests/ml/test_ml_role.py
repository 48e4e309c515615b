"""The ml worker's code, connected as its own PostgreSQL role (custos_ml), turns stored prices into
advice, and PostgreSQL refuses it any write to scopes, wallets or trades."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.ml import synthetic
from apps.ml.models import Advice
from apps.ml.training import model_train
from project.db_roles import setup_roles
from tests.ml.conftest import make_scope, shifted, store_prices

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(settings.BASE_DIR)

AS_ML_WORKER = """
import json, os
import django
django.setup()
from django.db import ProgrammingError, transaction
from apps.ml import tasks
from apps.wallets.models import PermissionScope
from apps.trades.models import Trade
written = tasks.advise_all()
refused = []
for label, attempt in [
    ("scope", lambda: PermissionScope.objects.update(max_amount_in=1)),
    ("trade", lambda: Trade.objects.all().delete()),
]:
    try:
        with transaction.atomic():
            attempt()
    except ProgrammingError as exc:
        refused.append([label, exc.__cause__.sqlstate])
print(json.dumps({"written": written, "refused": refused}))
"""


def test_the_ml_role_writes_advice_from_prices_and_is_refused_scopes_and_trades(world):
    model_train(series={"s": synthetic.known_signal_series(n=2000, seed=3)}, horizon=1, epochs=60, seed=7)
    now = timezone.now()
    points = shifted(synthetic.known_signal_series(n=150, seed=4), end=now - timedelta(minutes=5))
    store_prices(points, token=world["weth"], source=world["source"])
    make_scope(world, token_in=world["usdc"], token_out=world["weth"])
    db = connection.settings_dict
    setup_roles(database=db["NAME"])
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "project.settings.base",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DB_ROLE": "custos_ml",
        "REDIS_URL": settings.REDIS_URL,
        "ML_MODEL_DIR": settings.ML_MODEL_DIR,
        "ML_TORCH_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", AS_ML_WORKER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["written"] == 1
    # 42501: insufficient_privilege, from PostgreSQL itself.
    assert report["refused"] == [["scope", "42501"], ["trade", "42501"]]
    advice = Advice.objects.get()
    assert advice.token == world["weth"]
    assert not advice.abstain
