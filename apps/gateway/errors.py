"""The one error shape of the API, {"error": {"code", "message", "fields"}}, for DRF exceptions,
service input errors, a reused idempotency key and Django's own 404/500 under /api/."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from apps.gateway.services import TokenNameTaken
from apps.gateway.validation_2026 import IDEMPOTENCY_HEADER
from apps.trades.real_money_transaction_manager import IdempotencyConflict, TradeInputError
from apps.wallets.services import ScopeError
from project.db import SerializationRetriesExhausted, is_retryable


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as {"field" | "field.0.sub": [messages]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        for index, item in enumerate(detail):
            if item:
                out.update(_flatten(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        items = detail if isinstance(detail, list) else [detail]
        out.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in items)
    return out


def api_exception_handler(exc, context):
    if isinstance(exc, TradeInputError | ScopeError | TokenNameTaken):
        field = getattr(exc, "field", "non_field_errors")
        message = str(exc).split(": ", 1)[-1]
        return Response(error_body("invalid", "Invalid input.", {field: [message]}), status=400)
    if isinstance(exc, IdempotencyConflict):
        message = f"{IDEMPOTENCY_HEADER} {exc.key!r} was already used for a different trade."
        return Response(error_body("idempotency_key_reused", message), status=status.HTTP_409_CONFLICT)
    if is_retryable(exc) or isinstance(exc, SerializationRetriesExhausted):
        # Contention with a concurrent transaction: nothing was committed, so the client may retry.
        response = Response(
            error_body("try_again", "A concurrent change got there first; nothing was changed. Retry."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = "1"
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()  # the same answer whether the object is missing or someone else's
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's handler500 answers in the same shape
    if isinstance(exc, ValidationError):
        body = error_body("invalid", "Invalid input.", _flatten(exc.detail))
    else:
        detail = getattr(exc, "detail", None)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        body = error_body(str(code), str(detail if detail is not None else exc))
    response.data = body
    return response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def not_found(request, exception=None):
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse(error_body("not_found", "Not found."), status=status.HTTP_404_NOT_FOUND)


def server_error(request):
    if not _is_api(request):
        return defaults.server_error(request)
    return JsonResponse(
        error_body("server_error", "Internal error; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def bad_request(request, exception=None):
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    return JsonResponse(error_body("bad_request", "Bad request."), status=status.HTTP_400_BAD_REQUEST)
