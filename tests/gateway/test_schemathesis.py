"""Property-based tests of the live API against its own OpenAPI schema (schemathesis): generated
requests for every operation, with bounded examples, must give no 5xx and no response that breaks
the schema (status codes, content types, bodies)."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.gateway.services import api_token_create
from tests.factories import grant_scope
from tests.gateway.conftest import submitted_trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 25


def _runner(strategy, label: str, seen: dict[str, set[int]]):
    @given(case=strategy)
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call()
        seen.setdefault(label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    return run


def test_every_operation_conforms_to_the_live_schema(alice, registry, settings):
    settings.API_THROTTLE_RATE = "100000/min"
    settings.API_LONGPOLL_MAX_SECONDS = 0  # the long-poll answers at once here
    wallet = alice.active_wallet()
    ids = {
        "wallet_id": wallet.pk,
        "trade_id": submitted_trade(alice, registry, wallet).pk,
        "scope_id": grant_scope(wallet).pk,
        # A second token, so revoking it does not lock the test out.
        "token_id": api_token_create(user=alice.user, name="spare", level="read").token.pk,
    }
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    auth = {"Authorization": f"Bearer {alice.issued.raw}"}
    # /health answers 503 by design while workers or chains are down (tests/gateway/test_health.py).
    operations = [
        op for op in (result.ok() for result in schema.get_all_operations()) if op.path != "/api/v1/health"
    ]
    assert len(operations) >= 15
    seen: dict[str, set[int]] = {}
    for operation in operations:
        params = {name: ids[name] for name in ids if "{" + name + "}" in operation.path}
        runs = [("positive", GenerationMode.POSITIVE, params), ("negative", GenerationMode.NEGATIVE, params)]
        # Ids nobody owns: 404s. (Not for token revocation: a small random id may be the test's own
        # token, and the rest of the run would then be 401s.)
        if params and "token_id" not in params:
            runs.append(("any-id", GenerationMode.POSITIVE, None))
        for name, mode, fixed in runs:
            strategy = operation.as_strategy(mode, headers=auth, path_parameters=fixed or None)
            try:
                _runner(strategy, f"{name} {operation.label}", seen)()
            except Unsatisfiable:
                # Nothing to get wrong: no body and no free parameter (GET /chains).
                assert mode == GenerationMode.NEGATIVE, operation.label
    # The run reached every operation and got past validation at least somewhere.
    assert sum(label.startswith("positive") for label in seen) == len(operations)
    assert any(code < 300 for codes in seen.values() for code in codes)
    assert 400 in seen["negative POST /api/v1/trades"]
    assert 404 in seen["any-id GET /api/v1/trades/{trade_id}"]
