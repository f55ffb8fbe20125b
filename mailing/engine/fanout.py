"""Fan-out: one set-based INSERT ... SELECT turns the matching clients into messages."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import connection, transaction
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    Expression,
    F,
    IntegerField,
    QuerySet,
    Value,
    When,
)

from mailing.engine.windows import next_window_opening
from mailing.models import Client, Mailing, Message, MessageStatus
from mailing.selectors import matching_clients
from mailing.transitions import lock_mailings

logger = logging.getLogger("mailing.engine")


def _zone_openings(mailing: Mailing, now: datetime) -> dict[str, datetime]:
    """When each client zone's window next opens (grouped: few zones, many clients)."""
    if not mailing.has_window:
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
        openings[zone] = next_window_opening(now, info, mailing.window_start, mailing.window_end)
    return openings


WINDOW_NEVER_OPENS = "send window does not open before the mailing ends"


def _insert_messages(
    mailing: Mailing,
    clients: QuerySet[Client],
    now: datetime,
    status: str,
    first_attempt: Expression,
    last_error: str = "",
) -> int:
    """INSERT ... SELECT one message per client of ``clients``; returns the rows inserted."""
    select = (
        # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT; this one is free.
        clients.filter(pk__isnull=False)
        .order_by()
        .annotate(
            _mailing=Value(mailing.pk, output_field=IntegerField()),
            _status=Value(status, output_field=CharField()),
            _created=Value(now, output_field=DateTimeField()),
            _attempts=Value(0, output_field=IntegerField()),
            _error=Value(last_error, output_field=CharField()),
            _next=first_attempt,
        )
        .values_list(
            "_mailing",
            "pk",
            "phone",
            "timezone",
            "_status",
            "_created",
            "_attempts",
            "_error",
            "_next",
        )
    )
    select_sql, params = select.query.sql_with_params()
    insert_sql = (
        f"INSERT INTO {Message._meta.db_table} (mailing_id, client_id, phone, timezone, status, "
        f"created_at, attempts, last_error, next_attempt_at) {select_sql} "
        "ON CONFLICT (mailing_id, client_id) DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(insert_sql, params)
        return max(cursor.rowcount, 0)


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
        pending = _insert_messages(
            mailing,
            audience.exclude(timezone__in=closed_zones),
            now,
            MessageStatus.PENDING,
            first_attempt,
        )
        expired = 0
        if closed_zones:
            expired = _insert_messages(
                mailing,
                audience.filter(timezone__in=closed_zones),
                now,
                MessageStatus.EXPIRED,
                Value(now, output_field=DateTimeField()),
                WINDOW_NEVER_OPENS,
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
