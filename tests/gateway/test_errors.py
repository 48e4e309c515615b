"""One JSON error shape everywhere under /api/, including Django's own 404 and 500."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import path

from apps.gateway.errors import api_exception_handler
from project.urls import urlpatterns as project_urls

pytestmark = pytest.mark.django_db(transaction=True)


def _shape(body: dict) -> dict:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    return body["error"]


def test_an_unknown_api_url_is_a_json_404(alice):
    response = alice.client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert _shape(response.json())["code"] == "not_found"


def test_an_id_too_large_for_the_database_is_a_404_not_a_500(alice):
    response = alice.client.get("/api/v1/trades/" + "9" * 40)
    assert response.status_code == 404
    assert _shape(response.json())["code"] == "not_found"


def test_wrong_method_is_405_in_the_error_shape(alice):
    response = alice.client.delete("/api/v1/chains")
    assert response.status_code == 405
    assert _shape(response.json())["code"] == "method_not_allowed"


def crash(request):
    raise RuntimeError("a bug")


urlpatterns = [path("api/v1/crash", crash), *project_urls]
handler404 = "apps.gateway.errors.not_found"
handler500 = "apps.gateway.errors.server_error"


@pytest.mark.urls("tests.gateway.test_errors")
def test_an_unhandled_error_under_the_api_is_a_json_500_without_details(db):
    response = Client(raise_request_exception=False).get("/api/v1/crash")
    assert response.status_code == 500
    error = _shape(response.json())
    assert error["code"] == "server_error"
    assert "a bug" not in response.content.decode()


def test_the_handler_leaves_real_bugs_to_django():
    assert api_exception_handler(RuntimeError("x"), {}) is None


def test_validation_errors_carry_every_field(alice):
    response = alice.client.post("/api/v1/trades", {}, format="json", HTTP_IDEMPOTENCY_KEY="errors-key-1")
    error = _shape(response.json())
    assert response.status_code == 400
    assert error["code"] == "invalid"
    assert {"wallet", "chain_id", "dex", "path", "amount_in", "deadline"} <= set(error["fields"])


def test_a_serialization_failure_is_a_503_to_retry_not_a_500():
    from project.db import SerializationRetriesExhausted

    response = api_exception_handler(SerializationRetriesExhausted(8), {})
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.data["error"]["code"] == "try_again"
