"""Under fire: a misbehaving provider and a worker killed mid-batch lose nothing."""

from __future__ import annotations

import json
import logging
import signal
import time
from datetime import time as clock_time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from django.utils import timezone

from mailing import services
from mailing.engine.queue import RetryPolicy
from mailing.models import Mailing, MailingStatus, Message, MessageStatus
from mailing.tokens import issue_token
from tests.conftest import make_clients, now_plus, wait_for
from tests.test_workers import outcomes_of, run_dispatchers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_worker_killed_mid_batch_loses_nothing(provider):
    make_clients(400)
    provider.update_config(latency_ms=150)
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(300), text="Crash")
    lease = 3
    (victim,) = run_dispatchers(provider, 1, seconds=120, CLAIM_LEASE_SECONDS=str(lease))
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent >= 50, 60)
    # In flight at the kill: claimed by the victim and not recorded.
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    in_flight = set(
        Message.objects.filter(
            mailing=mailing, status=MessageStatus.PENDING, claimed_by__isnull=False
        ).values_list("id", flat=True)
    )
    assert in_flight, "the kill should have caught messages in flight"
    killed_at = time.monotonic()

    (successor,) = run_dispatchers(provider, 1, seconds=120, CLAIM_LEASE_SECONDS=str(lease))
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 90, 0.2)
    outcomes_of([successor])
    mailing.refresh_from_db()
    assert mailing.sent == 400
    # The dead worker's claims were only taken over once their lease had run out.
    assert time.monotonic() - killed_at >= lease
    duplicates = set(provider.recorder.duplicates())
    # At-least-once, bounded: a message delivered twice was in flight at the kill, and its
    # retry used the same msgId (the stand-in counts deliveries per msgId).
    assert duplicates <= in_flight
    save_figures(
        "worker-killed",
        {"messages": 400, "in_flight_at_kill": len(in_flight), "delivered_twice": len(duplicates)},
    )
    assert set(provider.recorder.first_accepted_at()) == set(
        Message.objects.filter(mailing=mailing).values_list("id", flat=True)
    )


def save_figures(name: str, figures: dict) -> None:
    """Figures of the run, kept as a CI artifact for docs/reliability.md."""
    directory = Path(settings.BASE_DIR) / "test-artifacts"
    directory.mkdir(exist_ok=True)
    (directory / f"resilience-{name}.json").write_text(json.dumps(figures, indent=2))


def api_stats_totals() -> dict[str, int]:
    """What GET /api/v1/stats reports, through the API itself."""
    user = get_user_model().objects.create_user(f"stats-{time.monotonic_ns()}", is_staff=True)
    _, key = issue_token(user, "resilience test")
    response = HttpClient().get("/api/v1/stats", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    return response.json()["totals"]


def ids_with_lost_answers(records: list[logging.LogRecord]) -> set[int]:
    """Messages with an attempt that got no HTTP answer at all (timeout, reset, refused):
    the provider may have accepted such an attempt, so its retry may deliver it again."""
    return {
        record.message_id
        for record in records
        if record.name == "mailing.provider"
        and getattr(record, "outcome", None) == "retry"
        and getattr(record, "status_code", "absent") is None
    }


def test_a_faulty_provider_with_an_outage_loses_nothing(provider, dispatcher_factory, caplog):
    """5,000 messages through 20% 5xx, 5% timeouts, 5% malformed bodies, 2% 429s, resets
    and a 30-second outage: every message ends sent; a message is delivered twice only if
    an accepted attempt's answer was lost on the way back, and then with the same msgId."""
    caplog.set_level(logging.INFO, logger="mailing.provider")
    make_clients(5000, timezone_name="UTC")
    # UTC+12: their local clock is 12 hours ahead, outside the window below until after
    # the end, so they must never be sent (they expire).
    far_east = make_clients(200, timezone_name="Etc/GMT-12", first=10_000)
    hour = timezone.now().hour
    window = services.SendWindow(clock_time((hour - 1) % 24), clock_time((hour + 2) % 24))
    provider.update_config(
        error_rate=0.20,
        timeout_rate=0.05,
        hang_seconds=2.0,
        malformed_rate=0.05,
        throttle_rate=0.02,
        retry_after=1,
        reset_rate=0.02,
        latency_ms=5,
    )
    end_at = now_plus(600)
    mailing = services.create_mailing(
        start_at=timezone.now(), end_at=end_at, text="Storm", send_window=window
    )
    worker = dispatcher_factory(
        concurrency=100,
        total_timeout=1.0,
        retry=RetryPolicy(base=0.2, cap=2.0),
        circuit_threshold=30,
        circuit_reset_seconds=1.0,
    )
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent >= 1000, 120, 0.2)
    provider.begin_outage(30)
    outage_started = time.monotonic()
    wait_for(lambda: time.monotonic() - outage_started >= 30, 40, 0.5)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 240, 0.5)
    worker.stop()
    mailing.refresh_from_db()
    assert mailing.sent == 5000 and mailing.expired == 200 and mailing.total == 5200
    outside_window = set(
        Message.objects.filter(
            mailing=mailing, phone__in=[client.phone for client in far_east]
        ).values_list("id", flat=True)
    )
    assert len(outside_window) == 200
    assert outside_window.isdisjoint(provider.recorder.first_accepted_at())
    assert api_stats_totals()["sent"] == provider.recorder.unique_accepted
    duplicates = provider.recorder.duplicates()
    assert set(duplicates) <= ids_with_lost_answers(caplog.records)
    assert all(count == 2 for count in duplicates.values())
    assert provider.recorder.unique_accepted == 5000
    assert provider.recorder.accepted == 5000 + len(duplicates)
    stats = provider.recorder.stats()["by_outcome"]
    assert stats["error"] > 500 and stats["malformed"] > 100 and stats["throttled"] > 20
    assert max(provider.recorder.last_accepted_at().values()) < end_at.timestamp()
    retried = Message.objects.filter(mailing=mailing, attempts__gte=2).count()
    assert retried > 1000
    save_figures(
        "faulty-provider",
        {
            "messages": 5200,
            "sent": mailing.sent,
            "expired_outside_window": mailing.expired,
            "retried_messages": retried,
            "provider_outcomes": stats,
            "delivered_twice_after_a_lost_answer": len(duplicates),
        },
    )
