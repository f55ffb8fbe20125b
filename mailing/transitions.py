"""Bulk status changes of messages, always together with the mailing's counters.

Every change of a message's status goes through here (or through the engine's recorder,
which uses ``shift_counters``), inside the caller's transaction, so the per-status counters
of a mailing are exact at every commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, Q, QuerySet

from mailing import events
from mailing.models import COUNTER_FIELDS, Mailing, MailingStatus, Message, MessageStatus
from mailing.rules import Reason

logger = logging.getLogger("mailing.engine")


def lock_mailings(mailing_ids: Iterable[int]) -> None:
    """Lock the mailings' rows, in id order, before their messages change status.

    Taking the counter row first (every writer, in one order) means a reconciliation that
    holds the same lock counts messages that no one else is changing at that moment.
    """
    list(
        Mailing.objects.select_for_update()
        .filter(pk__in=sorted(set(mailing_ids)))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def shift_counters(mailing_id: int, from_status: str, to_status: str, count: int) -> None:
    """Move ``count`` messages of one mailing from one status counter to another."""
    if count <= 0 or from_status == to_status:
        return
    assert from_status in COUNTER_FIELDS and to_status in COUNTER_FIELDS
    Mailing.objects.filter(pk=mailing_id).update(
        **{from_status: F(from_status) - count, to_status: F(to_status) + count}
    )


def start_if_due(mailing_id: int, now: datetime) -> bool:
    """The one way a mailing becomes running: scheduled, and its start has come.

    Creating a mailing inside its period, moving its start to now, and the engine's tick
    all come here. A conditional UPDATE, so of any number of callers exactly one starts
    it, and that one records ``mailing.started``.
    """
    started = Mailing.objects.filter(
        pk=mailing_id, status=MailingStatus.SCHEDULED, start_at__lte=now
    ).update(status=MailingStatus.RUNNING, updated_at=now)
    if started:
        logger.info("mailing started", extra={"mailing_id": mailing_id})
        events.record(events.MAILING_STARTED, mailing_id=mailing_id, at=now)
    return bool(started)


def unleased(now: datetime) -> Q:
    """Messages no worker holds right now: never claimed, or their claim has lapsed.

    A message in a worker's hands may be accepted by the provider at any moment, so bulk
    changes leave it alone; the worker records its result and a later pass catches the rest.
    """
    return Q(claimed_by__isnull=True) | Q(next_attempt_at__lte=now)


def settle_pending(
    mailing_id: int,
    to_status: str,
    now: datetime,
    *,
    only: Q | None = None,
    reason: str = "",
) -> int:
    """Give every unleased pending message of a mailing a final status; returns how many."""
    messages: QuerySet[Message] = Message.objects.filter(
        unleased(now), mailing_id=mailing_id, status=MessageStatus.PENDING
    )
    if only is not None:
        messages = messages.filter(only)
    with transaction.atomic():
        lock_mailings([mailing_id])
        # One event per message changed, written by the same statement (events.py).
        changed = events.settle_with_events(
            messages, to_status, reason, events.SETTLED_KIND[to_status], now
        )
        shift_counters(mailing_id, MessageStatus.PENDING, to_status, changed)
    return changed


def cancel_messages_of_client(client_id: int, now: datetime) -> int:
    """Cancel the unleased pending messages of one client, in every mailing."""
    return cancel_messages_of_clients([client_id], now)


def cancel_messages_of_clients(client_ids: list[int], now: datetime) -> int:
    """Cancel the unleased pending messages of these clients, in every mailing."""
    mailing_ids: Iterable[int] = (
        Message.objects.filter(client_id__in=client_ids, status=MessageStatus.PENDING)
        .order_by()
        .values_list("mailing_id", flat=True)
        .distinct()
    )
    cancelled = 0
    for mailing_id in sorted(set(mailing_ids)):
        cancelled += settle_pending(
            mailing_id,
            MessageStatus.CANCELLED,
            now,
            only=Q(client_id__in=client_ids),
            reason=Reason.CLIENT_DELETED,
        )
    return cancelled


def cancel_messages_of_phone(phone: str, now: datetime) -> int:
    """Cancel the unleased pending messages to one phone, in every mailing (an opt-out).

    A message a worker holds right now is its worker's; it is cancelled by the next pass
    (``settle_opted_out``) if it comes back pending."""
    mailing_ids: Iterable[int] = (
        Message.objects.filter(phone=phone, status=MessageStatus.PENDING)
        .values_list("mailing_id", flat=True)
        .distinct()
    )
    return sum(
        settle_pending(
            mailing_id,
            MessageStatus.CANCELLED,
            now,
            only=Q(phone=phone),
            reason=Reason.OPTED_OUT,
        )
        for mailing_id in sorted(set(mailing_ids))
    )


def reconcile_counters(mailing_id: int) -> dict[str, int]:
    """Recount a mailing's messages and correct its counters; returns the corrections made.

    The counters are kept exact by construction; this catches drift from anything that
    bypassed the rules (a manual SQL fix, a bug) and is run when a mailing finishes and on
    demand (``manage.py reconcile_counters``).
    """
    with transaction.atomic():
        lock_mailings([mailing_id])
        actual = dict(
            Message.objects.filter(mailing_id=mailing_id)
            .order_by()
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        counted = {name: actual.get(name, 0) for name in COUNTER_FIELDS}
        counted["total"] = sum(counted.values())
        mailing = Mailing.objects.get(pk=mailing_id)
        corrections = {
            name: value - getattr(mailing, name)
            for name, value in counted.items()
            if getattr(mailing, name) != value
        }
        if corrections:
            Mailing.objects.filter(pk=mailing_id).update(**counted)
    if corrections:
        logger.warning(
            "counters corrected by reconciliation: %s",
            corrections,
            extra={"mailing_id": mailing_id},
        )
    return corrections
