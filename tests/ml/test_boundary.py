"""Only the ml worker imports torch: the web, execution and signer processes' code paths, started in
fresh interpreters, end without 'torch' in sys.modules (and the ml path does load it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)

SETUP = """
import json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings.base"
import django
django.setup()
"""
REPORT = """
print(json.dumps({"torch": "torch" in sys.modules,
                  "ml": sorted(m for m in sys.modules if m.startswith("apps.ml"))}))
"""
PATHS = {
    # gunicorn serves project.wsgi; resolving every URL imports every view, the admin has every ModelAdmin.
    "web": """
from project.wsgi import application
import project.urls
from django.urls import get_resolver
get_resolver().url_patterns
from django.contrib import admin
assert admin.site.is_registered(__import__("apps.ml.models", fromlist=["Advice"]).Advice)
import apps.gateway.api.views
""",
    # The execution worker: Celery imports every app's tasks module, and the engine consults the gate.
    "execution": """
from celery_app import app
app.loader.import_default_modules()
import apps.trades.tasks, apps.trades.real_money_transaction_manager, apps.watcher.tasks
from apps.ml.gate import advice_gate_check
assert "ml.advise_all" in app.tasks
""",
    "signer": """
from celery_app import app
app.loader.import_default_modules()
import apps.signing.tasks, apps.signing.services
""",
}


def _run(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SETUP + code + REPORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("process", sorted(PATHS))
def test_process_code_paths_never_import_torch(process):
    report = _run(PATHS[process])
    assert report["torch"] is False, f"{process} imported torch"
    # The ml app itself is loaded there (models, admin, tasks, gate): it is its torch that stays out.
    assert "apps.ml.models" in report["ml"]


def test_the_ml_worker_path_does_import_torch():
    """The check above can fail: running the ml task code loads torch."""
    report = _run(
        """
from celery_app import app
app.loader.import_default_modules()
import apps.ml.inference
"""
    )
    assert report["torch"] is True
