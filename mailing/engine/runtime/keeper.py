"""One dispatcher process: take a slot, dispatch until told to stop, give the slot back.

The keeper is the dispatcher's tick hook (it runs on the dispatcher's database thread,
twice a second): it renews the slot's lease, stores the send API's health on it every
few seconds, and stops the dispatcher when the process that started it is gone (a
dispatcher never outlives its supervisor, even one killed without a chance to stop it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime

from django.db import DatabaseError, connection
from django.utils import timezone

from mailing.engine.dispatcher import (
    Dispatcher,
    DispatcherConfig,
    DispatcherStatus,
    DispatchReport,
    new_worker_id,
)
from mailing.engine.runtime import slots

logger = logging.getLogger("mailing.engine")


class SlotKeeper:
    """A dispatcher's tick hook: keep its slot, describe it there, watch its parent."""

    def __init__(self, slot: int, owner: str, parent_pid: int | None = None) -> None:
        self.slot = slot
        self.owner = owner
        self.parent_pid = parent_pid
        self._health_stored_at = -slots.HEALTH_STORE_SECONDS

    def __call__(self, now: datetime, status: DispatcherStatus) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            logger.warning("the dispatcher's parent process is gone; stopping")
            return False
        if time.monotonic() - self._health_stored_at >= slots.HEALTH_STORE_SECONDS:
            self._health_stored_at = time.monotonic()
            slots.store_send_health(self.owner, status.send_health.summary(), now)
        if not slots.renew_slot(
            self.slot, self.owner, now, status.circuit_state.value, status.window
        ):
            # Our lease ran out (the database was away for a while) and another
            # dispatcher took the row: describe ourselves in another one.
            self.slot = slots.take_slot(self.owner, now)
            logger.warning("dispatcher %s lost its slot; now in slot %d", self.owner, self.slot)
        return True


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop``: the dispatcher records what is in flight and exits."""
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def give_back_slot(slot: int, owner: str) -> None:
    """Release our slot on the way out, whatever happened to the database meanwhile.

    This runs on the process's main thread, whose connection sat idle while the dispatcher
    worked on its own thread: if PostgreSQL restarted in between, that connection is dead,
    so it is dropped and the release tried once more on a new one. If the database is still
    away, the lease runs out by itself within ``SLOT_TTL``; a clean stop never fails for it.
    """
    try:
        slots.release_slot(slot, owner)
        return
    except DatabaseError:
        connection.close()
    try:
        slots.release_slot(slot, owner)
    except DatabaseError as error:
        connection.close()
        logger.warning(
            "could not give back slot %d (%s); its lease runs out by itself", slot, error
        )


def run_dispatcher(
    config: DispatcherConfig,
    *,
    stop: threading.Event,
    worker_id: str | None = None,
    seconds: float | None = None,
) -> DispatchReport:
    """Dispatch in a slot of the dispatcher table until ``stop`` is set, ``seconds`` have
    passed, or the parent process is gone."""
    owner = worker_id or new_worker_id()
    keeper = SlotKeeper(slots.take_slot(owner, timezone.now()), owner, parent_pid=os.getppid())
    dispatcher = Dispatcher(config, worker_id=owner, stop_event=stop, on_tick=keeper)
    logger.info("dispatcher started in slot %d as %s", keeper.slot, owner)
    try:
        report = dispatcher.run(duration=seconds)
    finally:
        give_back_slot(keeper.slot, owner)
    logger.info("dispatcher in slot %d stopped: %s", keeper.slot, report.outcomes)
    return report
