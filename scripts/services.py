#!/usr/bin/env python3
"""`make services` / `make services-down`: PostgreSQL, Redis and a SoftHSM token for Custos.

up:   use DATABASE_URL / REDIS_URL (environment, then .env, then the defaults) when they answer;
      otherwise start a private PostgreSQL (var/pg) and Redis (var/redis) on loopback ports and
      write their URLs to var/env, which the settings read. Missing Debian packages are installed
      with apt-get when running as root; otherwise the exact command is printed. A SoftHSM2 token
      is initialised under var/softhsm when none exists. Running it again changes nothing.
down: stop exactly what `up` started (pid files under var/); leave everything else alone.
browser, compose: the Debian packages only `make test` needs (chromium and chromium-driver for the
      admin browser test; docker-compose, which validates docker-compose.yml). Several actions may be
      given at once: `services.py browser compose`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
ENV_FILE = VAR / "env"
RUN = VAR / "run"
LOG = VAR / "log"
DEFAULTS = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/custos",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}
PRIVATE_PG_PORT = int(os.environ.get("CUSTOS_PRIVATE_PG_PORT", "54329"))
PRIVATE_REDIS_PORT = int(os.environ.get("CUSTOS_PRIVATE_REDIS_PORT", "63799"))
SOFTHSM_DIR = VAR / "softhsm"
SOFTHSM_LABEL = os.environ.get("PKCS11_TOKEN_LABEL", "custos-dev")
IS_ROOT = os.geteuid() == 0
_apt_updated = False


def say(message: str) -> None:
    print(f"[services] {message}", flush=True)


def fail(message: str) -> None:
    print(f"[services] error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def configured(name: str) -> str:
    if os.environ.get(name):
        return os.environ[name]
    dotenv = ROOT / ".env"
    if dotenv.is_file():
        for line in dotenv.read_text().splitlines():
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1].strip().strip('"')
    return DEFAULTS[name]


def env_file_set(name: str, value: str | None) -> None:
    """Set (or with None remove) one variable in var/env."""
    lines = ENV_FILE.read_text().splitlines() if ENV_FILE.exists() else []
    lines = [line for line in lines if not line.startswith(f"{name}=")]
    if value is not None:
        lines.append(f"{name}={value}")
    VAR.mkdir(exist_ok=True)
    ENV_FILE.write_text("".join(f"{line}\n" for line in lines))


def ensure_package(binary_found: bool, package: str, *, recommends: bool = True) -> None:
    global _apt_updated
    if binary_found:
        return
    options = [] if recommends else ["--no-install-recommends"]
    command = " ".join(["apt-get install -y", *options, package])
    if not IS_ROOT:
        fail(f"{package} is not installed; run: sudo apt-get update && sudo {command}")
    say(f"installing {package} with apt-get")
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True)  # noqa: S607
        _apt_updated = True
    subprocess.run(  # noqa: S603
        ["apt-get", "install", "-y", "-qq", *options, package],  # noqa: S607
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_connect(url: str, dbname: str | None = None):
    import psycopg

    parts = urlparse(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        dbname=dbname or parts.path.lstrip("/") or "postgres",
        connect_timeout=3,
        autocommit=True,
    )


def pg_answers(url: str) -> bool:
    try:
        with pg_connect(url, dbname="postgres"):
            return True
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        return False


def pg_ensure_database(url: str) -> None:
    name = urlparse(url).path.lstrip("/") or "custos"
    with pg_connect(url, dbname="postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
            say(f"created database {name}")


def pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if IS_ROOT else argv


def pg_data_dir() -> Path:
    """var/pg, or (as root, when the postgres user cannot reach the checkout) a symlink to a
    directory it can reach: initdb refuses to run as root."""
    data = VAR / "pg"
    if data.is_symlink() or data.exists() or not IS_ROOT:
        return data
    reachable = (
        subprocess.run(  # noqa: S603
            as_postgres(["test", "-x", str(VAR)]), check=False
        ).returncode
        == 0
    )
    if not reachable:
        digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
        target = Path("/var/lib/custos") / digest / "pg"
        target.mkdir(parents=True, exist_ok=True)
        data.symlink_to(target)
    return data


def pg_up() -> None:
    url = configured("DATABASE_URL")
    if pg_answers(url):
        say(f"PostgreSQL answers at {redact(url)}")
        pg_ensure_database(url)
        env_file_set("DATABASE_URL", None)
        return
    private = f"postgres://postgres@127.0.0.1:{PRIVATE_PG_PORT}/custos"
    if pg_answers(private):
        say(f"private PostgreSQL already running at {private}")
    else:
        ensure_package(pg_bin() is not None, "postgresql")
        bindir = pg_bin()
        data = pg_data_dir()
        real = data.resolve()
        if not (real / "PG_VERSION").exists():
            say(f"{redact(url)} does not answer; initialising a private cluster in {data}")
            real.mkdir(parents=True, exist_ok=True)
            if IS_ROOT:
                shutil.chown(real, "postgres", "postgres")
            subprocess.run(  # noqa: S603
                as_postgres(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(real),
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--no-instructions",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        LOG.mkdir(parents=True, exist_ok=True)
        logfile = real / "server.log"
        say(f"starting private PostgreSQL on 127.0.0.1:{PRIVATE_PG_PORT}")
        subprocess.run(  # noqa: S603
            as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(real),
                    "-l",
                    str(logfile),
                    "-w",
                    "-o",
                    f"-p {PRIVATE_PG_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories={real}",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        RUN.mkdir(parents=True, exist_ok=True)
        (RUN / "pg.started").write_text(str(real))
    pg_ensure_database(private)
    env_file_set("DATABASE_URL", private)


def pg_down() -> None:
    marker = RUN / "pg.started"
    if not marker.exists():
        return
    data = Path(marker.read_text().strip())
    bindir = pg_bin()
    if bindir and (data / "postmaster.pid").exists():
        subprocess.run(  # noqa: S603
            as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        say("stopped private PostgreSQL")
    marker.unlink()


# --- Redis -------------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping())
    except Exception:  # noqa: BLE001
        return False


def redis_up() -> None:
    url = configured("REDIS_URL")
    if redis_answers(url):
        say(f"Redis answers at {redact(url)}")
        env_file_set("REDIS_URL", None)
        return
    private = f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"
    if redis_answers(private):
        say(f"private Redis already running at {private}")
    else:
        ensure_package(shutil.which("redis-server") is not None, "redis-server")
        data = VAR / "redis"
        data.mkdir(parents=True, exist_ok=True)
        LOG.mkdir(parents=True, exist_ok=True)
        say(f"{redact(url)} does not answer; starting private Redis on 127.0.0.1:{PRIVATE_REDIS_PORT}")
        subprocess.run(  # noqa: S603
            [
                "redis-server",
                "--port",
                str(PRIVATE_REDIS_PORT),
                "--bind",
                "127.0.0.1",  # noqa: S607
                "--dir",
                str(data),
                "--daemonize",
                "yes",
                "--pidfile",
                str(data / "redis.pid"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(LOG / "redis.log"),
            ],
            check=True,
        )
        for _ in range(50):
            if redis_answers(private):
                break
            time.sleep(0.1)
        else:
            fail(f"private Redis did not answer; see {LOG / 'redis.log'}")
    env_file_set("REDIS_URL", private)


def redis_down() -> None:
    pid_file = VAR / "redis" / "redis.pid"
    if not pid_file.exists():
        return
    try:
        os.kill(int(pid_file.read_text().strip()), 15)
        say("stopped private Redis")
    except (ProcessLookupError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)


# --- SoftHSM -----------------------------------------------------------------------------------


def softhsm_up() -> None:
    ensure_package(shutil.which("softhsm2-util") is not None, "softhsm2")
    tokens = SOFTHSM_DIR / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = SOFTHSM_DIR / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    environment = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    listing = subprocess.run(
        ["softhsm2-util", "--show-slots"],  # noqa: S607
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if f"Label:            {SOFTHSM_LABEL}" in listing or f"Label: {SOFTHSM_LABEL}" in listing:
        say(f"SoftHSM token '{SOFTHSM_LABEL}' present ({conf})")
        return
    # The PINs are secrets of the signer alone: files readable only by their owner.
    secrets_dir = VAR / "secrets"
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pin_file, so_pin_file = secrets_dir / "hsm.pin", secrets_dir / "hsm.so-pin"
    for path in (pin_file, so_pin_file):
        if not path.exists():
            path.write_text(secrets.token_hex(8))
            path.chmod(0o600)
    subprocess.run(  # noqa: S603
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            SOFTHSM_LABEL,  # noqa: S607
            "--pin",
            pin_file.read_text().strip(),
            "--so-pin",
            so_pin_file.read_text().strip(),
        ],
        env=environment,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    say(f"initialised SoftHSM token '{SOFTHSM_LABEL}' under {tokens}")


def redact(url: str) -> str:
    parts = urlparse(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunparse(parts._replace(netloc=netloc))
    return url


def keystore_up() -> None:
    """The development keystore's passphrase: a random secret only the signer's environment names."""
    secrets_dir = VAR / "secrets"
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    passphrase = secrets_dir / "keystore.pass"
    if not passphrase.exists():
        passphrase.write_text(secrets.token_urlsafe(24))
        passphrase.chmod(0o600)
        say(f"created the development keystore passphrase in {passphrase}")
    keystore = VAR / "keystore"
    keystore.mkdir(mode=0o700, exist_ok=True)


# --- headless browser for the admin console test (issue 6) --------------------------------------


def browser_up() -> None:
    """Debian's chromium and its chromedriver, for tests/admin/test_browser.py (`make test`)."""
    ensure_package(shutil.which("chromium") is not None, "chromium")
    ensure_package(shutil.which("chromedriver") is not None, "chromium-driver")
    say("chromium and chromedriver ready")


def compose_up() -> None:
    """Debian's docker-compose (1.29), for tests/test_compose.py's `docker-compose config`. Not its
    recommended docker.io: validating the file needs no Docker engine."""
    ensure_package(shutil.which("docker-compose") is not None, "docker-compose", recommends=False)
    say("docker-compose ready")


def main() -> None:
    for action in sys.argv[1:] or ["up"]:
        run_action(action)


def run_action(action: str) -> None:
    if action == "up":
        pg_up()
        redis_up()
        softhsm_up()
        keystore_up()
        say(
            "services ready"
            + (f" (private URLs in {ENV_FILE})" if ENV_FILE.exists() and ENV_FILE.read_text().strip() else "")
        )
    elif action == "down":
        pg_down()
        redis_down()
        for name in ("DATABASE_URL", "REDIS_URL"):
            if ENV_FILE.exists():
                env_file_set(name, None)
        say("services down")
    elif action == "browser":
        browser_up()
    elif action == "compose":
        compose_up()
    else:
        fail(f"unknown action {action!r}: use up, down, browser or compose")


if __name__ == "__main__":
    main()
