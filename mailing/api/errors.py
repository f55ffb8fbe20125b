"""Exception handlers: every failure becomes a JSON answer of a documented shape.

422 ``{"detail": [{"loc", "msg", "type"}, ...]}`` for request-parsing errors (ninja's own
shape) and for the services' ``ValidationError`` alike; 404 and 409 ``{"detail": "..."}``.
Only a real bug reaches the last-resort handler (500, logged with its traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from mailing.rules import StateConflict, TooManyRequests

logger = logging.getLogger("mailing.api")

NOT_FOUND = "Not found."


def _error_item(loc: list[str | int], msg: str, type_: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": type_}


def _request_error_items(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ninja's errors, with the body parameter's own name dropped from ``loc``.

    ninja reports a field of the body as ``["body", "payload", "phone"]``; clients know no
    ``payload``, so it becomes ``["body", "phone"]`` like the services' errors.
    """
    items = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "body" and loc[1] == "payload":
            loc = ["body", *loc[2:]]
        items.append({**error, "loc": loc})
    return items


def domain_error_items(exc: DjangoValidationError) -> list[dict[str, Any]]:
    """A services ``ValidationError`` ({"filter.tags": [...]}) in ninja's 422 shape."""
    if not hasattr(exc, "error_dict"):
        return [
            _error_item(["body"], message, error.code or "value_error")
            for error in exc.error_list
            for message in error.messages
        ]
    items = []
    for field, errors in exc.error_dict.items():
        loc: list[str | int] = ["body", *field.split(".")]
        for error in errors:
            for message in error.messages:
                items.append(_error_item(loc, message, error.code or "value_error"))
    return items


def register(api: NinjaAPI) -> None:
    @api.exception_handler(NinjaValidationError)
    def request_invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        return api.create_response(
            request, {"detail": _request_error_items(exc.errors)}, status=422
        )

    @api.exception_handler(DjangoValidationError)
    def domain_invalid(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
        return api.create_response(request, {"detail": domain_error_items(exc)}, status=422)

    @api.exception_handler(StateConflict)
    def state_conflict(request: HttpRequest, exc: StateConflict) -> HttpResponse:
        return api.create_response(request, {"detail": str(exc)}, status=409)

    @api.exception_handler(TooManyRequests)
    def too_many(request: HttpRequest, exc: TooManyRequests) -> HttpResponse:
        return api.create_response(request, {"detail": str(exc)}, status=429)

    @api.exception_handler(Http404)
    @api.exception_handler(ObjectDoesNotExist)
    def not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
        return api.create_response(request, {"detail": NOT_FOUND}, status=404)

    @api.exception_handler(AuthenticationError)
    def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = api.create_response(
            request,
            {"detail": "A valid API token is required (Authorization: Bearer ...)."},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400:
            # The only 400 ninja raises: a body that is not JSON. Same shape as any 422.
            item = _error_item(["body"], "The request body is not valid JSON.", "json_invalid")
            return api.create_response(request, {"detail": [item]}, status=422)
        return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)

    @api.exception_handler(RequestDataTooBig)
    def too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        return api.create_response(
            request, {"detail": "The request body is too large."}, status=413
        )

    @api.exception_handler(Exception)
    def server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("unhandled error in %s %s", request.method, request.path, exc_info=exc)
        return api.create_response(request, {"detail": "Internal server error."}, status=500)
