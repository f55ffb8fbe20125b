"""Dispatcher slots: how many long-running dispatchers the cluster keeps alive.

Each slot is held by at most one dispatcher through a lease that it renews on every tick.
A slot whose lease has not been renewed lately needs a dispatcher; marking it ``enqueued``
with a conditional UPDATE makes only one of several callers enqueue one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q

from mailing.models import DispatcherSlot

SLOT_TTL = timedelta(seconds=15)
# A live dispatcher renews every tick (0.5 s); one silent for this long is presumed gone.
SILENCE = timedelta(seconds=3)
ENQUEUE_DEBOUNCE = timedelta(seconds=30)
# How often a dispatcher's last minute of send health is written onto its slot.
HEALTH_STORE_SECONDS = 2.0


def _ensure_rows(count: int) -> None:
    existing = set(DispatcherSlot.objects.values_list("slot", flat=True))
    DispatcherSlot.objects.bulk_create(
        [DispatcherSlot(slot=n) for n in range(count) if n not in existing],
        ignore_conflicts=True,
    )


def slots_needing_dispatcher(now: datetime, count: int) -> list[int]:
    """Slots with no live dispatcher and none enqueued lately; marks them enqueued."""
    _ensure_rows(count)
    needing = []
    for slot in range(count):
        marked = (
            DispatcherSlot.objects.filter(slot=slot)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now + SLOT_TTL - SILENCE))
            .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - ENQUEUE_DEBOUNCE))
            .update(enqueued_at=now)
        )
        if marked:
            needing.append(slot)
    return needing


def mark_enqueued(slot: int, now: datetime) -> None:
    DispatcherSlot.objects.filter(slot=slot).update(enqueued_at=now)


def acquire_slot(slot: int, owner: str, now: datetime) -> bool:
    _ensure_rows(slot + 1)
    return bool(
        DispatcherSlot.objects.filter(slot=slot)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(owner=owner))
        .update(owner=owner, lease_until=now + SLOT_TTL, heartbeat_at=now, enqueued_at=None)
    )


def renew_slot(slot: int, owner: str, now: datetime, circuit_state: str) -> bool:
    """Extend our lease; False if another dispatcher has taken the slot over."""
    return bool(
        DispatcherSlot.objects.filter(slot=slot, owner=owner).update(
            lease_until=now + SLOT_TTL, heartbeat_at=now, circuit_state=circuit_state
        )
    )


def release_slot(slot: int, owner: str) -> None:
    DispatcherSlot.objects.filter(slot=slot, owner=owner).update(lease_until=None)


def store_send_health(owner: str, health: dict[str, float | int | None], now: datetime) -> None:
    """The last minute's latency and errors of the send API, for the staff UI."""
    DispatcherSlot.objects.filter(owner=owner).update(
        send_requests=health["requests"],
        send_p50_ms=health["p50_ms"],
        send_p95_ms=health["p95_ms"],
        send_error_rate=health["error_rate"],
        send_health_at=now,
    )
