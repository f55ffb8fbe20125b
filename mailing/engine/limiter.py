"""The concurrency window: how many calls to the send API one dispatcher keeps in flight.

AIMD with slow start, as TCP does it, judged on rounds (the README's "Concurrency window"
says why this and not a gradient limit):

- **Slow start.** The window starts small (``initial``, 4 by default) and grows by one per
  good answer, so it doubles every round trip until the first sign of trouble.
- **Additive increase.** After that it grows by one per round while the provider answers
  well. A round is a window's worth of answers, and at least ``MIN_ROUND`` of them, so that
  a small window is judged on enough answers to tell a failure rate from bad luck.
- **Multiplicative decrease.** Trouble halves the window (never below ``minimum``) and
  ends slow start; rising latency takes a tenth off. Each decrease starts a new round.

Trouble is one of:

- **An outage**: a window's worth of failures in a row (and at least ``MIN_RUN``); a
  failure is a timeout, 5xx, reset or refused connection, garbage or 429. A provider that
  fails everything thus shrinks the window to one within a few calls, before the circuit
  breaker opens (after ``CIRCUIT_FAILURE_THRESHOLD`` consecutive failures).
- **Rising failures**: a round whose failure rate is ``failure_tolerance`` above the
  long-term rate (an exponential average over about a hundred answers, started by the
  first round).
- **Rising latency**: a round whose mean latency (of good answers) is above
  ``latency_tolerance`` times the long-term mean (over about five hundred), and more than
  ``LATENCY_SLACK_SECONDS`` above it.

Judging against the long-term figures is what keeps steady faults from pinning the window
to the floor: a provider that fails a third of all calls at random, or always answers in
200 ms, is not more loaded by a bigger window, and that becomes its normal; what rises with
load is punished.

**Restart.** When the provider comes back after an outage (the circuit closes again), the
window slow-starts again from ``initial``, as a new dispatcher would.

A refused token (401/403) says nothing about load: it neither grows nor shrinks the window
(the send gate pauses sending for it, ``gate.py``).

A pinned limiter (``adaptive=False``) is the fixed window of old: ``maximum`` from the
start, never changed.

Owned by the dispatcher's asyncio loop (through the send gate); nothing here awaits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mailing.engine.provider import Outcome

MIN_ROUND = 20
MIN_RUN = 4
# Weights of one answer in the long-term averages.
LATENCY_WEIGHT = 0.002
FAILURE_WEIGHT = 0.01
# Latency below this many seconds above the long-term mean is noise, whatever the ratio
# (at a 1 ms provider a 3 ms call is not congestion).
LATENCY_SLACK_SECONDS = 0.005
# What a decrease keeps of the window: failures, rising latency.
FAILURE_BACKOFF = 0.5
LATENCY_BACKOFF = 0.9

# Outcomes that mean the provider answered well (a rejected message is a good answer).
_GOOD = frozenset({Outcome.ACCEPTED, Outcome.REJECTED})
# Outcomes that say nothing about load.
_NEUTRAL = frozenset({Outcome.UNAUTHORIZED})


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    maximum: int = 200
    initial: int = 4
    minimum: int = 1
    adaptive: bool = True
    failure_tolerance: float = 0.2
    latency_tolerance: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {self.minimum}, {self.maximum}")
        if not 0 < self.failure_tolerance < 1:
            raise ValueError(f"failure_tolerance must be in (0, 1), got {self.failure_tolerance}")
        if self.latency_tolerance <= 1:
            raise ValueError(f"latency_tolerance must be > 1, got {self.latency_tolerance}")


class AdaptiveLimit:
    def __init__(self, config: LimiterConfig) -> None:
        self.config = config
        self._long_latency: float | None = None
        self._long_failures: float | None = None
        self._run = 0  # failures in a row
        self._answers = self._good = self._failures = 0  # of the current round
        self._latency_sum = 0.0
        self.decreases = 0  # for tests and logs
        self.restart()

    # --- queries ----------------------------------------------------------------------

    @property
    def window(self) -> int:
        """Calls that may be in flight now."""
        return int(self._window)

    @property
    def in_slow_start(self) -> bool:
        return self._slow_start

    # --- commands ---------------------------------------------------------------------

    def restart(self) -> None:
        """Slow-start again from ``initial`` (pinned: stay at ``maximum``)."""
        config = self.config
        start = config.initial if config.adaptive else config.maximum
        self._window = float(min(max(start, config.minimum), config.maximum))
        self._slow_start = config.adaptive
        self._run = 0
        self._new_round()

    def observe(self, outcome: Outcome, latency: float) -> None:
        """Learn from one answer."""
        if not self.config.adaptive or outcome in _NEUTRAL:
            return
        self._answers += 1
        if outcome in _GOOD:
            self._run = 0
            self._good += 1
            self._latency_sum += latency
            self._learn_latency(latency)
            if self._slow_start:
                self._grow()
        else:
            self._failures += 1
            self._run += 1
            if self._run >= max(self.window, MIN_RUN):
                self._run = 0
                self._decrease(FAILURE_BACKOFF)
                return
        if self._answers >= max(self.window, MIN_ROUND):
            self._end_round()

    # --- inside -----------------------------------------------------------------------

    def _end_round(self) -> None:
        failures_rising = self._failures_rising()
        latency_rising = self._latency_rising()
        if failures_rising:
            self._decrease(FAILURE_BACKOFF)
        elif latency_rising:
            self._decrease(LATENCY_BACKOFF)
        else:
            if not self._slow_start:
                self._grow()
            self._new_round()

    def _failures_rising(self) -> bool:
        baseline = self._round_failure_baseline
        return (
            baseline is not None
            and self._failures / self._answers > baseline + self.config.failure_tolerance
        )

    def _latency_rising(self) -> bool:
        baseline = self._round_latency_baseline
        if not self._good or baseline is None:
            return False
        mean = self._latency_sum / self._good
        return mean > max(
            baseline * self.config.latency_tolerance, baseline + LATENCY_SLACK_SECONDS
        )

    def _learn_latency(self, latency: float) -> None:
        if self._long_latency is None:
            self._long_latency = latency
        else:
            self._long_latency += LATENCY_WEIGHT * (latency - self._long_latency)

    def _learn_failures(self) -> None:
        """Fold the round's failure rate into the long-term one (the first round starts it)."""
        if not self._answers:
            return
        rate = self._failures / self._answers
        if self._long_failures is None:
            self._long_failures = rate
        else:
            weight = 1.0 - (1.0 - FAILURE_WEIGHT) ** self._answers
            self._long_failures += weight * (rate - self._long_failures)

    def _grow(self) -> None:
        self._window = min(float(self.config.maximum), self._window + 1.0)

    def _decrease(self, keep: float) -> None:
        self._window = max(float(self.config.minimum), math.floor(self._window * keep))
        self._slow_start = False
        self.decreases += 1
        self._new_round()

    def _new_round(self) -> None:
        self._learn_failures()
        # A round is judged against the long-term figures as they were when it began.
        self._round_latency_baseline = self._long_latency
        self._round_failure_baseline = self._long_failures
        self._answers = 0
        self._good = 0
        self._failures = 0
        self._latency_sum = 0.0
