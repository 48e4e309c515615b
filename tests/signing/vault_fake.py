"""A local stand-in for the parts of HashiCorp Vault's HTTP API the vault key backend uses, answering
with the shapes Vault documents (api-docs: auth/approle, auth/token, secret/kv/kv-v2, system/seal):

- POST /v1/auth/approle/login            -> {"auth": {"client_token", "lease_duration", "renewable", ...}}
- GET  /v1/auth/token/lookup-self        -> {"data": {"ttl", "policies", ...}}
- POST /v1/auth/token/renew-self         -> {"auth": {...}}, capped by the role's token_max_ttl
- POST /v1/auth/token/revoke             -> 204 (root only)
- PUT  /v1/sys/seal                      -> 204 (root only)
- GET  /v1/{mount}/data/{path}           -> {"data": {"data": {...}, "metadata": {...}}}
- POST /v1/{mount}/data/{path}           -> {"data": {<version metadata>}}; options.cas mismatch -> 400

Errors are {"errors": [...]}: 400 bad AppRole credentials or cas mismatch, 403 "permission denied"
for a missing, unknown, expired or revoked X-Vault-Token or a path outside the token's policy,
404 with an empty list for a missing path, 503 "Vault is sealed" for everything once sealed.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Role:
    role_id: str
    secret_id: str
    token_ttl: int
    token_max_ttl: int


@dataclass
class Token:
    policies: list[str]
    issued_at: float
    expires_at: float  # monotonic; inf for the root token
    max_expires_at: float
    ttl: int
    root: bool = False
    accessor: str = field(default_factory=lambda: secrets.token_hex(12))


def _now_iso() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _envelope(**fields) -> dict:
    """Vault's response envelope around `data` or `auth`."""
    body = {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": None,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
        "mount_type": "",
    }
    body.update(fields)
    return body


class FakeVault:
    """Threaded HTTP server on 127.0.0.1 (a free port). `allowed_prefix` is the policy of AppRole
    tokens: they may read and create KV secrets under it only (the root token may do anything)."""

    def __init__(self, *, mount: str = "secret", allowed_prefix: str = "custos/"):
        self.mount = mount
        self.allowed_prefix = allowed_prefix
        self.sealed = False
        self.root_token = "hvs." + secrets.token_hex(12)
        self.roles: dict[str, Role] = {}
        self.tokens: dict[str, Token] = {
            self.root_token: Token(["root"], time.monotonic(), float("inf"), float("inf"), 0, root=True)
        }
        self.kv: dict[str, list[dict]] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.addr = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add_role(self, name: str, *, token_ttl: int, token_max_ttl: int) -> Role:
        role = Role("role-" + str(uuid.uuid4()), str(uuid.uuid4()), token_ttl, token_max_ttl)
        self.roles[name] = role
        return role

    def start(self) -> FakeVault:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeVault:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the API ---------------------------------------------------------------------------------

    def _issue(self, role: Role) -> tuple[str, Token]:
        now = time.monotonic()
        token = "hvs." + secrets.token_urlsafe(18)
        record = Token(
            ["default", "custos"], now, now + role.token_ttl, now + role.token_max_ttl, role.token_ttl
        )
        self.tokens[token] = record
        return token, record

    def _auth_block(self, token: str, record: Token, lease: int) -> dict:
        return {
            "client_token": token,
            "accessor": record.accessor,
            "policies": record.policies,
            "token_policies": record.policies,
            "metadata": {"role_name": "custos"},
            "lease_duration": lease,
            "renewable": True,
            "entity_id": str(uuid.uuid4()),
            "token_type": "service",
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": 0,
        }

    def handle(self, method: str, path: str, token: str, body: dict) -> tuple[int, dict | None]:
        with self._lock:
            self.requests.append((method, path))
            if self.sealed:
                return 503, {"errors": ["Vault is sealed"]}
            now = time.monotonic()
            if path == "/v1/auth/approle/login" and method in ("POST", "PUT"):
                role = next((r for r in self.roles.values() if r.role_id == body.get("role_id")), None)
                if role is None or body.get("secret_id") != role.secret_id:
                    return 400, {"errors": ["invalid role or secret ID"]}
                new_token, record = self._issue(role)
                return 200, _envelope(auth=self._auth_block(new_token, record, role.token_ttl))
            record = self.tokens.get(token)
            if record is None or record.expires_at <= now:
                return 403, {"errors": ["permission denied"]}
            ttl = 0 if record.root else int(record.expires_at - now)
            if path == "/v1/auth/token/lookup-self" and method == "GET":
                data = {
                    "accessor": record.accessor,
                    "creation_ttl": record.ttl,
                    "display_name": "root" if record.root else "approle",
                    "expire_time": None,
                    "explicit_max_ttl": 0,
                    "id": token,
                    "meta": None,
                    "num_uses": 0,
                    "orphan": True,
                    "path": "auth/token/root" if record.root else "auth/approle/login",
                    "policies": record.policies,
                    "renewable": not record.root,
                    "ttl": ttl,
                    "type": "service",
                }
                return 200, _envelope(data=data)
            if path == "/v1/auth/token/renew-self" and method in ("POST", "PUT"):
                lease = min(record.ttl, int(record.max_expires_at - now))
                warnings = None
                if lease < record.ttl:
                    warnings = [
                        f'TTL of "{record.ttl}s" exceeded the effective max_ttl of "{lease}s"; '
                        "TTL value is capped accordingly"
                    ]
                record.expires_at = now + lease
                return 200, _envelope(auth=self._auth_block(token, record, lease), warnings=warnings)
            if path == "/v1/auth/token/revoke" and method in ("POST", "PUT"):
                if not record.root:
                    return 403, {"errors": ["permission denied"]}
                self.tokens.pop(body.get("token", ""), None)
                return 204, None
            if path == "/v1/sys/seal" and method in ("POST", "PUT"):
                if not record.root:
                    return 403, {"errors": ["permission denied"]}
                self.sealed = True
                return 204, None
            prefix = f"/v1/{self.mount}/data/"
            if path.startswith(prefix):
                return self._kv(method, path[len(prefix) :], record, body)
            return 404, {"errors": []}

    def _kv(self, method: str, key: str, record: Token, body: dict) -> tuple[int, dict | None]:
        if not record.root and not key.startswith(self.allowed_prefix):
            return 403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
        versions = self.kv.get(key, [])
        if method == "GET":
            if not versions:
                return 404, {"errors": []}
            latest = versions[-1]
            return 200, _envelope(data={"data": latest["data"], "metadata": latest["metadata"]})
        if method in ("POST", "PUT"):
            cas = (body.get("options") or {}).get("cas")
            if cas is not None and cas != len(versions):
                return 400, {"errors": ["check-and-set parameter did not match the current version"]}
            metadata = {
                "created_time": _now_iso(),
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": len(versions) + 1,
            }
            self.kv[key] = [*versions, {"data": body.get("data") or {}, "metadata": metadata}]
            return 200, _envelope(data=metadata)
        return 405, {"errors": ["1 error occurred:\n\t* unsupported operation\n\n"]}

    def _handler(self):
        vault = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One buffered write per response and no Nagle delay (else each request waits ~40 ms
            # on delayed ACKs, as separate header and body writes would).
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, *args):  # the test output stays quiet
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    status, payload = 400, {"errors": ["failed to parse JSON input"]}
                else:
                    path = self.path.split("?", 1)[0]
                    status, payload = vault.handle(method, path, self.headers.get("X-Vault-Token", ""), body)
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's naming
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def do_PUT(self):  # noqa: N802
                self._serve("PUT")

        return Handler
