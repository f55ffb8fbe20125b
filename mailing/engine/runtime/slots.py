"""The dispatcher table: each running dispatcher holds one row (a "slot") under a lease.

The row is how the staff UI and the metrics see the dispatchers: its heartbeat says it is
alive, and it carries the circuit state, the concurrency window and the send API's health
as that dispatcher sees it. A dispatcher takes the lowest slot that nobody holds (a
conditional UPDATE, or a new row), renews its lease every tick and gives it back when it
stops; the slot of one that died becomes free when its lease runs out. Slots only identify
and describe dispatchers: who runs them, and how many, is the supervisor's business
(``supervisor.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from mailing.models import DispatcherSlot

SLOT_TTL = timedelta(seconds=15)
# How often a dispatcher's last minute of send health is written onto its slot.
HEALTH_STORE_SECONDS = 2.0


def _free(now: datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def take_slot(owner: str, now: datetime) -> int:
    """The lowest free slot, taken for ``owner`` (a new one when every slot is held)."""
    while True:
        free = (
            DispatcherSlot.objects.filter(_free(now))
            .order_by("slot")
            .values_list("slot", flat=True)
        )
        for slot in free[:5]:
            if (
                DispatcherSlot.objects.filter(_free(now), slot=slot).update(
                    owner=owner, lease_until=now + SLOT_TTL, heartbeat_at=now
                )
                == 1
            ):
                return slot
        highest = DispatcherSlot.objects.aggregate(highest=Max("slot"))["highest"]
        slot = 0 if highest is None else highest + 1
        try:
            with transaction.atomic():
                DispatcherSlot.objects.create(
                    slot=slot, owner=owner, lease_until=now + SLOT_TTL, heartbeat_at=now
                )
            return slot
        except IntegrityError:
            continue  # another dispatcher created that row first: look again


def renew_slot(
    slot: int, owner: str, now: datetime, circuit_state: str, window: int | None = None
) -> bool:
    """Extend our lease and describe ourselves (circuit state, concurrency window); False
    if the slot is no longer ours (our lease ran out)."""
    return bool(
        DispatcherSlot.objects.filter(slot=slot, owner=owner).update(
            lease_until=now + SLOT_TTL,
            heartbeat_at=now,
            circuit_state=circuit_state,
            send_window=window,
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
