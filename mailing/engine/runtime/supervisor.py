"""The supervisor: keeps a fixed number of dispatcher processes running beside the q2
cluster, replaces one that exits, and stops them all, bounded, when asked.

It runs as a thread of the ``qcluster`` process (``worker.py``). Each dispatcher is a
child process (``manage.py dispatch``) in the same process group, so whatever kills the
whole worker (an OOM kill, ``kill -9`` of the group) kills the dispatchers with it, and a
dispatcher whose supervisor vanished alone stops by itself (``keeper.SlotKeeper``).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

logger = logging.getLogger("mailing.engine")

POLL_SECONDS = 0.5
# A dispatcher that exits sooner than this after its start is failing: wait longer each
# time before the next one (1 s, 2 s, 4 s ... up to MAX_RESTART_DELAY).
HEALTHY_RUN_SECONDS = 30.0
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0


def dispatch_command() -> list[str]:
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "dispatch"]


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    restart_delay: float = FIRST_RESTART_DELAY


class DispatcherSupervisor:
    def __init__(
        self, count: int, *, stop_seconds: float, command: list[str] | None = None
    ) -> None:
        self.count = count
        # How long stopping dispatchers get before they are killed.
        self.stop_seconds = stop_seconds
        self.command = command or dispatch_command()
        self._children = [_Child(index) for index in range(count)]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dispatcher-supervisor")

    # --- called from the worker's main thread -------------------------------------------

    def start(self) -> DispatcherSupervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask every dispatcher to stop (SIGTERM); ``join`` waits for them."""
        self._stopping.set()

    def join(self) -> None:
        self._thread.join()

    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children if c.process and c.process.poll() is None]

    # --- the supervisor's thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for child in self._children:
                    self._keep(child)
                self._stopping.wait(POLL_SECONDS)
        finally:
            self._stop_all()

    def _keep(self, child: _Child) -> None:
        """Start the child's dispatcher if it has none running and its restart is due."""
        now = time.monotonic()
        if child.process is not None:
            code = child.process.poll()
            if code is None:
                return
            lived = now - child.started_at
            child.restart_delay = (
                FIRST_RESTART_DELAY
                if lived >= HEALTHY_RUN_SECONDS
                else min(child.restart_delay * 2, MAX_RESTART_DELAY)
            )
            child.restart_at = now + child.restart_delay
            child.process = None
            logger.error(
                "dispatcher %d exited with code %s after %.0f s; a new one starts in %.0f s",
                child.index,
                code,
                lived,
                child.restart_delay,
            )
        if now >= child.restart_at:
            # Logs go to stderr, as the worker's do; the run's report on stdout is dropped.
            child.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
            child.started_at = now
            logger.info("dispatcher %d started (pid %d)", child.index, child.process.pid)

    def _stop_all(self) -> None:
        running = [c.process for c in self._children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "dispatcher pid %d did not stop within %.0f s; killed (its claims "
                    "return to the queue when their lease runs out)",
                    process.pid,
                    self.stop_seconds,
                )
                process.kill()
                process.wait()
