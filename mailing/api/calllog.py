"""One log line per API call (logger ``mailing.api``) carrying the ids in its path.

The ids are also bound for the duration of the call, so every line the services log while
serving it (and the request id added by the middleware) can be found by the same grep.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase

from ops.logging import bind

logger = logging.getLogger("mailing.api")

PATH_ID_FIELDS = ("mailing_id", "client_id", "message_id")
LOG_EXTRA_ATTR = "api_log_extra"


def note(request: HttpRequest, **fields: object) -> None:
    """Add fields to this call's log line (e.g. the id of a created object)."""
    extra = getattr(request, LOG_EXTRA_ATTR, None)
    if extra is None:
        extra = {}
        setattr(request, LOG_EXTRA_ATTR, extra)
    extra.update(fields)


def _path_ids(path_params: dict[str, Any]) -> dict[str, object]:
    ids: dict[str, object] = {}
    for name in PATH_ID_FIELDS:
        raw = path_params.get(name)
        if raw is None:
            continue
        text = str(raw)
        ids[name] = int(text) if text.isascii() and text.isdigit() and len(text) < 20 else text[:40]
    return ids


def log_calls(run: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Wraps an operation's ``run`` (ninja decorator mode "view"): auth failures included."""

    @functools.wraps(run)
    def logged(request: HttpRequest, *args: Any, **path_params: Any) -> HttpResponseBase:
        ids = _path_ids(path_params)
        started = time.monotonic()
        with bind(**ids):
            response = run(request, *args, **path_params)
        user = getattr(request, "auth", None)
        extra = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "user_id": getattr(user, "pk", None),
            **ids,
            **getattr(request, LOG_EXTRA_ATTR, {}),
        }
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        logger.log(
            level,
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra=extra,
        )
        return response

    return logged
