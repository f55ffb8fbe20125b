"""django-q2 task entry points: the long-running dispatchers and their keeper, and the
hooks that start them (post_migrate: the keeper schedule; post_spawn: at worker start)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from mailing.engine.dispatcher import Dispatcher, DispatcherStatus, new_worker_id
from mailing.engine.runtime import slots

logger = logging.getLogger("mailing.engine")

ENSURE_SCHEDULE_NAME = "ensure-dispatchers"
# The q2 task paths (migration 0004 moved the keeper schedule's from mailing.tasks).
RUN_DISPATCHER = "mailing.engine.runtime.tasks.run_dispatcher"
ENSURE_DISPATCHERS = "mailing.engine.runtime.tasks.ensure_dispatchers"


def enqueue_dispatcher(slot: int) -> None:
    slots.mark_enqueued(slot, timezone.now())
    async_task(RUN_DISPATCHER, slot, task_name=f"dispatcher-{slot}")


def ensure_dispatchers() -> list[int]:
    """Enqueue a dispatcher for every slot that has none (run at worker start and every minute)."""
    needing = slots.slots_needing_dispatcher(timezone.now(), settings.DISPATCHER_SLOTS)
    for slot in needing:
        async_task(RUN_DISPATCHER, slot, task_name=f"dispatcher-{slot}")
    if needing:
        logger.info("dispatchers enqueued for slots %s", needing)
    return needing


def ensure_schedule() -> None:
    """The keeper schedule, created once whatever runs this (post_migrate, tests, commands)."""
    Schedule.objects.update_or_create(
        name=ENSURE_SCHEDULE_NAME,
        defaults={
            "func": ENSURE_DISPATCHERS,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """Stop gracefully on SIGTERM/SIGINT while dispatching (q2 runs tasks in the main thread)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _acquire(slot: int, owner: str) -> bool:
    """Take the slot, waiting out the lease of a dispatcher that died holding it."""
    deadline = time.monotonic() + slots.SLOT_TTL.total_seconds() + 2
    while True:
        if slots.acquire_slot(slot, owner, timezone.now()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


class SlotKeeper:
    """A slot holder's tick hook (on the dispatcher's database thread): renew the lease,
    and every few seconds store the send API's health as the dispatcher saw it."""

    def __init__(self, slot: int, owner: str) -> None:
        self.slot = slot
        self.owner = owner
        self._health_stored_at = -slots.HEALTH_STORE_SECONDS

    def __call__(self, now: datetime, status: DispatcherStatus) -> bool:
        if time.monotonic() - self._health_stored_at >= slots.HEALTH_STORE_SECONDS:
            self._health_stored_at = time.monotonic()
            slots.store_send_health(self.owner, status.send_health.summary(), now)
        return slots.renew_slot(self.slot, self.owner, now, status.circuit_state.value)


def run_dispatcher(slot: int) -> str:
    """Dispatch for DISPATCHER_RUN_SECONDS in one slot, then hand over to a successor task."""
    owner = new_worker_id()
    if not _acquire(slot, owner):
        return f"slot {slot} is held by a live dispatcher"
    stop = threading.Event()
    dispatcher = Dispatcher(worker_id=owner, stop_event=stop, on_tick=SlotKeeper(slot, owner))
    logger.info("dispatcher started in slot %d as %s", slot, owner)
    with _stop_on_signals(stop) as signals_received:
        try:
            report = dispatcher.run(duration=settings.DISPATCHER_RUN_SECONDS)
        finally:
            slots.release_slot(slot, owner)
    if not signals_received:
        enqueue_dispatcher(slot)
    logger.info("dispatcher in slot %d done: %s", slot, report.outcomes)
    return f"slot {slot}: claimed {report.claimed}, outcomes {report.outcomes}"
