"""The concurrency window (mailing/engine/limiter.py): slow start, AIMD, latency, pinning."""

from __future__ import annotations

import random

import pytest

from mailing.engine.limiter import AdaptiveLimit, LimiterConfig
from mailing.engine.provider import Outcome

OK, RETRY = Outcome.ACCEPTED, Outcome.RETRY


def limiter(**changes) -> AdaptiveLimit:
    return AdaptiveLimit(LimiterConfig(**{"maximum": 200, "initial": 4, **changes}))


def answer_rounds(limit: AdaptiveLimit, rounds: int, outcome=OK, latency=0.05) -> list[int]:
    """Answer ``rounds`` full windows; the window after each."""
    windows = []
    for _ in range(rounds):
        for _ in range(limit.window):
            limit.observe(outcome, latency)
        windows.append(limit.window)
    return windows


def test_slow_start_doubles_every_round_up_to_the_ceiling():
    limit = limiter()
    assert limit.window == 4 and limit.in_slow_start
    assert answer_rounds(limit, 7) == [8, 16, 32, 64, 128, 200, 200]
    assert limit.decreases == 0


def test_a_provider_that_fails_everything_gets_one_call_at_a_time():
    limit = limiter()
    for _ in range(4):  # the first window, all failed: an outage
        limit.observe(RETRY, 0.001)
    assert limit.window == 2 and not limit.in_slow_start
    for _ in range(4):  # at least four in a row, whatever the window
        limit.observe(RETRY, 0.001)
    assert limit.window == 1
    for _ in range(50):
        limit.observe(RETRY, 0.001)
    assert limit.window == 1


def test_rising_failures_halve_a_big_window_and_it_grows_back_one_per_round():
    limit = limiter()
    answer_rounds(limit, 6)
    assert limit.window == 200
    # A third fail from now on, against none before: within two rounds, one halving.
    for i in range(400):
        limit.observe(RETRY if i % 3 == 0 else OK, 0.05)
        if limit.decreases:
            break
    assert limit.decreases == 1
    assert limit.window == 100 and not limit.in_slow_start
    # Additive increase: one per clean round, no more slow start.
    assert answer_rounds(limit, 3) == [101, 102, 103]


def test_rare_random_failures_do_not_pin_a_big_window():
    rng = random.Random(7)
    limit = limiter()
    answer_rounds(limit, 6)
    for _ in range(20_000):
        limit.observe(RETRY if rng.random() < 0.01 else OK, 0.05)
    assert limit.window == 200


@pytest.mark.parametrize("seed", range(5))
def test_steady_random_failures_from_the_start_become_the_normal(seed):
    """A storm that does not depend on load (a third of all calls fail, from the first):
    the window still grows to the ceiling within a few thousand calls."""
    rng = random.Random(seed)
    limit = limiter()
    for _ in range(3000):
        limit.observe(RETRY if rng.random() < 0.34 else OK, 0.005)
    assert limit.window >= 150


def test_rising_latency_shrinks_the_window_and_steady_latency_does_not():
    limit = limiter()
    answer_rounds(limit, 6, latency=0.05)
    assert limit.window == 200
    # Same latency for long: no decrease.
    answer_rounds(limit, 20, latency=0.05)
    assert limit.decreases == 0
    # A round at three times the long-term latency takes a tenth off.
    answer_rounds(limit, 1, latency=0.15)
    assert limit.window == 180 and limit.decreases == 1


def test_latency_that_stays_high_becomes_the_new_normal():
    limit = limiter()
    answer_rounds(limit, 6, latency=0.05)
    answer_rounds(limit, 60, latency=0.15)
    decreases = limit.decreases
    assert decreases >= 1
    answer_rounds(limit, 30, latency=0.15)
    assert limit.decreases == decreases  # no more decreases: the long-term mean caught up
    assert limit.window == 200  # and it grew back


def test_small_jitter_at_a_fast_provider_is_not_congestion():
    limit = limiter()
    answer_rounds(limit, 6, latency=0.001)
    answer_rounds(limit, 5, latency=0.004)  # 4x, but 3 ms: noise
    assert limit.decreases == 0


def test_refused_credentials_neither_grow_nor_shrink_the_window():
    limit = limiter()
    for _ in range(100):
        limit.observe(Outcome.UNAUTHORIZED, 0.001)
    assert limit.window == 4 and limit.in_slow_start


def test_throttling_and_rejections():
    limit = limiter()
    for _ in range(4):
        limit.observe(Outcome.THROTTLED, 0.01)
    assert limit.window == 2
    grown = limiter()
    for _ in range(4):
        grown.observe(Outcome.REJECTED, 0.01)  # the provider answered: a good answer
    assert grown.window == 8


def test_restart_slow_starts_again():
    limit = limiter()
    for _ in range(8):
        limit.observe(RETRY, 0.01)
    assert limit.window == 1
    limit.restart()
    assert limit.window == 4 and limit.in_slow_start


def test_a_pinned_window_is_the_ceiling_and_never_moves():
    limit = limiter(adaptive=False)
    assert limit.window == 200
    for _ in range(100):
        limit.observe(RETRY, 5.0)
    answer_rounds(limit, 3, latency=1.0)
    assert limit.window == 200


@pytest.mark.parametrize(
    "changes",
    [
        {"minimum": 0},
        {"maximum": 0},
        {"failure_tolerance": 0.0},
        {"failure_tolerance": 1.0},
        {"latency_tolerance": 1.0},
    ],
)
def test_bad_configurations_are_refused(changes):
    with pytest.raises(ValueError):
        limiter(**changes)


def test_an_initial_window_out_of_range_is_clamped():
    assert limiter(initial=0).window == 1
    assert limiter(initial=1000).window == 200
