"""RPC endpoints kept in .env (RPC_ENDPOINTS): written to the database idempotently, all or nothing,
and a malformed entry is refused by its index and field."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.chain.models import Chain, RpcEndpoint
from apps.chain.services import EndpointConfigError, rpc_endpoints_sync

pytestmark = pytest.mark.django_db


@pytest.fixture
def chains():
    return Chain.objects.create(chain_id=1, name="mainnet"), Chain.objects.create(
        chain_id=10, name="optimism"
    )


ALCHEMY = {"chain_id": 1, "name": "alchemy", "url": "https://eth.example/v2/key", "priority": 10}
PUBLIC = {
    "chain_id": 10,
    "name": "public",
    "url": "https://op.example",
    "kind": "public",
    "rate_limit_per_second": 5,
}


def test_entries_are_created_then_updated_then_left_unchanged(chains):
    assert rpc_endpoints_sync([ALCHEMY, PUBLIC]) == {"created": 2, "updated": 0, "unchanged": 0}
    public = RpcEndpoint.objects.get(url=PUBLIC["url"])
    assert (public.chain.chain_id, public.kind, public.rate_limit_per_second) == (10, "public", 5)
    assert rpc_endpoints_sync([ALCHEMY, {**PUBLIC, "active": False}]) == {
        "created": 0,
        "updated": 1,
        "unchanged": 1,
    }
    assert not RpcEndpoint.objects.get(url=PUBLIC["url"]).active
    admin_made = RpcEndpoint.objects.create(chain=chains[0], name="admin", url="https://admin.example")
    rpc_endpoints_sync([ALCHEMY])
    assert RpcEndpoint.objects.filter(pk=admin_made.pk).exists()  # never deleted by the sync
    assert RpcEndpoint.objects.count() == 3


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"chain_id": 1, "name": "x"}, r"RPC_ENDPOINTS\[1\]\.url: required"),
        ({**ALCHEMY, "url": "ftp://x"}, r"RPC_ENDPOINTS\[1\]\.url: an http\(s\) URL"),
        ({**ALCHEMY, "chain_id": "1"}, r"RPC_ENDPOINTS\[1\]\.chain_id: must be int"),
        ({**ALCHEMY, "kind": "secret"}, r"RPC_ENDPOINTS\[1\]\.kind: one of private, public"),
        ({**ALCHEMY, "weight": 0}, r"RPC_ENDPOINTS\[1\]\.weight: between 1 and"),
        ({**ALCHEMY, "password": "x"}, r"RPC_ENDPOINTS\[1\]\.password: unknown field"),
        ({**ALCHEMY, "chain_id": 5}, r"RPC_ENDPOINTS\[1\]\.chain_id: chain 5 is not in the database"),
        ("https://x", r"RPC_ENDPOINTS\[1\]: each entry is an object"),
    ],
)
def test_a_malformed_entry_is_named_and_nothing_is_written(chains, entry, message):
    with pytest.raises(EndpointConfigError, match=message):
        rpc_endpoints_sync([PUBLIC, entry])
    assert not RpcEndpoint.objects.exists()


def test_the_command_reports_counts_and_refuses_bad_input_by_name(chains, settings, capsys):
    settings.RPC_ENDPOINTS = [ALCHEMY]
    call_command("rpc_endpoints_sync")
    assert "1 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    settings.RPC_ENDPOINTS = {"chain_id": 1}
    with pytest.raises(CommandError, match="RPC_ENDPOINTS: a JSON list"):
        call_command("rpc_endpoints_sync")
