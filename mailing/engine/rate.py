"""Token buckets held in database rows, so a send-rate limit holds across workers and
hosts: the shared one of the send API (``provider_state``) and each mailing's own
(``Mailing.rate_limit``). A worker takes permits under the row's lock before it claims."""

from __future__ import annotations

import math
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Least

from mailing.models import Mailing

# A bucket holds at most this many seconds of sending, so a pause does not turn into a burst.
BURST_SECONDS = 0.5


def capacity(rate: float) -> float:
    return max(1.0, rate * BURST_SECONDS)


def take(
    tokens: float, refreshed_at: datetime | None, rate: float, now: datetime, wanted: int
) -> tuple[int, float]:
    """(permits granted, tokens left) from a bucket refilled at ``rate`` per second that
    held ``tokens`` at ``refreshed_at`` (None: never used, so full)."""
    full = capacity(rate)
    if refreshed_at is None:
        tokens = full
    else:
        elapsed = max(0.0, (now - refreshed_at).total_seconds())
        tokens = min(full, tokens + elapsed * rate)
    granted = max(0, min(wanted, math.floor(tokens)))
    return granted, tokens - granted


def acquire_mailing_permits(limits: dict[int, float], wanted: int, now: datetime) -> dict[int, int]:
    """Up to ``wanted`` permits from each rate-limited mailing's bucket (mailing id -> its
    rate), in one short transaction, locking the rows in id order."""
    granted: dict[int, int] = {}
    if not limits or wanted <= 0:
        return granted
    with transaction.atomic():
        rows = (
            Mailing.objects.select_for_update()
            .filter(pk__in=limits)
            .order_by("pk")
            .values_list("pk", "rate_tokens", "rate_refreshed_at")
        )
        for mailing_id, tokens, refreshed_at in rows:
            granted[mailing_id], left = take(tokens, refreshed_at, limits[mailing_id], now, wanted)
            Mailing.objects.filter(pk=mailing_id).update(rate_tokens=left, rate_refreshed_at=now)
    return granted


def give_back_mailing_permits(unused: dict[int, int], limits: dict[int, float]) -> None:
    """Return permits taken but not used (fewer messages were due), up to each bucket's
    capacity."""
    for mailing_id, count in sorted(unused.items()):
        if count > 0:
            Mailing.objects.filter(pk=mailing_id).update(
                rate_tokens=Least(F("rate_tokens") + count, capacity(limits[mailing_id]))
            )
