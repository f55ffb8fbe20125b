"""Circuit breaker in front of the send API.

When the provider refuses connections for minutes, hammering it with every
pending message only burns attempts and fills logs. After
``failure_threshold`` consecutive failures the circuit opens and nothing is
sent; once ``reset_timeout`` has passed it lets exactly one probe through. A
successful probe closes the circuit; a failed one re-opens it with a doubled
timeout (up to 8x the base), so a provider that stays dead is probed less and
less often.

What counts as a failure is the caller's decision: transport failures, 5xx
and timeouts are; a REJECTED message is not (the provider answered).

Queries (``state``, ``probe_allowed``, ``retry_at``) only read: the passing of
time is computed, never stored. Only the three commands change the breaker.
One instance per dispatcher, used from its asyncio loop: every method runs to
completion without awaiting, so no lock is needed.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

_MAX_BACKOFF_FACTOR = 8


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be > 0, got {reset_timeout}")
        self._threshold = failure_threshold
        self._base_timeout = float(reset_timeout)
        self._clock = clock
        self._failures = 0
        # Set while open (and half-open, which is "open, and the timeout has passed").
        self._opened_at: float | None = None
        self._timeout = self._base_timeout
        self._probe_started_at: float | None = None

    # --- queries ----------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """CLOSED, OPEN, or HALF_OPEN once an open circuit's timeout has passed."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() >= self._opened_at + self._timeout:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def probe_allowed(self) -> bool:
        """Half-open with no probe in flight: exactly one request may go now."""
        return self.state is CircuitState.HALF_OPEN and not self._probe_in_flight()

    @property
    def retry_at(self) -> float | None:
        """When an open circuit lets its next probe through (a value of ``clock``)."""
        return None if self._opened_at is None else self._opened_at + self._timeout

    @property
    def reset_timeout(self) -> float:
        """The timeout currently in force (grows while probes keep failing)."""
        return self._timeout

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    # --- commands ---------------------------------------------------------------------

    def probe_started(self) -> None:
        """The half-open probe is in flight: no second probe until it ends or times out."""
        if self.state is CircuitState.HALF_OPEN:
            self._probe_started_at = self._clock()

    def record_success(self) -> None:
        """The provider answered: close the circuit and forget past failures."""
        self._failures = 0
        self._opened_at = None
        self._timeout = self._base_timeout
        self._probe_started_at = None

    def record_failure(self) -> None:
        """Count a failure; open at the threshold, or re-open when the probe failed."""
        self._failures += 1
        state = self.state
        if state is CircuitState.HALF_OPEN:
            self._timeout = min(self._timeout * 2, self._base_timeout * _MAX_BACKOFF_FACTOR)
            self._open()
        elif state is CircuitState.CLOSED and self._failures >= self._threshold:
            self._open()
        # OPEN: a straggler that was in flight when the circuit opened. It must
        # not push the probe further away, so only the counter moves.

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_started_at = None

    def _probe_in_flight(self) -> bool:
        # A probe whose outcome is never recorded (the caller crashed, or the
        # outcome was neither success nor failure) must not wedge the circuit
        # half-open forever: after one timeout another probe may go.
        return (
            self._probe_started_at is not None
            and self._clock() < self._probe_started_at + self._timeout
        )
