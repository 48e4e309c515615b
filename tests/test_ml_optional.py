"""PyTorch is the ml worker's alone: the core installs and runs without it, and ML_ENABLED=0 (the
t3.micro profile) leaves out the torch install, the ml worker and health's expectation of one."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from project.heartbeat import worker_heartbeat_write
from project.queues import Queue

ROOT = Path(__file__).resolve().parent.parent
ML_ONLY = {"torch", "numpy", "matplotlib"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line[:1].isalnum():
            name, _, version = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def _all_queues_but_ml_alive() -> None:
    for queue in Queue:
        if queue is not Queue.ML:
            worker_heartbeat_write(hostname=f"{queue}@test", queues=[str(queue)])


@pytest.mark.django_db
def test_health_does_not_expect_an_ml_worker_when_ml_is_disabled(settings, redis_client):
    settings.ML_ENABLED = False
    _all_queues_but_ml_alive()
    response = APIClient().get("/api/v1/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["failing"] == []
    assert body["queues"]["ml"] == {"ok": True, "workers": [], "expected": False}
    assert body["queues"]["signer"]["expected"] is True


@pytest.mark.django_db
def test_health_fails_on_a_missing_ml_worker_when_ml_is_enabled(settings, redis_client):
    settings.ML_ENABLED = True
    _all_queues_but_ml_alive()
    response = APIClient().get("/api/v1/health")
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["queue:ml"]
    assert body["queues"]["ml"] == {"ok": False, "workers": [], "expected": True}


def test_the_ml_worker_exits_at_once_when_ml_is_disabled(settings):
    settings.ML_ENABLED = False
    out = StringIO()
    call_command("run_worker", "ml", stdout=out)  # returns without touching the database or broker
    assert "ML_ENABLED is off" in out.getvalue()


def test_make_run_leaves_the_ml_worker_out_when_ml_is_disabled():
    spec = importlib.util.spec_from_file_location("custos_run", ROOT / "scripts" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    everything = run.procfile_processes(ml_enabled=True)
    assert "worker-ml" in everything
    assert run.procfile_processes(ml_enabled=False) == [p for p in everything if p != "worker-ml"]
    assert [run.env_bool(v) for v in ("0", "false", "off", "no")] == [False] * 4
    assert [run.env_bool(v) for v in ("1", "true", "yes")] == [True] * 3


def test_pytorch_and_the_ml_only_packages_live_in_requirements_ml():
    core = _pins(ROOT / "requirements.txt")
    ml = _pins(ROOT / "requirements-ml.txt")
    assert not ML_ONLY & set(core)
    assert ML_ONLY <= set(ml)
    assert ml["torch"] == "2.13.0"
    assert all(version for version in ml.values()), ml
    constraints = _pins(ROOT / "constraints.txt")
    assert not set(ml) & set(constraints)  # direct pins live in one file only


def _make_dry_run(target: str, **variables: str) -> str:
    result = subprocess.run(
        ["make", "-n", "-B", target, *(f"{k}={v}" for k, v in variables.items())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_installs_pytorch_by_default_and_not_with_ml_disabled():
    assert "requirements-ml.txt" in _make_dry_run("bootstrap", ML_ENABLED="1")
    for off in ("0", "false"):
        dry = _make_dry_run("bootstrap", ML_ENABLED=off)
        assert "requirements-ml.txt" not in dry
        assert "-r requirements.txt" in dry
    # make run / make test hand the same decision to run.py / pytest.
    assert "ML_ENABLED=0 .venv/bin/pytest" in _make_dry_run("test", ML_ENABLED="0")
    assert "ML_ENABLED=1 .venv/bin/python scripts/run.py" in _make_dry_run("run", ML_ENABLED="1")


# An interpreter where torch, numpy and matplotlib cannot be imported, as after a core-only install.
WITHOUT_ML_PACKAGES = """
import sys
class _NoMLPackages:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "numpy", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed with ML_ENABLED=0)")
        return None
sys.meta_path.insert(0, _NoMLPackages())
"""
# Every process's start path but the ml worker's: the API and admin (URLs, schema), Celery loading every
# tasks module, the engine (which imports the ML gate) and Django's system checks.
CORE_START = """
import django
django.setup()
from django.core.management import call_command
from django.urls import get_resolver
from project.wsgi import application
get_resolver().url_patterns
from celery_app import app
app.loader.import_default_modules()
import apps.trades.real_money_transaction_manager, apps.signing.services, apps.ml.gate, apps.ml.api.views
call_command("check")
print("core without ML ok")
"""


def _without_ml_packages(code: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_ML_PACKAGES + code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "ML_ENABLED": "0", **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_core_starts_without_pytorch():
    result = _without_ml_packages(
        CORE_START,
        DJANGO_SETTINGS_MODULE="project.settings.production",
        DJANGO_SECRET_KEY="test-only-production-like-secret",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "core without ML ok" in result.stdout


def test_with_ml_disabled_the_ml_tests_needing_pytorch_are_skipped_and_the_rest_pass_without_it():
    result = _without_ml_packages(
        "import pytest\nsys.exit(pytest.main(['tests/ml', '-q', '-rs', '-p', 'no:cacheprovider']))\n",
        # Its own test database: this session's is in use.
        DATABASE_TEST_NAME=f"{settings.DATABASES['default']['TEST']['NAME']}_ml_disabled",
    )
    assert result.returncode == 0, result.stdout[-3000:]
    skipped = re.findall(r"SKIPPED \[(\d+)\] .*ML_ENABLED=0: this test needs PyTorch", result.stdout)
    assert len(skipped) == 1, result.stdout[-3000:]
    assert int(skipped[0]) >= 5  # the modules that train, infer, chart or check the torch boundary
    # The advisory gate, the advice API and the price reads stay in use without ML and run here.
    assert re.search(r"\b\d+ passed", result.stdout), result.stdout[-3000:]
