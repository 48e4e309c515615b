"""What each process imports is what it pays for in memory (docs/t3micro.md): started in fresh
interpreters the way their commands start them, the workers and beat never import the API and
admin stack (DRF, drf-spectacular, the admin's ModelAdmins), and the processes that build no
transaction never import eth-abi, eth-utils or pydantic. The web path does import the API and
admin, so the check can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
API_STACK = (
    "rest_framework.serializers",
    "drf_spectacular.openapi",
    "apps.gateway.api.views",
    "apps.trades.admin",
)
ETH_STACK = ("eth_abi", "eth_utils", "pydantic", "web3")

# What `manage.py run_worker <process>` does before the worker takes its first task: setup, the
# command's own system checks, and Celery loading every app's tasks module.
WORKER_START = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings.base"
import django
django.setup()
from project.management.commands.run_worker import Command
command = Command()
command.check(tags=command.requires_system_checks)
os.environ["CELERY_SKIP_CHECKS"] = "1"
from celery_app import app
app.loader.import_default_modules()
app.loader.on_worker_init()
"""
WEB_START = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings.base"
from project.wsgi import application
from django.urls import get_resolver
get_resolver().url_patterns
"""
REPORT = """
import json
print(json.dumps(sorted({m for m in sys.modules if m.split(".")[0] in TOP or m in TOP})))
"""


def _imported(code: str) -> set[str]:
    top = sorted({name.split(".")[0] for name in API_STACK + ETH_STACK} | set(API_STACK))
    result = subprocess.run(
        [sys.executable, "-c", f"TOP = {top!r}\n" + code + REPORT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_a_worker_start_imports_neither_the_api_nor_the_ethereum_libraries():
    imported = _imported(WORKER_START)
    assert not imported & set(API_STACK), sorted(imported & set(API_STACK))
    assert not imported & set(ETH_STACK), sorted(imported & set(ETH_STACK))


@pytest.mark.parametrize(
    ("process", "code"),
    [
        ("watcher tick", "import apps.watcher.services, apps.watcher.tasks"),
        ("market refresh", "import apps.market.services, apps.market.tasks"),
        ("transaction manager", "import apps.trades.real_money_transaction_manager, apps.signing.services"),
    ],
)
def test_the_modules_behind_a_worker_stay_light(process, code):
    imported = _imported(WORKER_START + code + "\n")
    assert not imported & set(ETH_STACK), f"{process}: {sorted(imported & set(ETH_STACK))}"


def test_the_web_path_does_load_the_api_and_the_admin():
    imported = _imported(WEB_START)
    assert set(API_STACK) <= imported
    assert not imported & {"eth_abi", "eth_utils", "pydantic"}, sorted(imported & set(ETH_STACK))
