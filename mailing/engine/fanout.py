"""Fan-out: one set-based INSERT ... SELECT turns the matching clients into messages."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import connection, transaction
from django.db.models import Case, CharField, DateTimeField, F, IntegerField, Q, Value, When

from mailing.engine.windows import next_window_opening
from mailing.models import Mailing, Message, MessageStatus
from mailing.selectors import matching_clients
from mailing.transitions import lock_mailings, settle_pending

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


def fan_out(mailing: Mailing, now: datetime) -> int:
    """Create one pending message per matching client; idempotent, returns how many were new.

    The unique (mailing, client) index with ON CONFLICT DO NOTHING makes a second run (or
    a concurrent one) insert nothing more, and the counters grow by exactly the rows
    inserted, in the same transaction.
    """
    openings = _zone_openings(mailing, now)
    first_attempt = Value(now, output_field=DateTimeField())
    if openings:
        first_attempt = Case(
            *(
                When(timezone=zone, then=Value(at, output_field=DateTimeField()))
                for zone, at in openings.items()
                if at > now
            ),
            default=first_attempt,
            output_field=DateTimeField(),
        )
    select = (
        matching_clients(mailing.operator_codes, mailing.tags)
        # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT; this one is free.
        .filter(pk__isnull=False)
        .order_by()
        .annotate(
            _mailing=Value(mailing.pk, output_field=IntegerField()),
            _status=Value(MessageStatus.PENDING.value, output_field=CharField()),
            _created=Value(now, output_field=DateTimeField()),
            _attempts=Value(0, output_field=IntegerField()),
            _error=Value("", output_field=CharField()),
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
    table = Message._meta.db_table
    insert_sql = (
        f"INSERT INTO {table} (mailing_id, client_id, phone, timezone, status, created_at, "
        f"attempts, last_error, next_attempt_at) {select_sql} "
        "ON CONFLICT (mailing_id, client_id) DO NOTHING"
    )
    with transaction.atomic():
        lock_mailings([mailing.pk])
        with connection.cursor() as cursor:
            cursor.execute(insert_sql, params)
            inserted = max(cursor.rowcount, 0)
        Mailing.objects.filter(pk=mailing.pk).update(
            total=F("total") + inserted, pending=F("pending") + inserted, fanned_out_at=now
        )
        closed_zones = [zone for zone, at in openings.items() if at >= mailing.end_at]
        expired = 0
        if closed_zones:
            expired = settle_pending(
                mailing.pk,
                MessageStatus.EXPIRED,
                now,
                only=Q(timezone__in=closed_zones),
                reason="send window does not open before the mailing ends",
            )
    logger.info(
        "fan-out created %d messages (%d expired: window closed until the end)",
        inserted,
        expired,
        extra={"mailing_id": mailing.pk, "messages_created": inserted},
    )
    return inserted
