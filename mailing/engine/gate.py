"""The send gate: how many requests may start now, and whether one of them is a probe.

One dispatcher asks one gate. Its policies, first match wins:

1. **Throttled**: the provider answered 429; nothing starts before its Retry-After (1 s
   when it gave none).
2. **Credentials refused** (shared by every worker through the database): one probe at a
   time, at most one per ``auth_retry_seconds``; everything else waits.
3. **Circuit** (this dispatcher's breaker): open, nothing; half-open, one probe.
4. **Window**: up to the limiter's window of requests in flight (``limiter.py``: it starts
   small and adapts to how the provider answers), refilled in sizeable batches once half
   the window is free (claims are database round trips; one per free slot would cost more
   than the sends).

After the local answer, the shared send-rate limit may grant fewer: ``take_rate_permits``
draws from the token bucket in the database. It is a command, not a query, and runs on
the dispatcher's database thread as part of the claim.

``allowance`` only reads. What changes the gate is said by name: ``probe_started``,
``observe``, ``credentials_refused``, ``credentials_accepted``, ``credentials_seen``.

A 401/403 pauses this dispatcher at once, when it is observed (before the database has
been told): the pause then holds until the recorded refusal is seen shared, so a tick that
reads the shared row in between cannot lift it.
Every field below belongs to the dispatcher's asyncio loop: the database thread reports
what it found and the loop applies it. The one exception, ``take_rate_permits``, runs on
the database thread and reads nothing but the fixed rate.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime

from mailing.engine import provider_state
from mailing.engine.circuit import CircuitBreaker, CircuitState
from mailing.engine.clock import Clock
from mailing.engine.limiter import AdaptiveLimit
from mailing.engine.provider import Outcome, SendResult

# Pause after a 429 that named no Retry-After.
DEFAULT_THROTTLE_SECONDS = 1.0


class Probe(enum.StrEnum):
    """What a single request allowed as a probe is testing."""

    CREDENTIALS = "credentials"
    CIRCUIT = "circuit"


class Reason(enum.StrEnum):
    """Why the allowance is what it is (for logs and tests)."""

    WINDOW = "window"  # requests: the free part of the window (0 while it refills)
    THROTTLED = "throttled"
    CREDENTIALS_REFUSED = "credentials refused"
    CIRCUIT_OPEN = "circuit open"


@dataclass(frozen=True, slots=True)
class Allowance:
    requests: int
    reason: Reason
    probe: Probe | None = None  # set when the one request allowed is a probe


class SendGate:
    def __init__(
        self,
        *,
        limiter: AdaptiveLimit,
        rate_limit: float,
        auth_retry_seconds: float,
        circuit: CircuitBreaker,
        clock: Clock,
    ) -> None:
        self.limiter = limiter
        self.rate_limit = rate_limit
        self.auth_retry_seconds = auth_retry_seconds
        self.circuit = circuit
        self.clock = clock
        # Loop-owned state (see the module docstring).
        self._throttled_until = -math.inf
        self._credentials_refused = False
        # A refusal observed on the loop that the shared row may not show yet.
        self._refusal_unrecorded = False
        self._last_credentials_probe = -math.inf

    # --- the query --------------------------------------------------------------------

    def allowance(self, in_flight: int) -> Allowance:
        """How many requests may start now, given ``in_flight`` already running."""
        now = self.clock.monotonic()
        if now < self._throttled_until:
            return Allowance(0, Reason.THROTTLED)
        if self._credentials_refused:
            due = now - self._last_credentials_probe >= self.auth_retry_seconds
            if in_flight or not due:
                return Allowance(0, Reason.CREDENTIALS_REFUSED)
            return Allowance(1, Reason.CREDENTIALS_REFUSED, Probe.CREDENTIALS)
        if self.circuit.state is not CircuitState.CLOSED:
            if in_flight or not self.circuit.probe_allowed:
                return Allowance(0, Reason.CIRCUIT_OPEN)
            return Allowance(1, Reason.CIRCUIT_OPEN, Probe.CIRCUIT)
        window = self.limiter.window
        free = window - in_flight
        refill = free >= max(1, window // 2) or (not in_flight and free > 0)
        return Allowance(free if refill else 0, Reason.WINDOW)

    @property
    def window(self) -> int:
        """Requests that may be in flight now (the limiter's window)."""
        return self.limiter.window

    @property
    def paused_for_credentials(self) -> bool:
        return self._credentials_refused

    # --- commands ---------------------------------------------------------------------

    def take_rate_permits(self, wanted: int, now: datetime) -> int:
        """Draw up to ``wanted`` permits from the shared token bucket (database thread)."""
        return provider_state.acquire_send_permits(wanted, self.rate_limit, now)

    def probe_started(self, probe: Probe) -> None:
        if probe is Probe.CREDENTIALS:
            self._last_credentials_probe = self.clock.monotonic()
        else:
            self.circuit.probe_started()

    def observe(self, result: SendResult) -> None:
        """Learn from one answer: the window adapts, the circuit counts failures, a 429
        pauses everything, a 401/403 pauses this dispatcher until the refusal is recorded."""
        self.limiter.observe(result.outcome, result.latency)
        if result.outcome is Outcome.UNAUTHORIZED:
            self._credentials_refused = True
            self._refusal_unrecorded = True
            self._last_credentials_probe = self.clock.monotonic()
        elif result.outcome in (Outcome.ACCEPTED, Outcome.REJECTED):
            recovered = self.circuit.state is not CircuitState.CLOSED
            self.circuit.record_success()
            if recovered:
                self.limiter.restart()
        elif result.outcome is Outcome.RETRY:
            self.circuit.record_failure()
        elif result.outcome is Outcome.THROTTLED:
            pause = DEFAULT_THROTTLE_SECONDS if result.retry_after is None else result.retry_after
            self._throttled_until = max(self._throttled_until, self.clock.monotonic() + pause)

    def credentials_refused(self) -> None:
        """Our results showed a refusal, now recorded for every worker: stay paused. The
        next probe is due ``auth_retry_seconds`` after the refusal was observed
        (``observe``), not after it was recorded, which may be later."""
        self._credentials_refused = True
        self._refusal_unrecorded = False

    def credentials_accepted(self) -> None:
        self._credentials_refused = False
        self._refusal_unrecorded = False

    def credentials_seen(self, refused: bool) -> None:
        """What the shared row says (another worker may have seen the refusal first, or
        lifted it); a refusal of ours not yet recorded holds until it is."""
        if refused or not self._refusal_unrecorded:
            self._credentials_refused = refused
