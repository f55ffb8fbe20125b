"""The dashboard: totals, recent mailings and the send API's health (HTMX partials)."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.views.common import staff_required
from mailing import selectors


def _health_context() -> dict:
    return {"health": selectors.provider_health(), "send": selectors.send_api_health()}


@staff_required
@require_GET
def home(request):
    return render(
        request,
        "dashboard/home.html",
        {"overview": selectors.recent_overview(), **_health_context()},
    )


@staff_required
@require_GET
def overview_partial(request):
    return render(request, "dashboard/_overview.html", {"overview": selectors.recent_overview()})


@staff_required
@require_GET
def health_partial(request):
    return render(request, "dashboard/_health.html", _health_context())
