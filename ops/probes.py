"""The operations endpoints, declared once: ``/healthz`` and ``/metrics``.

``urlpatterns`` is included by project/urls.py (so the routes resolve and reverse like any
other) and is what ProbeMiddleware answers from, before host validation and the HTTPS
redirect: probes and scrapers address a pod by its IP (a Host not in ALLOWED_HOSTS) over
plain HTTP, and must get neither 400 nor 301. The views keep their own rules (/metrics its
token).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, path, resolve

from ops.health import healthz
from ops.metrics import metrics_view

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
]


class ProbeMiddleware:
    """Answers the routes above first. Put it right after the HTTP metrics middleware (so
    probes are counted) and before SecurityMiddleware and CommonMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            match = resolve(request.path_info, urlconf=__name__)
        except Resolver404:
            return self.get_response(request)
        return match.func(request, *match.args, **match.kwargs)
