"""docker-compose.yml and the Dockerfile: the real `docker-compose config` (Debian's docker-compose,
which `make test` installs) must accept the file, and its normalized output must keep the Procfile's
process split, per-process database roles and the signer as the only holder of key credentials.

Compose reads the settings file from CUSTOS_ENV_FILE; these tests give it .env.example, which sets
every key-backend *_FILE variable, so a service that does not blank them would show them here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY_SECRETS = {"hsm_pin", "keystore_passphrase", "vault_secret_id", "vault_token"}
KEY_VARIABLES = ("KEYSTORE_PASSPHRASE_FILE", "PKCS11_PIN_FILE", "VAULT_SECRET_ID_FILE", "VAULT_TOKEN_FILE")
SIGNER = "worker-signer"
ONE_SHOT = "migrate"
DEV_ONLY = {"chain"}
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$", re.M)


def _procfile() -> dict[str, str]:
    return dict(PROCFILE_LINE.findall((ROOT / "Procfile").read_text()))


@pytest.fixture(scope="module")
def config() -> dict:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`make test` installs it: scripts/services.py compose)")
    result = subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT,
        env={**os.environ, "CUSTOS_ENV_FILE": str(ROOT / ".env.example")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _custos_services(config: dict) -> dict[str, dict]:
    return {name: s for name, s in config["services"].items() if name not in {"postgres", "redis"}}


def _secret_names(service: dict) -> set[str]:
    return {entry["source"] if isinstance(entry, dict) else entry for entry in service.get("secrets", [])}


def test_postgres_and_redis_run_as_containers(config):
    assert config["services"]["postgres"]["image"].startswith("postgres:")
    assert config["services"]["redis"]["image"].startswith("redis:")


def test_every_procfile_process_but_the_dev_chain_has_a_service(config):
    processes = set(_procfile())
    assert {"web", SIGNER, "worker-ml", "beat"} <= processes
    assert processes - DEV_ONLY <= set(config["services"])
    assert not DEV_ONLY & set(config["services"])


def test_each_service_connects_as_its_procfile_database_role_with_only_its_own_password(config):
    for name, command in _procfile().items():
        if name in DEV_ONLY:
            continue
        role = re.search(r"DB_ROLE=(\S+)", command)[1]
        service = config["services"][name]
        assert service["environment"]["DB_ROLE"] == role, name
        assert service["environment"]["DB_PASSWORD_FILE"] == f"/run/secrets/db_{role}", name
        passwords = {s for s in _secret_names(service) if s.startswith("db_") or s == "postgres_password"}
        assert passwords == {f"db_{role}"}, name


def test_only_the_signer_gets_key_backend_secrets(config):
    for name, service in config["services"].items():
        given = _secret_names(service) & KEY_SECRETS
        if name == SIGNER:
            assert given == KEY_SECRETS
        else:
            assert given == set(), name


def test_only_the_signer_gets_key_backend_credential_variables(config):
    signer = config["services"][SIGNER]["environment"]
    for variable in KEY_VARIABLES:
        assert signer[variable].startswith("/run/secrets/"), variable
        assert signer[variable].removeprefix("/run/secrets/") in KEY_SECRETS
    for name, service in config["services"].items():
        if name == SIGNER:
            continue
        environment = service.get("environment") or {}
        # .env.example (the env file here) sets each of them: every other service must blank it.
        leaked = {v: environment[v] for v in KEY_VARIABLES if environment.get(v)}
        assert leaked == {}, name


def test_only_the_signer_mounts_the_keystore_and_it_has_no_way_out(config):
    for name, service in config["services"].items():
        mounts = [str(volume) for volume in service.get("volumes", [])]
        assert any("/app/var/keystore" in m for m in mounts) == (name == SIGNER), name
    assert set(config["services"][SIGNER]["networks"]) == {"internal"}
    assert config["networks"]["internal"]["internal"] is True


def test_the_migrate_one_shot_runs_migrations_roles_and_schedules_before_every_worker(config):
    one_shot = config["services"][ONE_SHOT]
    assert one_shot["restart"] == "no"
    assert one_shot["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = ROOT / one_shot["command"][0].removeprefix("/app/")
    commands = re.findall(r"manage\.py (\w+)", script.read_text())
    assert commands == ["migrate", "setup_db_roles", "setup_schedules"]
    assert os.access(script, os.X_OK)
    assert "postgres_password" in _secret_names(one_shot)
    assert "DB_ROLE" not in one_shot["environment"] or not one_shot["environment"]["DB_ROLE"]
    for name in set(_procfile()) - DEV_ONLY:
        depends = config["services"][name]["depends_on"]
        assert depends[ONE_SHOT]["condition"] == "service_completed_successfully", name


def test_every_custos_service_is_built_from_the_dockerfile(config):
    assert (ROOT / "Dockerfile").is_file()
    images = set()
    for name, service in _custos_services(config).items():
        assert service["build"]["context"] == str(ROOT), name
        assert service["build"]["dockerfile"] == "Dockerfile", name
        images.add(service["image"])
    assert len(images) == 1, images


def _final_stage(dockerfile: str) -> list[str]:
    """The instructions after the last FROM, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def test_the_image_runs_as_a_non_root_user_with_the_production_settings():
    final = _final_stage((ROOT / "Dockerfile").read_text())
    users = [line.split(None, 1)[1].strip() for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    environment = " ".join(line for line in final if line.upper().startswith("ENV "))
    assert re.search(r"\bDJANGO_SETTINGS_MODULE=project\.settings\.production\b", environment)
    entrypoint = ROOT / "deploy" / "docker" / "entrypoint.sh"
    assert any(str(entrypoint.relative_to(ROOT)) in line for line in final if line.startswith("ENTRYPOINT"))
    assert os.access(entrypoint, os.X_OK)


def test_the_image_holds_no_development_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    final = " ".join(_final_stage(dockerfile))
    assert "build-essential" not in final
    assert "gcc" not in final
    # The runtime part of requirements.txt is what the Dockerfile's sed keeps.
    marker = re.search(r"sed '/\^(# --- development and tests)/,\$d' requirements\.txt", dockerfile)
    assert marker, "the Dockerfile no longer cuts requirements.txt at its development line"
    runtime, found, development = (ROOT / "requirements.txt").read_text().partition(marker[1])
    assert found

    def names(text: str) -> set[str]:
        return {re.split(r"[\[=<>]", line)[0].lower() for line in text.splitlines() if line[:1].isalnum()}

    assert {"django", "celery", "gunicorn", "psycopg"} <= names(runtime)
    assert {"pytest", "pytest-django", "ruff", "hypothesis", "honcho", "selenium", "schemathesis"} <= names(
        development
    )
    assert not names(runtime) & {"pytest", "ruff", "hypothesis", "honcho", "selenium", "schemathesis"}
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "secrets/", "var/", ".venv/", "tests/", "devchain/"} <= set(ignored)
