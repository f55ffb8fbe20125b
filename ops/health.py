"""``/healthz``: is the database reachable, and the q2 broker? Public and cheap.

200 ``{"status": "ok", ...}`` when both answer, else 503 with the failing part named. With
the ORM broker the broker *is* the database; with Redis it is a PING (1 s timeout).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger("ops.health")

TIMEOUT_SECONDS = 1.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


@lru_cache(maxsize=4)
def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )


def check_broker() -> None:
    if settings.REDIS_URL:
        _redis_client(settings.REDIS_URL).ping()
    else:
        check_database()


def health() -> tuple[bool, dict[str, str]]:
    report: dict[str, str] = {"broker_type": "redis" if settings.REDIS_URL else "orm"}
    ok = True
    for part, check in (("database", check_database), ("broker", check_broker)):
        try:
            check()
            report[part] = "ok"
        except Exception as exc:  # any failure of a dependency is "unavailable"
            ok = False
            report[part] = "unavailable"
            logger.warning("health check: %s unavailable: %s", part, exc)
    report["status"] = "ok" if ok else "unavailable"
    return ok, report


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    ok, report = health()
    return JsonResponse(report, status=200 if ok else 503)
