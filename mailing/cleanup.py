"""Deletes that must not hold locks: a deleted mailing's rows, events past their retention.

Both go in batches of ``DELETE_BATCH_SIZE`` rows, each batch its own short transaction, so
no statement holds row locks for long and the engine and the UI keep writing meanwhile. A
task works for at most ``DELETE_TASK_SECONDS``, then hands what is left to a fresh q2 task
(q2 stops a task at its timeout). The schedules created after migrations run them anyway,
so work whose worker died is picked up again; two of them at once skip each other's rows.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from mailing import selectors
from mailing.models import Event, Mailing, Message
from mailing.rules import DELETE_BATCH_SIZE, DELETE_TASK_SECONDS, MailingStatus

logger = logging.getLogger("mailing.cleanup")

PURGE_TASK = "mailing.cleanup.purge_deleted_mailings"
PURGE_SCHEDULE_NAME = "purge-deleted-mailings"
PURGE_SCHEDULE_MINUTES = 5
RETENTION_TASK = "mailing.cleanup.delete_old_events"
RETENTION_SCHEDULE_NAME = "delete-old-events"


def delete_batch(rows: QuerySet, batch_size: int) -> int:
    """Delete up to ``batch_size`` rows of ``rows`` in one short transaction; returns how
    many. Rows another deleter holds are skipped (PostgreSQL), not waited for."""
    model = rows.model
    with transaction.atomic():
        ids = list(
            rows.order_by()
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return 0
        deleted, _ = model.objects.filter(pk__in=ids).delete()
    return deleted


def _enqueue(func: str, name: str) -> None:
    from django_q.tasks import async_task

    try:
        async_task(func, task_name=name)
    except Exception:  # the broker is down: the task's schedule runs it later anyway
        logger.exception("could not enqueue %s", name)


def enqueue_purge() -> None:
    """Start the purge now rather than at the next schedule (called after the commit)."""
    _enqueue(PURGE_TASK, PURGE_SCHEDULE_NAME)


def purge_deleted_mailings(
    *, batch_size: int = DELETE_BATCH_SIZE, seconds: float = DELETE_TASK_SECONDS
) -> dict[str, int]:
    """Remove the messages of deleted mailings in batches, then the mailings; after
    ``seconds``, enqueue a fresh task for the rest. Returns the rows deleted and whether
    work is left (``left``: 1 or 0)."""
    deadline = time.monotonic() + seconds
    removed = {"messages": 0, "mailings": 0, "left": 0}
    for mailing_id in selectors.deleted_mailing_ids():
        messages = Message.objects.filter(mailing_id=mailing_id)
        while time.monotonic() < deadline:
            deleted = delete_batch(messages, batch_size)
            removed["messages"] += deleted
            if not deleted:
                break
        if time.monotonic() >= deadline:
            removed["left"] = 1
            break
        if messages.exists():
            continue  # another purger holds its last batch; it finishes this mailing
        gone, _ = Mailing.objects.filter(pk=mailing_id, status=MailingStatus.DELETING).delete()
        if gone:
            removed["mailings"] += 1
            logger.info("deleted mailing purged", extra={"mailing_id": mailing_id})
    if removed["left"]:
        enqueue_purge()
    return removed


def delete_old_events(
    now: datetime | None = None,
    *,
    batch_size: int = DELETE_BATCH_SIZE,
    seconds: float = DELETE_TASK_SECONDS,
) -> dict[str, int]:
    """Delete the events older than EVENT_RETENTION_DAYS (0 keeps them all), oldest first.

    Events are appended in time order, so the old ones are the table's head by id: each
    batch reads the first ``batch_size`` ids (a range of the primary key, no index on
    ``at`` needed), deletes those past the cutoff and stops at the first one inside it. The
    hourly schedule runs it; after ``seconds`` it enqueues a fresh task for the rest.
    """
    days = settings.EVENT_RETENTION_DAYS
    removed = {"events": 0, "left": 0}
    if days <= 0:
        return removed
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deadline = time.monotonic() + seconds
    while True:
        if time.monotonic() >= deadline:
            removed["left"] = 1
            break
        with transaction.atomic():
            head = list(Event.objects.order_by("id").values_list("id", "at")[:batch_size])
            old = [event_id for event_id, at in head if at < cutoff]
            if old:
                Event.objects.filter(id__in=old).delete()
        removed["events"] += len(old)
        if len(old) < len(head) or len(head) < batch_size:
            break  # reached the events inside the retention period, or the table's end
    if removed["left"]:
        _enqueue(RETENTION_TASK, RETENTION_SCHEDULE_NAME)
    elif removed["events"]:
        logger.info("%d events past their retention deleted", removed["events"])
    return removed


def ensure_schedules() -> None:
    """The purge's and the event retention's schedules, created once (post_migrate)."""
    from django_q.models import Schedule

    Schedule.objects.get_or_create(
        name=RETENTION_SCHEDULE_NAME,
        defaults={"func": RETENTION_TASK, "schedule_type": Schedule.HOURLY, "repeats": -1},
    )
    Schedule.objects.get_or_create(
        name=PURGE_SCHEDULE_NAME,
        defaults={
            "func": PURGE_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": PURGE_SCHEDULE_MINUTES,
            "repeats": -1,
        },
    )
