"""What the stand-in saw: requests, outcomes, every delivery, and the scenario requests."""

from __future__ import annotations

import os
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any

from devtools.provider.faults import OUTCOMES


@dataclass(frozen=True)
class RecordedRequest:
    """One request to a scenario route, as it came over the wire."""

    scenario: str
    path: str
    method: str
    authorization: str | None
    content_type: str | None
    body: bytes
    peer: tuple[str, int]


class Recorder:
    """Counts requests and outcomes, and remembers every delivery.

    Sized for a million ids: one dict id -> delivery count (counts are small cached ints) plus
    three parallel arrays of (id, arrival time, delivery time) per delivery, 24 bytes each;
    first and last times per id are derived from the arrays when asked. The arrival is when
    the request reached the handler, before the configured latency; the delivery is when the
    stand-in accepted it, after the latency (both unix times).

    Requests to the scenario routes are kept whole (``recorded()``): tests look at their
    headers and bodies, and they are few. Mutated on the server's event loop and read from
    other threads (tests), hence the lock; it is uncontended on the hot path.
    """

    def __init__(self, record_path: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._file = None
        if record_path is not None:
            # Buffered on purpose: a write per delivery must not cost a syscall at 1,000/s.
            self._file = open(record_path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        self._reset_locked()

    def _reset_locked(self) -> None:
        self.requests = 0
        self.connections = 0  # TCP connections accepted
        self.by_outcome = dict.fromkeys(OUTCOMES, 0)
        self._counts: dict[int, int] = {}
        self._ids = array("q")
        self._times = array("d")
        self._arrivals = array("d")
        self._scenario_requests: list[RecordedRequest] = []

    def reset(self) -> None:
        """Forget everything counted so far. The record file is an append-only log: kept."""
        with self._lock:
            self._reset_locked()

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_outcome(self, outcome: str) -> None:
        with self._lock:
            self.by_outcome[outcome] += 1

    def record_delivery(
        self,
        msg_id: int,
        phone: int,
        outcome: str = "accepted",
        *,
        arrived_at: float | None = None,
    ) -> None:
        """Record one delivery now; ``arrived_at`` is when its request arrived (unix time,
        before the latency sleep), now if not given."""
        at = time.time()
        arrived = at if arrived_at is None else arrived_at
        with self._lock:
            self.by_outcome[outcome] += 1
            self._counts[msg_id] = self._counts.get(msg_id, 0) + 1
            self._ids.append(msg_id)
            self._times.append(at)
            self._arrivals.append(arrived)
            if self._file is not None:
                # id and phone were validated as ints, so this is valid JSON without json.dumps.
                self._file.write(
                    f'{{"id": {msg_id}, "phone": {phone}, "arrived_at": {arrived:.6f}, '
                    f'"at": {at:.6f}}}\n'
                )

    def record_scenario_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self._scenario_requests.append(request)

    def recorded(self, scenario: str | None = None) -> list[RecordedRequest]:
        """The requests to the scenario routes (to one scenario when named), oldest first."""
        with self._lock:
            return [
                r for r in self._scenario_requests if scenario is None or r.scenario == scenario
            ]

    @property
    def accepted(self) -> int:
        """Total deliveries, counting every repeat of an id."""
        with self._lock:
            return len(self._ids)

    @property
    def unique_accepted(self) -> int:
        with self._lock:
            return len(self._counts)

    def count_of(self, msg_id: int) -> int:
        """How many times ``msg_id`` was delivered."""
        with self._lock:
            return self._counts.get(msg_id, 0)

    def duplicates(self) -> dict[int, int]:
        with self._lock:
            return {msg_id: n for msg_id, n in self._counts.items() if n > 1}

    def first_accepted_at(self) -> dict[int, float]:
        with self._lock:
            ids, times = self._ids, self._times
            # Walking backwards lets the earliest time overwrite later ones.
            return dict(zip(reversed(ids), reversed(times), strict=True))

    def last_accepted_at(self) -> dict[int, float]:
        with self._lock:
            return dict(zip(self._ids, self._times, strict=True))

    def first_arrived_at(self) -> dict[int, float]:
        """Per delivered id: when the request of its first delivery arrived (before the
        latency sleep), as a unix time."""
        with self._lock:
            return dict(zip(reversed(self._ids), reversed(self._arrivals), strict=True))

    def last_arrived_at(self) -> dict[int, float]:
        """Per delivered id: when the request of its last delivery arrived (before the
        latency sleep), as a unix time: when the client sent it, give or take the network."""
        with self._lock:
            return dict(zip(self._ids, self._arrivals, strict=True))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "accepted": len(self._ids),
                "unique_accepted": len(self._counts),
                "duplicates": {str(i): n for i, n in self._counts.items() if n > 1},
                "by_outcome": dict(self.by_outcome),
                "connections": self.connections,
                "scenario_requests": len(self._scenario_requests),
            }

    def accepted_report(self) -> dict[str, Any]:
        last = self.last_accepted_at()
        arrived = self.last_arrived_at()
        return {
            "ids": sorted(last),
            "last_accepted_at": {str(msg_id): at for msg_id, at in last.items()},
            "last_arrived_at": {str(msg_id): at for msg_id, at in arrived.items()},
        }

    def summary(self) -> str:
        """One log line: requests, deliveries and the outcomes seen so far."""
        stats = self.stats()
        outcomes = ", ".join(f"{k}={v}" for k, v in stats["by_outcome"].items() if v)
        return (
            f"send API stand-in: {stats['requests']} requests, {stats['accepted']} accepted "
            f"({stats['unique_accepted']} unique); {outcomes or 'no outcomes yet'}"
        )

    def flush(self) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._file.close()
