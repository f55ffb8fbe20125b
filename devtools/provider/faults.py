"""The fault model: how the stand-in misbehaves, and the one draw that decides each answer.

For a request with a valid token and a valid body, each fault is drawn independently with its
own probability, in this order, and the first one that fires wins (so e.g. the effective error
probability is ``(1 - reset_rate) * (1 - timeout_rate) * error_rate``):

* outage: the listener is closed for the window, so connecting fails with ECONNREFUSED; open
  keep-alive connections are dropped when the window starts (see server.Listener).
* reset: the connection is aborted with an RST and no response.
* timeout: nothing is sent for ``hang_seconds``, then 504. The message is NOT delivered.
* error: 500, 502 or 503 (JSON, HTML or text body, as real proxies do).
* throttle: 429 with ``Retry-After: <retry_after>``.
* malformed: 200 with a body that is not a valid result. The message is NOT delivered.
* drip: the message IS delivered, and the 200 OK body is sent one byte per second.
* reject: 200 ``{"code": 1, ...}``, a permanent rejection. Not delivered.
* otherwise: delivered, 200 ``{"code": 0, "message": "OK"}``.

Latency (``latency_ms`` +/- uniform ``latency_jitter_ms``) is added before every answer to a
send request, including 400 and 401. Bad requests (400) are never subject to faults, so a
client's handling of permanent errors can be tested deterministically.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The stand-in's own tokens when none are given: public development values (settings
# STAND_IN_TOKEN and STAND_IN_ADMIN_TOKEN). The stand-in never needs the real send token.
DEFAULT_TOKEN = "dev-token"  # noqa: S105 - a well-known development token, not a secret
DEFAULT_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 - likewise

RATE_FIELDS = (
    "error_rate",
    "timeout_rate",
    "malformed_rate",
    "throttle_rate",
    "reject_rate",
    "reset_rate",
    "drip_rate",
)
OUTCOMES = (
    "accepted",
    "rejected",
    "error",
    "timeout",
    "malformed",
    "throttled",
    "reset",
    "unauthorized",
    "bad_request",
    "drip",
    # A request that reached an already-open connection while an outage was starting.
    "outage",
)

OK_BODY = b'{"code": 0, "message": "OK"}'
REJECT_BODY = b'{"code": 1, "message": "rejected"}'
MALFORMED_BODIES = (
    ("text/plain", b"Service temporarily overloaded, please try again later"),
    ("application/json", b'{"code": 0, "mess'),
    ("application/json", b'{"message": "OK"}'),
    ("text/html", b"<html><head><title>OK</title></head><body><h1>OK</h1></body></html>"),
)
ERROR_RESPONSES = (
    (500, "application/json", b'{"code": 500, "message": "internal error"}'),
    (502, "text/html", b"<html><body><center><h1>502 Bad Gateway</h1></center></body></html>"),
    (503, "text/plain", b"Service Unavailable"),
)
DRIP_INTERVAL_SECONDS = 1.0


def _check_number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    # bool is an int subclass; "error_rate": true is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (low <= value <= high) or math.isnan(value):
        bounds = f"in [{low:g}, {high:g}]" if high != math.inf else f">= {low:g}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return float(value)


@dataclass
class FaultConfig:
    """How the stand-in behaves; the defaults are a perfect, instant provider."""

    token: str = DEFAULT_TOKEN
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 60.0
    malformed_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: int = 1
    reject_rate: float = 0.0
    reset_rate: float = 0.0
    drip_rate: float = 0.0
    # (start_offset_seconds, duration_seconds), relative to when the server started listening.
    outages: list[tuple[float, float]] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token:
            raise ValueError("token must be a non-empty string")
        self.latency_ms = _check_number("latency_ms", self.latency_ms, 0)
        self.latency_jitter_ms = _check_number("latency_jitter_ms", self.latency_jitter_ms, 0)
        self.hang_seconds = _check_number("hang_seconds", self.hang_seconds, 0)
        for name in RATE_FIELDS:
            setattr(self, name, _check_number(name, getattr(self, name), 0, 1))
        if isinstance(self.retry_after, bool) or not isinstance(self.retry_after, int):
            # Retry-After is delay-seconds: a non-negative integer (RFC 9110 10.2.3).
            raise ValueError(f"retry_after must be an integer, got {self.retry_after!r}")
        if self.retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {self.retry_after}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an integer or null, got {self.seed!r}")
        if not isinstance(self.outages, list | tuple):
            raise ValueError("outages must be a list of [start_seconds, duration_seconds]")
        outages = []
        for item in self.outages:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise ValueError(
                    f"an outage must be [start_seconds, duration_seconds], got {item!r}"
                )
            start = _check_number("outage start", item[0], 0)
            duration = _check_number("outage duration", item[1], 0)
            if duration <= 0:
                raise ValueError(f"outage duration must be > 0, got {item[1]!r}")
            outages.append((start, duration))
        self.outages = outages

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["outages"] = [list(window) for window in self.outages]
        return data

    def public_dict(self) -> dict[str, Any]:
        """The config as the admin routes show it: everything but the token."""
        data = self.to_dict()
        del data["token"]
        return data

    def active_faults(self) -> dict[str, Any]:
        """The settings that differ from a perfect provider (the token is not a fault)."""
        perfect = FaultConfig(token=self.token).to_dict()
        return {
            name: value
            for name, value in self.to_dict().items()
            if name != "token" and value != perfect[name]
        }

    def latency_seconds(self, rng: random.Random) -> float:
        """This answer's added latency: latency_ms +/- a uniform jitter, never negative."""
        if not (self.latency_ms or self.latency_jitter_ms):
            return 0.0
        jitter = self.latency_jitter_ms
        delay = self.latency_ms + (rng.uniform(-jitter, jitter) if jitter else 0.0)
        return max(0.0, delay / 1000)


def config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(FaultConfig)}


def updated_config(config: FaultConfig, changes: Mapping[str, Any]) -> FaultConfig:
    """A copy of ``config`` with ``changes`` applied; ValueError on unknown fields or bad values."""
    unknown = sorted(set(changes) - config_fields())
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    # replace() re-runs __post_init__, so the whole new config is validated at once.
    return dataclasses.replace(config, **changes)


def decide(config: FaultConfig, rng: random.Random) -> str:
    """Draw each fault independently, in the documented order; the first that fires wins."""
    for outcome, rate in (
        ("reset", config.reset_rate),
        ("timeout", config.timeout_rate),
        ("error", config.error_rate),
        ("throttled", config.throttle_rate),
        ("malformed", config.malformed_rate),
        ("drip", config.drip_rate),
        ("rejected", config.reject_rate),
    ):
        # Rates of 0 (the common case) draw nothing, which keeps the hot path cheap.
        if rate > 0 and (rate >= 1 or rng.random() < rate):
            return outcome
    return "accepted"


def merge_windows(outages: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, non-overlapping (start, end) windows of the outages (start, duration)."""
    merged: list[tuple[float, float]] = []
    for start, duration in sorted(outages):
        end = start + duration
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
