"""Prometheus metrics, in prometheus_client's multiprocess mode.

Two kinds of metric, documented one by one in docs/metrics.md:

- Counted where things happen (send API calls in the dispatcher, HTTP requests in the
  middleware): each process writes its samples under ``PROMETHEUS_MULTIPROC_DIR`` and a
  scrape adds up every process's files, so gunicorn workers and q2 workers aggregate.
- Read from the database at scrape time by ``DatabaseCollector`` (messages by status from
  the mailing counters, mailings by status, the due queue, circuits, windows, the
  credentials pause): a handful of queries whose cost grows with the number of mailings,
  not messages.

``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus_client is imported; the settings
module takes care of it (see project/settings.py).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("ops.metrics")

# The due-queue count stops at this many rows (a bounded index scan, not a full count).
QUEUE_DEPTH_CAP = 100_000
SEND_OUTCOMES = ("accepted", "rejected", "retry", "throttled", "unauthorized")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

SEND_REQUESTS = Counter(
    "mailing_send_requests",
    "Calls to the external send API, by outcome.",
    ["outcome"],
)
SEND_LATENCY = Histogram(
    "mailing_send_request_duration_seconds",
    "Wall time of one call to the external send API (connect, send, read).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REQUESTS = Counter(
    "mailing_http_requests",
    "HTTP requests answered by the web app, by method and status code.",
    ["method", "status"],
)
# Label children looked up once: the dispatcher observes every call.
_send_children = {outcome: SEND_REQUESTS.labels(outcome) for outcome in SEND_OUTCOMES}


def observe_send(outcome: str, latency: float) -> None:
    """One call to the send API (called by the dispatcher for every result)."""
    child = _send_children.get(outcome)
    if child is None:
        child = _send_children[outcome] = SEND_REQUESTS.labels(outcome)
    child.inc()
    SEND_LATENCY.observe(latency)


class HttpMetricsMiddleware:
    """Counts every response by method and status code."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        method = request.method if request.method in HTTP_METHODS else "other"
        HTTP_REQUESTS.labels(method, str(response.status_code)).inc()
        return response


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time, through the selectors (cheap:
    O(mailings), the due queue bounded by QUEUE_DEPTH_CAP)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from mailing import selectors
        from mailing.models import COUNTER_FIELDS, MailingStatus

        now = timezone.now()
        messages = GaugeMetricFamily(
            "mailing_messages",
            "Messages by status, summed over every mailing's counters.",
            labels=["status"],
        )
        totals = selectors.message_counter_totals()
        for name in COUNTER_FIELDS:
            messages.add_metric([name], totals[name])
        yield messages

        mailings = GaugeMetricFamily("mailing_mailings", "Mailings by status.", labels=["status"])
        by_status = selectors.mailing_counts_by_status()
        for status in MailingStatus.values:
            mailings.add_metric([status], by_status.get(status, 0))
        yield mailings

        queue = GaugeMetricFamily(
            "mailing_queue_due_messages",
            f"Pending messages of running mailings that are due now (capped at "
            f"{QUEUE_DEPTH_CAP}: the cap means at least that many).",
        )
        queue.add_metric([], selectors.due_message_count(now, QUEUE_DEPTH_CAP))
        yield queue

        provider = selectors.provider_health(now)
        circuit = GaugeMetricFamily(
            "mailing_dispatcher_circuit_state",
            "1 for the current circuit-breaker state of each dispatcher slot, 0 otherwise.",
            labels=["slot", "state"],
        )
        heartbeat = GaugeMetricFamily(
            "mailing_dispatcher_heartbeat_age_seconds",
            "Seconds since each dispatcher slot's last heartbeat.",
            labels=["slot"],
        )
        window = GaugeMetricFamily(
            "mailing_dispatcher_window",
            "Each dispatcher slot's concurrency window: calls to the send API it may keep in "
            "flight now (slow start from SEND_WINDOW_INITIAL, at most SEND_CONCURRENCY).",
            labels=["slot"],
        )
        for slot in provider["dispatchers"]:
            if slot["window"] is not None:
                window.add_metric([str(slot["slot"])], slot["window"])
            for state in ("closed", "open", "half_open"):
                current = 1 if slot["circuit_state"] == state else 0
                circuit.add_metric([str(slot["slot"]), state], current)
            if slot["heartbeat_at"] is not None:
                age = max((now - slot["heartbeat_at"]).total_seconds(), 0.0)
                heartbeat.add_metric([str(slot["slot"])], age)
        yield circuit
        yield heartbeat
        yield window

        paused = GaugeMetricFamily(
            "mailing_provider_paused_for_credentials",
            "1 while the send API refuses our token and sending is paused, else 0.",
        )
        paused.add_metric([], 1 if provider["paused_for_credentials"] else 0)
        yield paused


def registry(*, with_database: bool = True) -> CollectorRegistry:
    """Every process's samples from PROMETHEUS_MULTIPROC_DIR, plus the database gauges."""
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    if with_database:
        reg.register(DatabaseCollector())
    return reg


def exposition(*, with_database: bool = True) -> bytes:
    return generate_latest(registry(with_database=with_database))


def token_matches(given: str) -> bool:
    token = settings.METRICS_TOKEN
    return bool(token) and bool(given) and hmac.compare_digest(given.encode(), token.encode())


def authorised(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    return token_matches(header[7:] if header.startswith("Bearer ") else "")


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: Bearer METRICS_TOKEN; with no token configured, 404 unless DEBUG."""
    if not settings.METRICS_TOKEN:
        if not settings.DEBUG:
            return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    elif not authorised(request):
        response = HttpResponse("A valid metrics token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    started = time.monotonic()
    body = exposition()
    logger.debug("metrics scraped in %.1f ms", (time.monotonic() - started) * 1000)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
