"""Fan-out: the matching clients become messages, in chunks of clients in id order.

A chunk is one short transaction of a few statements:

1. the lock: ``UPDATE mailing SET fanout_cursor = <chunk's last client id> WHERE id = <id>
   AND fanout_cursor = <where this chunk starts> AND fanned_out_at IS NULL``. Whoever moves
   the cursor owns the chunk; a worker that finds it moved (another did the chunk) rolls
   back and starts again from the new cursor. It also takes the mailing's row lock, so the
   messages are inserted under it, as every other change of the counters is;
2. one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` of the chunk's clients (two when
   some zones' windows never open before the end: those messages are born expired);
3. the counters grow by exactly the rows inserted; the last chunk (no more clients left
   than a chunk holds) also sets ``fanned_out_at`` and records the one ``mailing.fanned_out``
   event.

A worker that dies mid-chunk loses only that chunk's open transaction, which the database
rolls back; whoever resumes starts from the cursor, and the unique (mailing, client) index
keeps even a mistaken repeat from inserting twice. The counters are exact at every commit:
``total`` grows with the messages that exist, and ``fanned_out_at`` says when it is final.

The first chunk of a mailing is small (``rules.FANOUT_FIRST_CHUNK``) and the dispatcher's
tick runs it alone (``lifecycle.fan_out_started_mailings``), so the first messages are
claimed milliseconds after the mailing starts, whatever the audience size; later ticks run
chunks of ``FANOUT_CHUNK_SIZE`` for up to ``rules.FANOUT_SLICE_SECONDS`` each, between
which the dispatcher claims, sends and records.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DateTimeField, Expression, F, QuerySet, Value, When

from mailing import events, sql
from mailing.models import Client, Mailing, MessageStatus
from mailing.rules import FANOUT_FIRST_CHUNK, Reason
from mailing.selectors import audience_of
from mailing.windows import next_window_opening

logger = logging.getLogger("mailing.engine")


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one chunk did: messages inserted (``expired`` of them born expired), and
    whether it completed the fan-out. ``lost`` when another worker had moved the cursor."""

    created: int = 0
    expired: int = 0
    done: bool = False
    lost: bool = False


def chunk_size(cursor: int) -> int | None:
    """Clients per chunk; None means the whole rest of the audience in one statement.

    ``FANOUT_CHUNK_SIZE=0`` is the one-statement fan-out (what the benchmark compares with).
    """
    size = settings.FANOUT_CHUNK_SIZE
    if size <= 0:
        return None
    return min(size, FANOUT_FIRST_CHUNK) if cursor == 0 else size


def _zone_openings(
    clients: QuerySet[Client], mailing: Mailing, now: datetime
) -> dict[str, datetime]:
    """When each zone of these clients next opens its window (few zones, many clients)."""
    window = mailing.send_window
    if window is None:
        return {}
    zones = clients.order_by().values_list("timezone", flat=True).distinct()
    openings = {}
    for zone in zones:
        try:
            info = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            continue  # checked again when claimed, where the message fails with the reason
        openings[zone] = next_window_opening(now, info, window.start, window.end)
    return openings


def _insert(clients: QuerySet[Client], mailing: Mailing, now: datetime) -> tuple[int, int]:
    """The messages of these clients; returns (inserted, of which born expired)."""
    openings = _zone_openings(clients, mailing, now)
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
    pending = sql.insert_messages(
        clients.exclude(timezone__in=closed_zones) if closed_zones else clients,
        mailing_id=mailing.pk,
        status=MessageStatus.PENDING,
        created_at=now,
        next_attempt_at=first_attempt,
    )
    expired = 0
    if closed_zones:
        expired = sql.insert_messages(
            clients.filter(timezone__in=closed_zones),
            mailing_id=mailing.pk,
            status=MessageStatus.EXPIRED,
            created_at=now,
            next_attempt_at=Value(now, output_field=DateTimeField()),
            last_error=Reason.WINDOW_NEVER_OPENS,
        )
    return pending + expired, expired


class _CursorMoved(Exception):
    """Another worker did this chunk: roll it back."""


def fan_out_chunk(mailing: Mailing, now: datetime) -> Chunk:
    """Fan out the next chunk of ``mailing``'s audience, in one transaction."""
    state = (
        Mailing.objects.filter(pk=mailing.pk).values_list("fanout_cursor", "fanned_out_at").first()
    )
    if state is None or state[1] is not None:
        return Chunk(done=True, lost=True)
    cursor = state[0]
    audience = audience_of(mailing).filter(pk__gt=cursor)
    size = chunk_size(cursor)
    last = None
    if size is not None:
        # The chunk's last client, if one more follows it (else this chunk is the last).
        ends = list(audience.order_by("pk").values_list("pk", flat=True)[size - 1 : size + 1])
        last = ends[0] if len(ends) == 2 else None
    clients = audience if last is None else audience.filter(pk__lte=last)
    try:
        with transaction.atomic():
            moved = Mailing.objects.filter(
                pk=mailing.pk, fanout_cursor=cursor, fanned_out_at__isnull=True
            ).update(fanout_cursor=cursor if last is None else last)
            if not moved:
                raise _CursorMoved
            sql.commit_without_waiting_for_disk()
            created, expired = _insert(clients, mailing, now)
            done = last is None
            Mailing.objects.filter(pk=mailing.pk).update(
                total=F("total") + created,
                pending=F("pending") + created - expired,
                expired=F("expired") + expired,
                fanout_expired=F("fanout_expired") + expired,
                **({"fanned_out_at": now} if done else {}),
            )
            if done:
                _record_fanned_out(mailing.pk, now)
    except _CursorMoved:
        return Chunk(lost=True)
    return Chunk(created, expired, done)


def _record_fanned_out(mailing_id: int, now: datetime) -> None:
    """One event and one log line for the whole fan-out, never one per message or chunk:
    each message's timeline starts with it."""
    total, expired = Mailing.objects.values_list("total", "fanout_expired").get(pk=mailing_id)
    events.record(
        events.MAILING_FANNED_OUT,
        mailing_id=mailing_id,
        at=now,
        messages=total,
        expired_at_creation=expired,
    )
    logger.info(
        "fan-out created %d messages (%d expired: window closed until the end)",
        total,
        expired,
        extra={"mailing_id": mailing_id, "messages_created": total},
    )


def fan_out(
    mailing: Mailing,
    now: datetime,
    *,
    max_chunks: int | None = None,
    budget_seconds: float | None = None,
) -> int:
    """Fan out ``mailing`` chunk by chunk; returns how many messages this call created.

    Stops when the fan-out is complete, after ``max_chunks`` chunks, or once
    ``budget_seconds`` of work have passed (checked between chunks). Idempotent: a complete
    fan-out creates nothing more.
    """
    created = 0
    chunks = 0
    started = time.monotonic()
    while True:
        chunk = fan_out_chunk(mailing, now)
        created += chunk.created
        chunks += 0 if chunk.lost else 1
        if chunk.done:
            return created
        if max_chunks is not None and chunks >= max_chunks:
            return created
        if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
            return created
