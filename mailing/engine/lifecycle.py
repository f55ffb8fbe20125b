"""The life of a mailing, driven by the dispatchers' frequent ticks: start, fan out, settle
what can no longer be sent, finish. Each step is a conditional UPDATE, so any number of
dispatchers may run the same tick at once and each change happens exactly once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Q

from mailing import events
from mailing.engine.fanout import fan_out
from mailing.models import COUNTER_FIELDS, Mailing, MailingStatus, MessageStatus
from mailing.rules import FANOUT_SLICE_SECONDS, IN_PROGRESS_STATUSES, Reason
from mailing.transitions import reconcile_counters, settle_pending, start_if_due

logger = logging.getLogger("mailing.engine")

# A fan-out slice (one chunk, or chunks for FANOUT_SLICE_SECONDS) leased this long ago is
# presumed abandoned (its worker died) and may be taken over.
FANOUT_GRACE = timedelta(seconds=30)


def start_due_mailings(now: datetime) -> list[int]:
    """Scheduled mailings whose start has come become running."""
    due = Mailing.objects.filter(status=MailingStatus.SCHEDULED, start_at__lte=now)
    return [
        mailing_id
        for mailing_id in due.values_list("id", flat=True)
        if start_if_due(mailing_id, now)
    ]


def fan_out_started_mailings(now: datetime) -> list[int]:
    """Running mailings whose messages do not all exist yet get a slice of their fan-out;
    returns those whose fan-out completed.

    A slice is the mailing's first (small) chunk alone, or chunks for up to
    ``FANOUT_SLICE_SECONDS``: the dispatcher claims and sends between slices, so sending
    starts on the first chunk. The slice is leased (``fanout_started_at``, a conditional
    UPDATE) so two dispatchers do not work on one chunk at once, and handed back after it;
    a lease left by a dead worker lapses after ``FANOUT_GRACE``. Correctness does not rest on
    the lease: each chunk's conditional UPDATE of the cursor decides who did it.
    """
    done = []
    candidates = Mailing.objects.filter(status__in=IN_PROGRESS_STATUSES, fanned_out_at__isnull=True)
    for mailing in candidates:
        lease = Mailing.objects.filter(pk=mailing.pk, fanned_out_at__isnull=True).filter(
            Q(fanout_started_at__isnull=True) | Q(fanout_started_at__lt=now - FANOUT_GRACE)
        )
        if not lease.update(fanout_started_at=now):
            continue
        try:
            if mailing.fanout_cursor == 0:
                fan_out(mailing, now, max_chunks=1)
            else:
                fan_out(mailing, now, budget_seconds=FANOUT_SLICE_SECONDS)
        finally:
            Mailing.objects.filter(pk=mailing.pk, fanout_started_at=now).update(
                fanout_started_at=None
            )
        if Mailing.objects.filter(pk=mailing.pk, fanned_out_at__isnull=False).exists():
            done.append(mailing.pk)
    return done


def settle_unsendable(now: datetime) -> int:
    """Pending messages of ended mailings expire; those of cancelled mailings are cancelled.

    Messages held by a worker are left to it and settled on a later tick.
    """
    settled = 0
    ended = Mailing.objects.filter(
        status__in=IN_PROGRESS_STATUSES, end_at__lte=now, pending__gt=0
    ).values_list("id", flat=True)
    for mailing_id in ended:
        count = settle_pending(mailing_id, MessageStatus.EXPIRED, now, reason=Reason.MAILING_ENDED)
        if count:
            logger.info(
                "%d messages expired at the end of the mailing",
                count,
                extra={"mailing_id": mailing_id, "expired_messages": count},
            )
            events.record(
                events.MAILING_MESSAGES_EXPIRED, mailing_id=mailing_id, at=now, messages=count
            )
        settled += count
    cancelled = Mailing.objects.filter(status=MailingStatus.CANCELLED, pending__gt=0).values_list(
        "id", flat=True
    )
    for mailing_id in cancelled:
        settled += settle_pending(
            mailing_id, MessageStatus.CANCELLED, now, reason=Reason.MAILING_CANCELLED
        )
    return settled


def finish_completed_mailings(now: datetime) -> list[int]:
    """A mailing with every message settled is finished (a paused one only once it ended)."""
    completed = Mailing.objects.filter(fanned_out_at__isnull=False, pending=0).filter(
        Q(status=MailingStatus.RUNNING) | Q(status=MailingStatus.PAUSED, end_at__lte=now)
    )
    finished = []
    for mailing_id, status in completed.values_list("id", "status"):
        if Mailing.objects.filter(pk=mailing_id, status=status, pending=0).update(
            status=MailingStatus.FINISHED, finished_at=now, updated_at=now
        ):
            logger.info("mailing finished", extra={"mailing_id": mailing_id})
            reconcile_counters(mailing_id)
            counts = Mailing.objects.filter(pk=mailing_id).values(*COUNTER_FIELDS).first()
            events.record(events.MAILING_FINISHED, mailing_id=mailing_id, at=now, **(counts or {}))
            finished.append(mailing_id)
    return finished


def tick(now: datetime) -> None:
    """One pass of every lifecycle step; cheap when there is nothing to do."""
    start_due_mailings(now)
    fan_out_started_mailings(now)
    settle_unsendable(now)
    finish_completed_mailings(now)
