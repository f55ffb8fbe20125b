"""The send API's recent health as one dispatcher sees it: a bounded one-minute window of
call latencies and outcomes, summarised onto the dispatcher's slot row for the staff UI."""

from __future__ import annotations

import threading
import time
from collections import deque

from mailing.rules import SEND_HEALTH_WINDOW_SECONDS

WINDOW_SECONDS = SEND_HEALTH_WINDOW_SECONDS
MAX_SAMPLES = 20_000  # bounded memory: at higher rates the window keeps the latest calls


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


class SendHealthWindow:
    def __init__(self, window: float = WINDOW_SECONDS, clock=time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._samples: deque[tuple[float, float, bool]] = deque(maxlen=MAX_SAMPLES)
        self._lock = threading.Lock()

    def record(self, latency: float, error: bool) -> None:
        with self._lock:
            self._samples.append((self.clock(), latency, error))

    def summary(self) -> dict[str, float | int | None]:
        """p50/p95 latency (ms), error rate and request count of the last minute."""
        horizon = self.clock() - self.window
        with self._lock:
            while self._samples and self._samples[0][0] < horizon:
                self._samples.popleft()
            samples = list(self._samples)
        if not samples:
            return {"requests": 0, "p50_ms": None, "p95_ms": None, "error_rate": None}
        latencies = sorted(latency for _, latency, _ in samples)
        errors = sum(1 for *_, error in samples if error)
        return {
            "requests": len(samples),
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
            "error_rate": errors / len(samples),
        }
