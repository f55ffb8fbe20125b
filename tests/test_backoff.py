"""retry_delay / throttle_delay: bounds, cap, jitter, Retry-After."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailing.engine.backoff import retry_delay, throttle_delay


class FixedRandom(random.Random):
    """uniform() returns one end of the range, to pin the jitter."""

    def __init__(self, at_top: bool) -> None:
        super().__init__(0)
        self.at_top = at_top

    def uniform(self, a: float, b: float) -> float:
        return b if self.at_top else a


LOW, HIGH = FixedRandom(at_top=False), FixedRandom(at_top=True)


@pytest.mark.parametrize(
    ("attempts", "ceiling"),
    [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (7, 320.0), (8, 600.0), (50, 600.0)],
)
def test_exponential_ceiling_and_equal_jitter_range(attempts: int, ceiling: float) -> None:
    assert retry_delay(attempts, 5.0, 600.0, HIGH) == ceiling
    assert retry_delay(attempts, 5.0, 600.0, LOW) == ceiling / 2


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert retry_delay(10**6, 5.0, 600.0, HIGH) == 600.0
    assert math.isfinite(retry_delay(10**6, 5.0, 600.0))


@pytest.mark.parametrize(
    ("attempts", "base", "cap"), [(0, 1.0, 10.0), (-1, 1.0, 10.0), (1, 0.0, 10.0), (1, 1.0, 0.0)]
)
def test_invalid_arguments(attempts: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        retry_delay(attempts, base, cap)


def test_jitter_spreads_the_delays() -> None:
    rng = random.Random(1234)
    delays = [retry_delay(3, 5.0, 600.0, rng) for _ in range(2000)]
    assert all(10.0 <= d <= 20.0 for d in delays)
    # Spread over the whole range, not clumped: both quarters are populated.
    assert min(delays) < 11.0
    assert max(delays) > 19.0
    assert len(set(delays)) > 1900


def test_seeded_rng_is_reproducible() -> None:
    first = [retry_delay(n, 1.0, 60.0, random.Random(7)) for n in range(1, 10)]
    second = [retry_delay(n, 1.0, 60.0, random.Random(7)) for n in range(1, 10)]
    assert first == second


@given(
    attempts=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.01, max_value=100.0),
    cap=st.floats(min_value=0.01, max_value=10_000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_bounds(attempts: int, base: float, cap: float, seed: int) -> None:
    ceiling = min(cap, base * 2 ** min(attempts - 1, 62))
    delay = retry_delay(attempts, base, cap, random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= cap


@given(
    base=st.floats(min_value=0.01, max_value=100.0),
    cap=st.floats(min_value=0.01, max_value=10_000.0),
)
def test_ceiling_is_monotonic_and_capped(base: float, cap: float) -> None:
    tops = [retry_delay(n, base, cap, HIGH) for n in range(1, 80)]
    assert tops == sorted(tops)
    assert max(tops) <= cap
    assert tops[-1] == cap  # reached and held


def test_throttle_honours_retry_after() -> None:
    # Retry-After larger than the backoff wins, even above the cap.
    assert throttle_delay(7.0, 1, 1.0, 60.0, HIGH) == 7.0
    assert throttle_delay(3600.0, 1, 1.0, 60.0, HIGH) == 3600.0
    # Smaller than the backoff: the backoff wins, so a "Retry-After: 0" cannot spin.
    assert throttle_delay(0.0, 4, 1.0, 60.0, LOW) == 4.0
    assert throttle_delay(2.0, 4, 1.0, 60.0, HIGH) == 8.0


@pytest.mark.parametrize("retry_after", [None, -5.0, math.nan, math.inf])
def test_throttle_without_usable_retry_after_is_the_backoff(retry_after: float | None) -> None:
    assert throttle_delay(retry_after, 3, 1.0, 60.0, HIGH) == 4.0
    assert throttle_delay(retry_after, 3, 1.0, 60.0, LOW) == 2.0


@given(
    retry_after=st.none() | st.floats(min_value=0.0, max_value=86_400.0),
    attempts=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_throttle_is_never_below_either_bound(
    retry_after: float | None, attempts: int, seed: int
) -> None:
    delay = throttle_delay(retry_after, attempts, 2.0, 300.0, random.Random(seed))
    floor = min(300.0, 2.0 * 2 ** (attempts - 1)) / 2
    assert delay >= floor
    if retry_after is not None:
        assert delay >= retry_after
