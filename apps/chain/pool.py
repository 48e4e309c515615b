"""The RPC pool of one chain: endpoint health, rotation and failover, fan-out broadcast, quorum reads.

Health lives in the process (decisions per request must cost nothing) and is written to the
endpoint's row whenever its state changes, so the admin and every new process see it. One pool per
chain per process (`pool_for`); its endpoint list is re-read from the database at most every
RPC_POOL_REFRESH_SECONDS (at once after a change saved in the same process), while each endpoint's
health carries over by URL. Requests go over kept-alive connections (apps.chain.http).
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from apps.chain.http import JsonPoster, TransportError
from apps.chain.models import Chain, RpcEndpoint
from apps.chain.rpc import RpcError

logger = logging.getLogger(__name__)
Health = RpcEndpoint.Health

# JSON-RPC answers that mean "slow down" rather than "no": Infura and Alchemy use -32005 / 429.
RATE_LIMIT_CODES = frozenset({-32005, 429})
RATE_LIMIT_WORDS = ("rate limit", "too many requests", "exceeded", "capacity")
_ids = itertools.count(1)


class NoEndpointAvailable(ConnectionError):
    """No endpoint of the chain can take the request now (all unreachable, rate-limited, lagging
    beyond use or quarantined); the caller retries later. A ConnectionError so every existing
    'chain unavailable' path (task retries, chainio) treats it as one."""


class BroadcastRejected(Exception):
    """Every endpoint that was reached refused the raw transaction; the message is the node's."""


@dataclass
class EndpointState:
    url: str
    name: str
    kind: str
    priority: int
    weight: int
    rate_limit_per_second: int
    pk: int | None = None
    health: str = Health.ALIVE
    until: float = 0.0  # monotonic: not tried again before this (rate-limited, unreachable)
    failures: int = 0
    latency_ms: float | None = None
    last_error: str = ""
    head: int | None = None
    reported_chain_id: int | None = None
    tokens: float = 0.0
    refilled_at: float = 0.0

    def take_token(self, now: float) -> float:
        """Per-endpoint rate limit as a token bucket holding one second's worth of requests; returns
        how long to wait for the token (0: go). A limit of 0 means none (a local node)."""
        rate = self.rate_limit_per_second
        if rate <= 0:
            return 0.0
        self.tokens = min(float(rate), self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / rate


@dataclass
class PoolStats:
    http_requests: int = 0
    rpc_calls: int = 0  # JSON-RPC requests, counting each item of a batch

    def reset(self) -> None:
        self.http_requests = 0
        self.rpc_calls = 0


@dataclass
class _Answer:
    ok: bool
    payload: Any = None
    error: str = ""
    transport: bool = False  # unreachable / rate-limited: try another endpoint


class RpcPool:
    """Endpoints of one chain, best first; every request fails over on transport errors."""

    def __init__(
        self,
        *,
        chain_id: int,
        endpoints: Sequence[EndpointState],
        broadcast_to_public: bool = False,
        quorum: int = 2,
        timeout: float | None = None,
        lag_blocks: int | None = None,
        persist: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.chain_id = chain_id
        self.endpoints: list[EndpointState] = list(endpoints)
        self.broadcast_to_public = broadcast_to_public
        self.quorum_setting = quorum
        self.timeout = timeout if timeout is not None else settings.RPC_TIMEOUT_SECONDS
        self.lag_blocks = lag_blocks if lag_blocks is not None else settings.RPC_LAG_BLOCKS
        self.persist = persist
        self.clock = clock
        self.stats = PoolStats()
        self._lock = threading.Lock()
        self._client = JsonPoster()
        self.avoid: set[str] = set()  # endpoints a caller found inconsistent for the current job
        self.last_url = ""

    # --- selection ----------------------------------------------------------------------------

    @property
    def quorum(self) -> int:
        """k of the n configured endpoints must agree; a single-endpoint chain needs only one."""
        return max(1, min(self.quorum_setting, len(self.endpoints)))

    def candidates(self) -> list[EndpointState]:
        """Endpoints to try, best first: alive ones by priority, weight and latency; then those whose
        backoff or Retry-After has passed (the request doubles as their probe); lagging ones last.
        Quarantined (wrong chain) endpoints are never used until a probe clears them."""
        now = self.clock()

        def rank(ep: EndpointState):
            return (ep.priority, -ep.weight, ep.latency_ms if ep.latency_ms is not None else 0.0)

        usable = [e for e in self.endpoints if e.url not in self.avoid]
        alive = sorted((e for e in usable if e.health == Health.ALIVE), key=rank)
        retry = sorted(
            (e for e in usable if e.health in (Health.UNREACHABLE, Health.RATE_LIMITED) and e.until <= now),
            key=rank,
        )
        lagging = sorted((e for e in usable if e.health == Health.LAGGING), key=rank)
        return alive + retry + lagging

    def distrust(self, url: str, reason: str) -> None:
        """A caller found this endpoint's answers inconsistent: record why and skip it for the job."""
        self.avoid.add(url)
        for ep in self.endpoints:
            if ep.url == url:
                ep.last_error = reason[:300]
                self._save(ep)
                logger.warning("rpc endpoint distrusted", extra={"chain": self.chain_id, "endpoint": ep.name})

    def best_url(self) -> str:
        for ep in self.candidates():
            return ep.url
        raise NoEndpointAvailable(self._nothing_available())

    def _nothing_available(self) -> str:
        states = ", ".join(f"{e.name}={e.health}" for e in self.endpoints) or "no active endpoint"
        return f"chain {self.chain_id}: no RPC endpoint available ({states})"

    # --- transport ----------------------------------------------------------------------------

    def _post(self, ep: EndpointState, body: Any, *, timeout: float | None = None) -> _Answer:
        wait = ep.take_token(self.clock())
        if wait:
            time.sleep(wait)  # pace ourselves rather than earn a 429
        self.stats.http_requests += 1
        self.last_url = ep.url
        self.stats.rpc_calls += len(body) if isinstance(body, list) else 1
        started = time.monotonic()
        try:
            response = self._client.post(ep.url, body, timeout=timeout or self.timeout)
        except TransportError as exc:
            self._unreachable(ep, str(exc)[:300])
            return _Answer(False, error=f"{ep.name}: {str(exc).partition(':')[0]}", transport=True)
        elapsed_ms = (time.monotonic() - started) * 1000
        if response.status == 429:
            self._rate_limited(ep, response.headers.get("retry-after"), "HTTP 429")
            return _Answer(False, error=f"{ep.name}: HTTP 429", transport=True)
        if response.status != 200:
            self._unreachable(ep, f"HTTP {response.status}")
            return _Answer(False, error=f"{ep.name}: HTTP {response.status}", transport=True)
        try:
            payload = response.json()
        except ValueError:
            self._unreachable(ep, "response is not JSON")
            return _Answer(False, error=f"{ep.name}: response is not JSON", transport=True)
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            error = item.get("error") if isinstance(item, dict) else None
            if error and _is_rate_limit(error):
                self._rate_limited(ep, response.headers.get("retry-after"), str(error.get("message")))
                return _Answer(False, error=f"{ep.name}: rate limited", transport=True)
        self._answered(ep, elapsed_ms)
        return _Answer(True, payload=payload)

    def _answered(self, ep: EndpointState, elapsed_ms: float) -> None:
        alpha = 0.2
        ep.latency_ms = (
            elapsed_ms if ep.latency_ms is None else (1 - alpha) * ep.latency_ms + alpha * elapsed_ms
        )
        if ep.health in (Health.UNREACHABLE, Health.RATE_LIMITED):
            ep.failures = 0
            self._set(ep, Health.ALIVE, "")

    def _unreachable(self, ep: EndpointState, error: str) -> None:
        ep.failures += 1
        backoff = min(
            settings.RPC_BACKOFF_MAX_SECONDS,
            settings.RPC_BACKOFF_BASE_SECONDS * 2 ** min(ep.failures - 1, 20),
        )
        ep.until = self.clock() + backoff
        self._set(ep, Health.UNREACHABLE, error, force=True)

    def _rate_limited(self, ep: EndpointState, retry_after: str | None, error: str) -> None:
        ep.until = self.clock() + _retry_after_seconds(retry_after)
        self._set(ep, Health.RATE_LIMITED, error, force=True)

    def _set(self, ep: EndpointState, health: str, error: str, *, force: bool = False) -> None:
        changed = ep.health != health
        ep.health = health
        if error:
            ep.last_error = error[:300]
        if changed:
            log = logger.warning if health != Health.ALIVE else logger.info
            log(
                "rpc endpoint health",
                extra={"chain": self.chain_id, "endpoint": ep.name, "health": health, "error": error},
            )
        if changed or force:
            self._save(ep)

    def _save(self, ep: EndpointState) -> None:
        if not self.persist or ep.pk is None:
            return
        remaining = max(0.0, ep.until - self.clock())
        RpcEndpoint.objects.filter(pk=ep.pk).update(
            health=ep.health,
            health_until=timezone.now() + timedelta(seconds=remaining) if remaining else None,
            consecutive_failures=ep.failures,
            latency_ewma_ms=int(ep.latency_ms) if ep.latency_ms is not None else None,
            last_error=ep.last_error,
            last_head=ep.head,
            last_checked_at=timezone.now(),
        )

    # --- reads ----------------------------------------------------------------------------------

    def request(self, method: str, params: Sequence = ()) -> dict:
        """One JSON-RPC request with failover; returns the whole response object (a JSON-RPC error
        is the node's answer, handed back as is)."""
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}
        errors = []
        for ep in self.candidates():
            answer = self._post(ep, body)
            if answer.ok and isinstance(answer.payload, dict):
                return answer.payload
            errors.append(answer.error or f"{ep.name}: unexpected response shape")
        raise NoEndpointAvailable(f"{self._nothing_available()}; {method}: {'; '.join(errors)}")

    def call(self, method: str, params: Sequence = ()) -> Any:
        payload = self.request(method, params)
        if payload.get("error"):
            err = payload["error"]
            raise RpcError(self.last_url, f"{method}: {err.get('message', err)}", code=err.get("code"))
        return payload.get("result")

    def batch(self, calls: Sequence[tuple[str, Sequence]]) -> list[Any]:
        """Many calls, as few HTTP requests as the batch size allows, all from one endpoint (one view of
        the chain); an endpoint that fails any item is skipped for the next. Returns results in order."""
        if not calls:
            return []
        size = settings.RPC_BATCH_SIZE
        errors = []
        for ep in self.candidates():
            results: list[Any] = []
            for start in range(0, len(calls), size):
                chunk = calls[start : start + size]
                body = [
                    {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
                    for i, (m, p) in enumerate(chunk)
                ]
                answer = self._post(ep, body)
                if not answer.ok:
                    errors.append(answer.error)
                    break
                by_id = {item.get("id"): item for item in answer.payload if isinstance(item, dict)}
                failed = [
                    by_id.get(i, {}).get("error") or ("missing" if i not in by_id else None)
                    for i in range(len(chunk))
                ]
                bad = next((f for f in failed if f), None)
                if bad:
                    errors.append(f"{ep.name}: {bad}")
                    ep.last_error = str(bad)[:300]
                    break
                results.extend(by_id[i].get("result") for i in range(len(chunk)))
            else:
                return results
        raise NoEndpointAvailable(f"{self._nothing_available()}; batch: {'; '.join(errors)}")

    def exchange(
        self, calls: Sequence[tuple[str, Sequence]], *, url: str | None = None
    ) -> tuple[str, list[dict]]:
        """Calls to one endpoint (`url`, or the best that answers), one HTTP request per RPC_BATCH_SIZE
        of them, each item's answer as the node gave it, `result` or `error`: for reads whose JSON-RPC
        errors are answers (a revert, an unknown receipt) rather than faults of the endpoint. Returns
        the endpoint's URL, so later reads that must see the same view of the chain can name it."""
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in enumerate(calls)]
        size = settings.RPC_BATCH_SIZE  # providers cap a batch's length: longer ones go in parts
        errors = []
        for ep in self.candidates():
            if url is not None and ep.url != url:
                continue
            by_id: dict = {}
            for start in range(0, len(body), size):
                answer = self._post(ep, body[start : start + size])
                if not (answer.ok and isinstance(answer.payload, list)):
                    errors.append(answer.error or f"{ep.name}: unexpected response shape")
                    break
                by_id.update((item.get("id"), item) for item in answer.payload if isinstance(item, dict))
            else:
                if all(i in by_id for i in range(len(calls))):
                    return ep.url, [by_id[i] for i in range(len(calls))]
                errors.append(f"{ep.name}: {len(by_id)} of {len(calls)} answers")
        raise NoEndpointAvailable(f"{self._nothing_available()}; exchange: {'; '.join(errors) or url}")

    def pending_nonce(self, address: str) -> int:
        """The highest pending nonce any usable endpoint reports: a lagging or forgetful endpoint can
        only report a lower one, so it can never hand out a nonce that is already used."""
        best = None
        errors = []
        for ep in self.candidates():
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_getTransactionCount",
                "params": [address, "pending"],
            }
            answer = self._post(ep, body)
            if answer.ok and isinstance(answer.payload, dict) and answer.payload.get("result"):
                value = int(answer.payload["result"], 16)
                best = value if best is None else max(best, value)
            else:
                errors.append(answer.error or f"{ep.name}: {answer.payload}")
        if best is None:
            raise NoEndpointAvailable(f"{self._nothing_available()}; nonce: {'; '.join(errors)}")
        return best

    def quorum_block_hash(self, number: int) -> str | None:
        """The block hash at `number` if at least `quorum` endpoints report the same one, else None."""
        return self.quorum_block_hashes([number])[number]

    def quorum_block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        """quorum_block_hash for each of `numbers`, asking each endpoint for all heights still
        undecided in one batch (RPC_BATCH_SIZE per request), until each has its quorum or no endpoint
        is left: the confirm of many trades asks once, not once per receipt's height."""
        wanted = list(dict.fromkeys(int(n) for n in numbers))
        votes: dict[int, dict[str, int]] = {n: {} for n in wanted}
        decided: dict[int, str | None] = {}
        size = settings.RPC_BATCH_SIZE
        for ep in self.candidates():
            open_ = [n for n in wanted if n not in decided]
            if not open_:
                break
            for start in range(0, len(open_), size):
                part = open_[start : start + size]
                body = [
                    {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(n), False]}
                    for i, n in enumerate(part)
                ]
                answer = self._post(ep, body)
                if not answer.ok or not isinstance(answer.payload, list):
                    break  # this endpoint does not vote; the next one may
                by_id = {item.get("id"): item for item in answer.payload if isinstance(item, dict)}
                for i, number in enumerate(part):
                    block = (by_id.get(i) or {}).get("result")
                    if not isinstance(block, dict) or not block.get("hash"):
                        continue
                    block_hash = block["hash"].lower()
                    tally = votes[number]
                    tally[block_hash] = tally.get(block_hash, 0) + 1
                    if tally[block_hash] >= self.quorum:
                        decided[number] = block_hash
        for number in wanted:
            if number not in decided and len(votes[number]) > 1:
                logger.warning(
                    "rpc endpoints disagree on a block hash",
                    extra={"chain": self.chain_id, "block": number, "hashes": sorted(votes[number])},
                )
        return {n: decided.get(n) for n in wanted}

    # --- writes ---------------------------------------------------------------------------------

    def send_raw_transaction(self, raw: bytes) -> str:
        """Send the same signed bytes to every usable private endpoint (and public ones when the chain
        allows); succeeds if any accepted them. Raises BroadcastRejected with the node's words when
        every reached endpoint refused (the caller classifies 'already known', 'nonce too low')."""
        targets = [
            e for e in self.candidates() if e.kind == RpcEndpoint.Kind.PRIVATE or self.broadcast_to_public
        ]
        if not targets:
            raise NoEndpointAvailable(f"{self._nothing_available()}; no endpoint may broadcast")
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": ["0x" + raw.hex()]}
        accepted = None
        refusals = []
        for ep in targets:
            answer = self._post(ep, body)
            if not answer.ok:
                continue
            if answer.payload.get("error"):
                refusals.append(str(answer.payload["error"].get("message", answer.payload["error"])))
            else:
                accepted = answer.payload.get("result")
        if accepted:
            return accepted
        if refusals:
            raise BroadcastRejected(refusals[0])
        raise NoEndpointAvailable(f"{self._nothing_available()}; broadcast reached no endpoint")

    # --- probing --------------------------------------------------------------------------------

    def probe(self, *, include_quarantined: bool = True) -> int | None:
        """Ask every endpoint (a batch of chain id and head each); classify wrong chain, lagging,
        unreachable, rate-limited or alive. Returns the best head seen, or None."""
        heads: dict[str, int] = {}
        for ep in self.endpoints:
            if ep.health in (Health.UNREACHABLE, Health.RATE_LIMITED) and ep.until > self.clock():
                continue
            if ep.health == Health.WRONG_CHAIN and not include_quarantined:
                continue
            body = [
                {"jsonrpc": "2.0", "id": 0, "method": "eth_chainId", "params": []},
                {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            ]
            answer = self._post(ep, body, timeout=settings.HEALTH_RPC_TIMEOUT_SECONDS)
            if not answer.ok:
                continue
            try:
                by_id = {item["id"]: item for item in answer.payload}
                reported = int(by_id[0]["result"], 16)
                head = int(by_id[1]["result"], 16)
            except (KeyError, TypeError, ValueError) as exc:
                self._unreachable(ep, f"bad probe answer: {exc}")
                continue
            ep.reported_chain_id = reported
            if reported != self.chain_id:
                self._set(ep, Health.WRONG_CHAIN, f"wrong chain id {reported}, expected {self.chain_id}")
                continue
            ep.head = head
            heads[ep.url] = head
        best = max(heads.values(), default=None)
        for ep in self.endpoints:
            if ep.url not in heads or best is None:
                continue
            if best - heads[ep.url] > self.lag_blocks:
                self._set(ep, Health.LAGGING, f"head {heads[ep.url]} is {best - heads[ep.url]} behind {best}")
            else:
                ep.failures = 0
                self._set(ep, Health.ALIVE, "", force=True)
        return best

    def close(self) -> None:
        self._client.close()


def _is_rate_limit(error: dict) -> bool:
    message = str(error.get("message", "")).lower()
    return error.get("code") in RATE_LIMIT_CODES or any(word in message for word in RATE_LIMIT_WORDS)


def _retry_after_seconds(value: str | None) -> float:
    """Retry-After as seconds or an HTTP date; the setting's default when absent or unreadable."""
    default = float(settings.RPC_RATE_LIMIT_DEFAULT_SECONDS)
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --- one pool per chain per process ------------------------------------------------------------

_pools: dict[int, RpcPool] = {}
_read_at: dict[int, float] = {}  # chain id -> monotonic time its endpoint list was last read
_pools_lock = threading.Lock()


def _state_from_row(row: RpcEndpoint) -> EndpointState:
    state = EndpointState(
        url=row.url,
        name=row.name,
        kind=row.kind,
        priority=row.priority,
        weight=row.weight,
        rate_limit_per_second=row.rate_limit_per_second,
        pk=row.pk,
        health=row.health or Health.ALIVE,
        failures=row.consecutive_failures,
        latency_ms=float(row.latency_ewma_ms) if row.latency_ewma_ms is not None else None,
        last_error=row.last_error,
        head=row.last_head,
    )
    if row.health_until is not None:
        state.until = time.monotonic() + max(0.0, (row.health_until - timezone.now()).total_seconds())
    state.tokens = float(max(1, row.rate_limit_per_second))
    state.refilled_at = time.monotonic()
    return state


def pool_for(chain: Chain) -> RpcPool:
    """The process's pool for `chain`, its endpoint list refreshed from the database when older than
    RPC_POOL_REFRESH_SECONDS (every step asks for the pool, several times); health carries over for
    endpoints whose URL is unchanged."""
    with _pools_lock:
        pool = _pools.get(chain.chain_id)
        read_at = _read_at.get(chain.chain_id)
    if (
        pool is not None
        and read_at is not None
        and time.monotonic() - read_at < settings.RPC_POOL_REFRESH_SECONDS
    ):
        pool.broadcast_to_public = chain.broadcast_to_public
        pool.quorum_setting = chain.settlement_quorum
        return pool
    rows = list(RpcEndpoint.objects.filter(chain_id=chain.pk, active=True).order_by("priority", "id"))
    with _pools_lock:
        _read_at[chain.chain_id] = time.monotonic()
        pool = _pools.get(chain.chain_id)
        if pool is None:
            pool = RpcPool(
                chain_id=chain.chain_id,
                endpoints=[_state_from_row(r) for r in rows],
                broadcast_to_public=chain.broadcast_to_public,
                quorum=chain.settlement_quorum,
            )
            _pools[chain.chain_id] = pool
            return pool
        known = {e.url: e for e in pool.endpoints}
        fresh = []
        for row in rows:
            ep = known.get(row.url)
            if ep is None:
                ep = _state_from_row(row)
            else:
                ep.pk, ep.name, ep.kind = row.pk, row.name, row.kind
                ep.priority, ep.weight, ep.rate_limit_per_second = (
                    row.priority,
                    row.weight,
                    row.rate_limit_per_second,
                )
            fresh.append(ep)
        pool.endpoints = fresh
        pool.broadcast_to_public = chain.broadcast_to_public
        pool.quorum_setting = chain.settlement_quorum
        return pool


def pools_reset() -> None:
    """Forget every process pool (tests; a worker after its endpoints were re-keyed)."""
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
        _read_at.clear()


def _endpoints_changed(**_kwargs) -> None:
    """An endpoint saved or deleted in this process: every pool re-reads its list on next use."""
    with _pools_lock:
        _read_at.clear()


post_save.connect(_endpoints_changed, sender=RpcEndpoint, dispatch_uid="chain.pool.endpoints_changed")
post_delete.connect(_endpoints_changed, sender=RpcEndpoint, dispatch_uid="chain.pool.endpoints_changed")
