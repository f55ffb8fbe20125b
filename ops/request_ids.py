"""Each HTTP request's id: the caller's ``X-Request-ID`` when it is a plain token, else a new
one; bound to every log line of the request and returned in the response's header.

A caller's id is kept only when it matches ``[A-Za-z0-9._-]{1,64}``: anything else (spaces,
``=``, quotes, line breaks) could forge fields or whole lines in the text log format, so it
is replaced, not cleaned.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from ops.logging import bind

HEADER = "X-Request-ID"
_ACCEPTED = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(incoming: str) -> str:
    """The caller's id if it is acceptable, else a fresh one (32 hex digits)."""
    return incoming if _ACCEPTED.fullmatch(incoming) else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_of(request.headers.get(HEADER, ""))
        request.request_id = request_id  # type: ignore[attr-defined]
        with bind(request_id=request_id):
            response = self.get_response(request)
        response[HEADER] = request_id
        return response
