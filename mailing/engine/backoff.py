"""Retry delays for messages the provider did not take.

Equal jitter (half fixed, half random) is used rather than full jitter: a
message must never come back almost immediately after a failure (full jitter
can draw ~0 s and hammer a provider that is already struggling), yet thousands
of messages that failed in the same second must not all return in the same
second either.
"""

from __future__ import annotations

import math
import random

_default_rng = random.Random()

# 2 ** 62 times any sane base already exceeds every useful cap; stopping the
# exponent there keeps float arithmetic away from OverflowError when a message
# has been retried an absurd number of times.
_MAX_EXPONENT = 62


def _ceiling(attempts: int, base: float, cap: float) -> float:
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    if base <= 0 or cap <= 0:
        raise ValueError(f"base and cap must be positive, got base={base} cap={cap}")
    exponent = min(attempts - 1, _MAX_EXPONENT)
    return min(cap, base * (1 << exponent))


def retry_delay(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt number ``attempts + 1``.

    ``attempts`` counts the attempts already made (>= 1). The ceiling grows as
    ``base * 2 ** (attempts - 1)`` up to ``cap``; the result is uniform in
    ``[ceiling / 2, ceiling]``.
    """
    ceiling = _ceiling(attempts, base, cap)
    half = ceiling / 2
    return half + (rng or _default_rng).uniform(0.0, half)


def throttle_delay(
    retry_after: float | None,
    attempts: int,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """Delay after a 429: the provider's Retry-After, but never less than the backoff.

    The backoff floor matters when the provider sends ``Retry-After: 0`` (or
    nothing) while still overloaded: without it, throttled messages would spin.
    A Retry-After above ``cap`` is still honoured, because sending earlier than
    the provider asked only earns another 429.
    """
    backoff = retry_delay(attempts, base, cap, rng)
    if retry_after is None or not math.isfinite(retry_after) or retry_after < 0:
        return backoff
    return max(retry_after, backoff)
