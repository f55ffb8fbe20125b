"""Fan-out: one set-based INSERT ... SELECT turns the matching clients into messages."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import transaction
from django.db.models import Case, DateTimeField, Expression, F, Value, When

from mailing import sql
from mailing.models import Mailing, MessageStatus
from mailing.rules import Reason
from mailing.selectors import matching_clients
from mailing.transitions import lock_mailings
from mailing.windows import next_window_opening

logger = logging.getLogger("mailing.engine")


def _zone_openings(mailing: Mailing, now: datetime) -> dict[str, datetime]:
    """When each client zone's window next opens (grouped: few zones, many clients)."""
    window = mailing.send_window
    if window is None:
        return {}
    zones = (
        matching_clients(mailing.operator_codes, mailing.tags)
        .order_by()
        .values_list("timezone", flat=True)
        .distinct()
    )
    openings = {}
    for zone in zones:
        try:
            info = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            continue  # checked again when claimed, where the message fails with the reason
        openings[zone] = next_window_opening(now, info, window.start, window.end)
    return openings


def fan_out(mailing: Mailing, now: datetime) -> int:
    """Create one message per matching client; idempotent, returns how many were new.

    Set-based: one INSERT ... SELECT (two when some zones' windows never open before the
    end: those messages are born expired). The unique (mailing, client) index with
    ON CONFLICT DO NOTHING makes a second run, or a concurrent one, insert nothing more,
    and the counters grow by exactly the rows inserted, in the same transaction.
    """
    openings = _zone_openings(mailing, now)
    closed_zones = sorted(zone for zone, at in openings.items() if at >= mailing.end_at)
    first_attempt: Expression = Value(now, output_field=DateTimeField())
    waiting = {zone: at for zone, at in openings.items() if now < at < mailing.end_at}
    if waiting:
        first_attempt = Case(
            *(
                When(timezone=zone, then=Value(at, output_field=DateTimeField()))
                for zone, at in waiting.items()
            ),
            default=first_attempt,
            output_field=DateTimeField(),
        )
    audience = matching_clients(mailing.operator_codes, mailing.tags)
    with transaction.atomic():
        lock_mailings([mailing.pk])
        pending = sql.insert_messages(
            audience.exclude(timezone__in=closed_zones),
            mailing_id=mailing.pk,
            status=MessageStatus.PENDING,
            created_at=now,
            next_attempt_at=first_attempt,
        )
        expired = 0
        if closed_zones:
            expired = sql.insert_messages(
                audience.filter(timezone__in=closed_zones),
                mailing_id=mailing.pk,
                status=MessageStatus.EXPIRED,
                created_at=now,
                next_attempt_at=Value(now, output_field=DateTimeField()),
                last_error=Reason.WINDOW_NEVER_OPENS,
            )
        Mailing.objects.filter(pk=mailing.pk).update(
            total=F("total") + pending + expired,
            pending=F("pending") + pending,
            expired=F("expired") + expired,
            fanned_out_at=now,
        )
    logger.info(
        "fan-out created %d messages (%d expired: window closed until the end)",
        pending + expired,
        expired,
        extra={"mailing_id": mailing.pk, "messages_created": pending + expired},
    )
    return pending + expired
