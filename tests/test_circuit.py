"""CircuitBreaker with a hand-driven clock."""

from __future__ import annotations

import time

import pytest

from mailing.engine.circuit import CircuitBreaker, CircuitState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def breaker(clock: FakeClock, threshold: int = 3, reset: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_timeout=reset, clock=clock)


def open_it(cb: CircuitBreaker, threshold: int = 3) -> None:
    for _ in range(threshold):
        cb.record_failure()
    assert cb.state is CircuitState.OPEN


def test_starts_closed_without_limit(clock: FakeClock) -> None:
    cb = breaker(clock)
    assert cb.state is CircuitState.CLOSED
    assert not cb.probe_allowed
    assert cb.consecutive_failures == 0
    assert cb.retry_at is None
    assert cb.reset_timeout == 10.0


def test_opens_at_threshold_of_consecutive_failures(clock: FakeClock) -> None:
    cb = breaker(clock)
    cb.record_failure()
    cb.record_failure()
    assert cb.state is CircuitState.CLOSED
    cb.record_failure()
    assert cb.state is CircuitState.OPEN
    assert not cb.probe_allowed
    assert cb.consecutive_failures == 3
    assert cb.retry_at == 1010.0


def test_success_resets_the_count(clock: FakeClock) -> None:
    cb = breaker(clock)
    cb.record_failure()
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    cb.record_failure()
    assert cb.state is CircuitState.CLOSED
    assert cb.consecutive_failures == 2


def test_half_open_after_timeout_allows_one_probe(clock: FakeClock) -> None:
    cb = breaker(clock)
    open_it(cb)
    clock.advance(9.999)
    assert cb.state is CircuitState.OPEN
    assert not cb.probe_allowed
    clock.advance(0.001)
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.probe_allowed
    assert cb.probe_allowed  # asking twice changes nothing
    cb.probe_started()
    assert not cb.probe_allowed  # the probe is in flight
    assert cb.state is CircuitState.HALF_OPEN


def test_successful_probe_closes(clock: FakeClock) -> None:
    cb = breaker(clock)
    open_it(cb)
    clock.advance(10)
    cb.probe_started()
    cb.record_success()
    assert cb.state is CircuitState.CLOSED
    assert cb.consecutive_failures == 0
    assert cb.retry_at is None


def test_failed_probes_double_the_timeout_up_to_eight_times(clock: FakeClock) -> None:
    cb = breaker(clock)
    open_it(cb)
    waits = []
    for _ in range(6):
        retry_at = cb.retry_at
        waits.append(retry_at - clock.now)
        clock.now = retry_at
        assert cb.probe_allowed
        cb.probe_started()
        cb.record_failure()  # the probe failed: open again, immediately
        assert cb.state is CircuitState.OPEN
        assert not cb.probe_allowed
    assert waits == [10.0, 20.0, 40.0, 80.0, 80.0, 80.0]
    # ... and a success brings it back to the base timeout.
    clock.now = cb.retry_at
    cb.probe_started()
    cb.record_success()
    open_it(cb)
    assert cb.retry_at - clock.now == 10.0


def test_straggler_failures_while_open_do_not_delay_the_probe(clock: FakeClock) -> None:
    cb = breaker(clock)
    open_it(cb)
    clock.advance(5)
    cb.record_failure()  # a request sent before the circuit opened
    assert cb.retry_at == 1010.0
    assert cb.consecutive_failures == 4
    clock.advance(5)
    assert cb.probe_allowed


def test_unreported_probe_does_not_wedge_the_circuit(clock: FakeClock) -> None:
    # The probe's outcome was neither success nor failure (e.g. throttled), or
    # the caller never sent it: after another timeout, a new probe may go.
    cb = breaker(clock)
    open_it(cb)
    clock.advance(10)
    cb.probe_started()
    clock.advance(9.9)
    assert not cb.probe_allowed
    clock.advance(0.1)
    assert cb.probe_allowed


def test_probe_started_while_closed_or_open_changes_nothing(clock: FakeClock) -> None:
    cb = breaker(clock)
    cb.probe_started()
    assert cb.state is CircuitState.CLOSED and not cb.probe_allowed
    open_it(cb)
    cb.probe_started()  # ignored while open
    clock.advance(10)
    assert cb.probe_allowed


def test_threshold_of_one(clock: FakeClock) -> None:
    cb = breaker(clock, threshold=1, reset=0.5)
    cb.record_failure()
    assert cb.state is CircuitState.OPEN
    clock.advance(0.5)
    assert cb.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_invalid_configuration(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, reset)


def test_default_clock_is_monotonic() -> None:
    cb = CircuitBreaker(1, 60.0)
    cb.record_failure()
    assert cb.state is CircuitState.OPEN
    assert 59.0 < cb.retry_at - time.monotonic() <= 60.0
