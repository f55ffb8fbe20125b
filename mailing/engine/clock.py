"""The engine's one clock: wall time for the database and the rules, monotonic time for
intervals. Injected as one object so a test that moves the wall clock moves it everywhere."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

from django.utils import timezone


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware wall time: what is stored and compared with start_at, end_at, windows."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals (ticks, pauses, timeouts); never jumps."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return timezone.now()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
