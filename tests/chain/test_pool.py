"""The RPC pool against a fault-injecting proxy in front of the real Hardhat node: rotation, health
states, backoff, Retry-After, quarantine, lag, fan-out broadcast, nonce reads and quorum."""

from __future__ import annotations

from datetime import timedelta

import pytest
from eth_account import Account
from web3 import Web3

from apps.chain.models import Chain, RpcEndpoint
from apps.chain.pool import EndpointState, NoEndpointAvailable, RpcPool, pool_for, pools_reset
from tests.chain.faultproxy import FAKE_HASH, FaultProxy
from tests.chain.node import node_restored

pytestmark = [pytest.mark.chain]
H = RpcEndpoint.Health
CHAIN_ID = 31337


class Clock:
    """Monotonic time the test moves forward (backoff and Retry-After without sleeping)."""

    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _node_restored(hardhat_url):
    with node_restored(hardhat_url):
        yield


@pytest.fixture
def proxy(hardhat_url):
    p = FaultProxy(hardhat_url)
    yield p
    p.close()


@pytest.fixture
def second_proxy(hardhat_url):
    p = FaultProxy(hardhat_url)
    yield p
    p.close()


def _ep(url: str, name: str, priority: int, kind: str = "private") -> EndpointState:
    return EndpointState(url=url, name=name, kind=kind, priority=priority, weight=1, rate_limit_per_second=0)


def _pool(*endpoints: EndpointState, clock=None, **kwargs) -> RpcPool:
    return RpcPool(chain_id=CHAIN_ID, endpoints=endpoints, persist=False, clock=clock or Clock(), **kwargs)


def _head(url: str) -> int:
    return Web3(Web3.HTTPProvider(url)).eth.block_number


def test_reads_fail_over_from_a_dropping_endpoint_with_growing_backoff_and_recover(
    proxy, hardhat_url, settings
):
    settings.RPC_BACKOFF_BASE_SECONDS = 1
    settings.RPC_BACKOFF_MAX_SECONDS = 60
    clock = Clock()
    pool = _pool(_ep(proxy.url, "flaky", 1), _ep(hardhat_url, "direct", 2), clock=clock)
    flaky = pool.endpoints[0]
    proxy.drop = True
    assert int(pool.call("eth_blockNumber"), 16) == _head(hardhat_url)
    assert flaky.health == H.UNREACHABLE
    assert flaky.until - clock.now == 1
    seen = len(proxy.methods)
    pool.call("eth_blockNumber")
    assert len(proxy.methods) == seen  # resting: not asked during its backoff

    clock.now += 1
    pool.probe()  # the periodic probe finds it still down: the backoff doubles
    assert flaky.health == H.UNREACHABLE
    assert flaky.until - clock.now == 2
    clock.now += 2
    pool.probe()
    assert flaky.until - clock.now == 4

    proxy.honest()
    clock.now += 4
    pool.probe()
    assert flaky.health == H.ALIVE
    assert flaky.failures == 0
    before = proxy.count("eth_blockNumber")
    pool.call("eth_blockNumber")
    assert proxy.count("eth_blockNumber") == before + 1  # back to the preferred endpoint


def test_a_slow_endpoint_times_out_and_reads_move_on(proxy, hardhat_url):
    proxy.delay = 1.0
    pool = _pool(_ep(proxy.url, "slow", 1), _ep(hardhat_url, "direct", 2), timeout=0.3)
    assert int(pool.call("eth_blockNumber"), 16) == _head(hardhat_url)
    assert pool.endpoints[0].health == H.UNREACHABLE
    assert "Timeout" in pool.endpoints[0].last_error


@pytest.mark.parametrize(("retry_after", "rest"), [("7", 7.0), ("", 10.0)])
def test_http_429_rests_the_endpoint_for_retry_after(proxy, hardhat_url, settings, retry_after, rest):
    settings.RPC_RATE_LIMIT_DEFAULT_SECONDS = 10
    clock = Clock()
    proxy.http_429 = retry_after
    pool = _pool(_ep(proxy.url, "limited", 1), _ep(hardhat_url, "direct", 2), clock=clock)
    pool.call("eth_blockNumber")
    limited = pool.endpoints[0]
    assert limited.health == H.RATE_LIMITED
    assert limited.until - clock.now == rest
    seen = len(proxy.methods)
    clock.now += rest - 0.5
    pool.probe()
    pool.call("eth_blockNumber")
    assert len(proxy.methods) == seen  # Retry-After honoured
    proxy.honest()
    clock.now += 0.5
    pool.probe()
    assert limited.health == H.ALIVE


def test_a_retry_after_http_date_is_honoured(proxy, hardhat_url):
    from email.utils import format_datetime

    from django.utils import timezone

    proxy.http_429 = format_datetime(timezone.now() + timedelta(seconds=30), usegmt=True)
    clock = Clock()
    pool = _pool(_ep(proxy.url, "limited", 1), _ep(hardhat_url, "direct", 2), clock=clock)
    pool.call("eth_blockNumber")
    assert pool.endpoints[0].health == H.RATE_LIMITED
    assert 27 <= pool.endpoints[0].until - clock.now <= 30


def test_a_json_rpc_rate_limit_error_counts_as_rate_limited(proxy, hardhat_url):
    proxy.rpc_rate_limit = True
    pool = _pool(_ep(proxy.url, "limited", 1), _ep(hardhat_url, "direct", 2))
    assert int(pool.call("eth_blockNumber"), 16) == _head(hardhat_url)
    assert pool.endpoints[0].health == H.RATE_LIMITED


def test_a_wrong_chain_endpoint_is_quarantined_until_fixed(proxy, hardhat_url):
    proxy.chain_id = 1
    clock = Clock()
    pool = _pool(_ep(proxy.url, "mainnet-by-mistake", 1), _ep(hardhat_url, "direct", 2), clock=clock)
    pool.probe()
    wrong = pool.endpoints[0]
    assert wrong.health == H.WRONG_CHAIN
    assert "wrong chain id 1" in wrong.last_error
    seen = len(proxy.methods)
    clock.now += 3600
    for _ in range(3):
        pool.call("eth_blockNumber")
    assert len(proxy.methods) == seen  # never used, however long it waits
    proxy.honest()
    pool.probe()
    assert wrong.health == H.ALIVE


def test_an_endpoint_with_a_stale_head_is_lagging_and_used_last(proxy, hardhat_url, settings):
    settings.RPC_LAG_BLOCKS = 3
    for _ in range(12):
        Web3(Web3.HTTPProvider(hardhat_url)).provider.make_request("evm_mine", [])
    proxy.stale_head = max(0, _head(hardhat_url) - 10)
    pool = _pool(_ep(proxy.url, "stale", 1), _ep(hardhat_url, "direct", 2))
    assert pool.probe() == _head(hardhat_url)
    assert pool.endpoints[0].health == H.LAGGING
    assert [e.name for e in pool.candidates()] == ["direct", "stale"]
    before = proxy.count("eth_blockNumber")
    assert int(pool.call("eth_blockNumber"), 16) == _head(hardhat_url)
    assert proxy.count("eth_blockNumber") == before


def test_no_endpoint_available_raises_a_connection_error_naming_each_state(proxy, second_proxy):
    proxy.drop = second_proxy.drop = True
    pool = _pool(_ep(proxy.url, "a", 1), _ep(second_proxy.url, "b", 2))
    with pytest.raises(NoEndpointAvailable, match="a=unreachable, b=unreachable") as info:
        pool.call("eth_blockNumber")
    assert isinstance(info.value, ConnectionError)  # the engine's tasks retry it


def test_the_pending_nonce_is_the_highest_any_endpoint_reports(proxy, hardhat_url):
    raw = _signed_transfer(hardhat_url)
    w3 = Web3(Web3.HTTPProvider(hardhat_url))
    sender = w3.eth.get_transaction(w3.eth.send_raw_transaction(raw))["from"]
    assert w3.eth.get_transaction_count(sender, "pending") == 1
    proxy.nonce_behind = 1  # a lagging endpoint that has not seen the transaction
    pool = _pool(_ep(proxy.url, "forgetful", 1), _ep(hardhat_url, "direct", 2))
    assert pool.pending_nonce(sender) == 1
    assert _pool(_ep(proxy.url, "forgetful", 1)).pending_nonce(sender) == 0  # what it alone would say


def _signed_transfer(url: str) -> bytes:
    w3 = Web3(Web3.HTTPProvider(url))
    account = Account.create()
    w3.provider.make_request("hardhat_setBalance", [account.address, hex(10**18)])
    tx = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": 0,
        "to": account.address,
        "value": 0,
        "gas": 21_000,
        "maxFeePerGas": 100 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    return bytes(account.sign_transaction(tx).raw_transaction)


@pytest.mark.parametrize("public_allowed", [False, True])
def test_broadcast_reaches_every_private_endpoint_and_public_ones_only_when_allowed(
    proxy, second_proxy, hardhat_url, public_allowed
):
    pool = _pool(
        _ep(proxy.url, "private", 1),
        _ep(second_proxy.url, "public", 2, kind="public"),
        broadcast_to_public=public_allowed,
    )
    raw = _signed_transfer(hardhat_url)
    tx_hash = pool.send_raw_transaction(raw)
    assert Web3(Web3.HTTPProvider(hardhat_url)).eth.get_transaction_receipt(tx_hash)["status"] == 1
    assert proxy.count("eth_sendRawTransaction") == 1
    assert second_proxy.count("eth_sendRawTransaction") == (1 if public_allowed else 0)


def test_a_broadcast_survives_one_endpoint_failing(proxy, second_proxy, hardhat_url):
    proxy.drop = True
    pool = _pool(_ep(proxy.url, "down", 1), _ep(second_proxy.url, "up", 2))
    tx_hash = pool.send_raw_transaction(_signed_transfer(hardhat_url))
    assert Web3(Web3.HTTPProvider(hardhat_url)).eth.get_transaction_receipt(tx_hash)["status"] == 1


def test_quorum_needs_k_agreeing_endpoints_and_a_liar_breaks_it(proxy, hardhat_url):
    number = _head(hardhat_url)
    real = "0x" + bytes(Web3(Web3.HTTPProvider(hardhat_url)).eth.get_block(number)["hash"]).hex()
    proxy.lie_hash = True
    pool = _pool(_ep(proxy.url, "liar", 1), _ep(hardhat_url, "honest", 2), quorum=2)
    assert pool.quorum_block_hash(number) is None
    proxy.honest()
    assert pool.quorum_block_hash(number) == real
    # k is capped by the endpoints configured: one endpoint alone is its own quorum.
    assert _pool(_ep(proxy.url, "only", 1), quorum=2).quorum_block_hash(number) == real
    proxy.lie_hash = True
    assert _pool(_ep(proxy.url, "only", 1), quorum=2).quorum_block_hash(number) == FAKE_HASH


@pytest.mark.django_db(transaction=True)
def test_health_is_recorded_on_the_endpoint_row_and_shown_in_the_admin(proxy, hardhat_url, admin_client):
    pools_reset()
    chain = Chain.objects.create(chain_id=CHAIN_ID, name="dev", is_dev=True)
    down = RpcEndpoint.objects.create(
        chain=chain, name="down", url=proxy.url, priority=1, rate_limit_per_second=0
    )
    RpcEndpoint.objects.create(
        chain=chain, name="direct", url=hardhat_url, priority=2, rate_limit_per_second=0
    )
    proxy.drop = True
    try:
        pool_for(chain).call("eth_blockNumber")
        down.refresh_from_db()
        assert down.health == H.UNREACHABLE
        assert down.consecutive_failures == 1
        assert down.health_until is not None
        assert down.last_error.startswith("RemoteDisconnected: ")  # the node hung up without answering
        # A new process (a fresh pool) starts from the recorded state: still resting.
        pools_reset()
        assert pool_for(chain).endpoints[0].health == H.UNREACHABLE
        page = admin_client.get("/admin/chain/rpcendpoint/")
        assert page.status_code == 200
        assert b"unreachable" in page.content
    finally:
        pools_reset()


def test_an_exchange_longer_than_the_batch_size_goes_in_parts_to_one_endpoint(hardhat_url, settings):
    """Providers cap a JSON-RPC batch's length: an exchange of 5 calls with RPC_BATCH_SIZE 2 is three
    requests, its answers in call order as if it were one."""
    settings.RPC_BATCH_SIZE = 2
    pool = _pool(_ep(hardhat_url, "direct", 1))
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(5)]
    before = pool.stats.http_requests
    url, answers = pool.exchange(calls)
    assert url == hardhat_url
    assert pool.stats.http_requests - before == 3
    assert [int(a["result"]["number"], 16) for a in answers] == list(range(5))


def test_an_exchange_hands_back_each_answer_from_one_endpoint_and_fails_over_as_a_whole(proxy, hardhat_url):
    pool = _pool(_ep(proxy.url, "first", 1), _ep(hardhat_url, "direct", 2))
    calls = [
        ("eth_blockNumber", []),
        ("eth_getTransactionReceipt", [FAKE_HASH]),  # unknown: a null result, not a fault
        ("eth_call", [{"to": "0x" + "00" * 19 + "01", "data": "0xzz"}, "latest"]),  # the node's error
    ]
    url, answers = pool.exchange(calls)
    assert url == proxy.url
    assert int(answers[0]["result"], 16) == _head(hardhat_url)
    assert answers[1]["result"] is None
    assert "error" in answers[2]
    assert pool.endpoints[0].health == H.ALIVE  # a JSON-RPC error item is an answer

    proxy.drop = True
    url, answers = pool.exchange(calls[:1])
    assert url == hardhat_url  # the whole batch moved to the next endpoint
    with pytest.raises(NoEndpointAvailable):
        pool.exchange(calls[:1], url=proxy.url)  # pinned to the endpoint that is down: no other


@pytest.mark.django_db
def test_the_endpoint_list_is_re_read_at_most_every_refresh_interval_or_when_saved(
    hardhat_url, settings, django_assert_num_queries
):
    settings.RPC_POOL_REFRESH_SECONDS = 3600
    pools_reset()
    chain = Chain.objects.create(chain_id=CHAIN_ID, name="dev", is_dev=True)
    RpcEndpoint.objects.create(chain=chain, name="direct", url=hardhat_url, rate_limit_per_second=0)
    first = pool_for(chain)
    with django_assert_num_queries(0):  # within the interval: no read of the endpoint rows
        assert pool_for(chain) is first
    urls = [e.url for e in first.endpoints]
    # A queryset update sends no signal: a running worker sees it only after the interval.
    RpcEndpoint.objects.filter(chain=chain).update(active=False)
    assert [e.url for e in pool_for(chain).endpoints] == urls
    # A save in this process (the admin's) is seen at once.
    added = RpcEndpoint.objects.create(
        chain=chain, name="added", url=hardhat_url + "/?added", rate_limit_per_second=0
    )
    assert [e.url for e in pool_for(chain).endpoints] == [added.url]
    settings.RPC_POOL_REFRESH_SECONDS = 0  # the interval has passed
    RpcEndpoint.objects.filter(pk=added.pk).update(active=False)
    assert pool_for(chain).endpoints == []
    pools_reset()


def test_the_gate_reads_many_heights_in_one_batch_per_endpoint_and_needs_its_quorum(proxy, hardhat_url):
    head = _head(hardhat_url)
    numbers = [head, head - 1, head - 2]
    w3 = Web3(Web3.HTTPProvider(hardhat_url))
    real = {n: "0x" + bytes(w3.eth.get_block(n)["hash"]).hex() for n in numbers}
    pool = _pool(_ep(hardhat_url, "direct", 1))
    before = pool.stats.http_requests
    assert pool.quorum_block_hashes(numbers) == real
    assert pool.stats.http_requests == before + 1
    # Two endpoints, quorum 2: a liar makes every height undecided.
    proxy.lie_hash = True
    liar = _pool(_ep(hardhat_url, "direct", 1), _ep(proxy.url, "liar", 2), quorum=2)
    assert liar.quorum_block_hashes(numbers) == dict.fromkeys(numbers)
