"""The naive statistics endpoints, served by the same gunicorn as the real API (bench only):
the same answers as ``GET /api/v1/stats`` and ``GET /api/v1/mailings/{id}/stats``, computed
by ``COUNT(*) ... GROUP BY`` over the message table instead of reading the counters.

Served with ``DJANGO_SETTINGS_MODULE=bench.naive_settings`` (whose ROOT_URLCONF is this).
"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import include, path

from mailing import selectors
from mailing.models import COUNTER_FIELDS, Mailing
from mailing.tokens import authenticate_key


def _authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and authenticate_key(header[7:].strip()) is not None


def _empty() -> dict[str, int]:
    return {"total": 0} | dict.fromkeys(COUNTER_FIELDS, 0)


def naive_overall(request: HttpRequest) -> JsonResponse:
    if not _authorized(request):
        return JsonResponse({"detail": "Unauthorized"}, status=401)
    per_mailing: dict[int, dict[str, int]] = {}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT mailing_id, status, count(*) FROM mailing_message GROUP BY mailing_id, status"
        )
        for mailing_id, status, count in cur.fetchall():
            stats = per_mailing.setdefault(mailing_id, _empty())
            stats[status] += count
            stats["total"] += count
    mailings = list(Mailing.objects.order_by("-id").values_list("id", "status"))
    totals = _empty()
    by_status: dict[str, int] = {}
    rows = []
    for mailing_id, status in mailings:
        stats = per_mailing.get(mailing_id, _empty())
        for name, value in stats.items():
            totals[name] += value
        by_status[status] = by_status.get(status, 0) + 1
        rows.append({"id": mailing_id, "status": status, "stats": stats})
    return JsonResponse({"mailings": rows, "totals": totals, "mailings_by_status": by_status})


def naive_mailing(request: HttpRequest, mailing_id: int) -> JsonResponse:
    if not _authorized(request):
        return JsonResponse({"detail": "Unauthorized"}, status=401)
    mailing = get_object_or_404(Mailing, pk=mailing_id)
    stats = _empty()
    with connection.cursor() as cur:
        cur.execute(
            "SELECT status, count(*) FROM mailing_message WHERE mailing_id = %s GROUP BY status",
            [mailing_id],
        )
        for status, count in cur.fetchall():
            stats[status] += count
            stats["total"] += count
    done = stats["total"] - stats["pending"]
    return JsonResponse(
        {
            "mailing_id": mailing.pk,
            "status": mailing.status,
            "stats": stats,
            "progress": (done / stats["total"]) if stats["total"] else 1.0,
            "fanned_out": mailing.fanned_out_at is not None,
            "failure_reasons": selectors.failure_reasons(mailing) if stats["failed"] else [],
        }
    )


urlpatterns = [
    path("bench/naive/stats", naive_overall),
    path("bench/naive/mailings/<int:mailing_id>/stats", naive_mailing),
    path("", include("project.urls")),
]
