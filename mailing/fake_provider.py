"""Local stand-in for the external send API (``provider-api.yaml``), with fault injection.

The real provider is unreachable from the machines this project is built on, and in production
it is slow at times, answers with garbage, throttles and refuses connections. This module speaks
the same protocol on loopback and can be told to misbehave in each of those ways, so that the
sending engine can be developed, demonstrated, tested and benchmarked against them.

It must stay importable without Django (pure aiohttp + stdlib): tests and benchmarks use it
directly, and ``python -m mailing.fake_provider`` runs it without a settings module.

Ways to run it:

* ``FakeProviderServer(config).start()``: in a background thread with its own event loop (tests).
* ``run_forever(config, host, port, record_path)``: blocking, stops cleanly on SIGINT/SIGTERM.
* ``python manage.py fake_provider ...`` or ``python -m mailing.fake_provider ...``: the CLI.

Fault semantics, for a request with a valid token and a valid body, in this order, each fault
drawn independently with its own probability (so the first one that fires wins, and e.g. the
effective error probability is ``(1 - reset_rate) * (1 - timeout_rate) * error_rate``):

* outage: the listener is closed for the window, so connecting fails with ECONNREFUSED; open
  keep-alive connections are dropped when the window starts.
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

The stand-in does not de-duplicate: every delivery of the same id is recorded again, so the
admin stats show exactly how many times a client caused a message to be delivered.

Admin endpoints (no auth: the stand-in binds loopback unless told otherwise):
``GET /_admin/stats``, ``GET /_admin/accepted``, ``GET|POST /_admin/config`` (POST a JSON object
of FaultConfig fields to change them at runtime), ``POST /_admin/reset`` (clears the recorder).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

logger = logging.getLogger("mailing.fake_provider")

# Same default as settings.PROBE_TOKEN, so an out-of-the-box development setup just works.
DEFAULT_TOKEN = "dev-token"  # noqa: S105 - a well-known development token, not a secret
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081

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

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PHONE_MIN, _PHONE_MAX = 70_000_000_000, 79_999_999_999
_MSG_ID_RE = re.compile(r"-?[0-9]{1,19}")

_OK_BODY = b'{"code": 0, "message": "OK"}'
_REJECT_BODY = b'{"code": 1, "message": "rejected"}'
_MALFORMED_BODIES = (
    ("text/plain", b"Service temporarily overloaded, please try again later"),
    ("application/json", b'{"code": 0, "mess'),
    ("application/json", b'{"message": "OK"}'),
    ("text/html", b"<html><head><title>OK</title></head><body><h1>OK</h1></body></html>"),
)
_ERROR_RESPONSES = (
    (500, "application/json", b'{"code": 500, "message": "internal error"}'),
    (502, "text/html", b"<html><body><center><h1>502 Bad Gateway</h1></center></body></html>"),
    (503, "text/plain", b"Service Unavailable"),
)
_DRIP_INTERVAL = 1.0
# SO_LINGER with a zero timeout makes close() send an RST instead of a FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


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

    def active_faults(self) -> dict[str, Any]:
        """The settings that differ from a perfect provider (the token is not a fault)."""
        perfect = FaultConfig(token=self.token).to_dict()
        return {
            name: value
            for name, value in self.to_dict().items()
            if name != "token" and value != perfect[name]
        }


def _config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(FaultConfig)}


def updated_config(config: FaultConfig, changes: Mapping[str, Any]) -> FaultConfig:
    """A copy of ``config`` with ``changes`` applied; ValueError on unknown fields or bad values."""
    unknown = sorted(set(changes) - _config_fields())
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    # replace() re-runs __post_init__, so the whole new config is validated at once.
    return dataclasses.replace(config, **changes)


class Recorder:
    """Counts requests and outcomes, and remembers every delivery.

    Sized for a million ids: one dict id -> delivery count (counts are small cached ints) plus
    three parallel arrays of (id, arrival time, delivery time) per delivery, 24 bytes each;
    first and last times per id are derived from the arrays when asked. The arrival is when
    the request reached the handler, before the configured latency; the delivery is when the
    stand-in accepted it, after the latency (both unix times). Mutated on the server's event
    loop and read from other threads (tests), hence the lock; it is uncontended on the hot path.
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
        self.by_outcome = dict.fromkeys(OUTCOMES, 0)
        self._counts: dict[int, int] = {}
        self._ids = array("q")
        self._times = array("d")
        self._arrivals = array("d")

    def reset(self) -> None:
        """Forget everything counted so far. The record file is an append-only log: kept."""
        with self._lock:
            self._reset_locked()

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
            }

    def accepted_report(self) -> dict[str, Any]:
        last = self.last_accepted_at()
        arrived = self.last_arrived_at()
        return {
            "ids": sorted(last),
            "last_accepted_at": {str(msg_id): at for msg_id, at in last.items()},
            "last_arrived_at": {str(msg_id): at for msg_id, at in arrived.items()},
        }

    def flush(self) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._file.close()


class _ProviderState:
    """Everything the request handlers share: the live config, the RNG, the recorder."""

    def __init__(self, config: FaultConfig, recorder: Recorder) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.recorder = recorder
        self.in_outage = False
        # Set by _Listener, which owns the socket and so is the one that can do outages.
        self.on_outages_changed: Callable[[], None] | None = None

    def set_config(self, config: FaultConfig) -> None:
        """Apply a new config; must run on the server's event loop."""
        old, self.config = self.config, config
        if config.seed != old.seed:
            self.rng = random.Random(config.seed)
        if config.outages != old.outages and self.on_outages_changed is not None:
            self.on_outages_changed()
        logger.info("fake provider config changed: %s", config.active_faults() or "no faults")


STATE_KEY = web.AppKey("fake_provider_state", _ProviderState)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


def _validate(msg_id_raw: str, body: bytes) -> tuple[int, int] | str:
    """Return (msg_id, phone) for a valid request, or the reason it is invalid."""
    if not _MSG_ID_RE.fullmatch(msg_id_raw):
        return "msgId in the path must be an integer"
    msg_id = int(msg_id_raw)
    if not _INT64_MIN <= msg_id <= _INT64_MAX:
        return "msgId is out of the int64 range"
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "the body is not valid JSON"
    if not isinstance(data, dict):
        return "the body must be a JSON object"
    body_id = data.get("id")
    if type(body_id) is not int:
        return "id must be an integer"
    if body_id != msg_id:
        return "id in the body differs from msgId in the path"
    phone = data.get("phone")
    if type(phone) is not int or not _PHONE_MIN <= phone <= _PHONE_MAX:
        return "phone must be an 11-digit integer starting with 7"
    text = data.get("text")
    if not isinstance(text, str) or not text:
        return "text must be a non-empty string"
    return msg_id, phone


def _abort_with_rst(transport: asyncio.BaseTransport | None) -> None:
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


def _decide(config: FaultConfig, rng: random.Random) -> str:
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


async def _handle_send(request: web.Request) -> web.StreamResponse:
    # Stamped first, before the body is read and the latency slept: when the client sent it.
    arrived_at = time.time()
    state = request.app[STATE_KEY]
    config = state.config
    recorder = state.recorder
    recorder.count_request()
    msg_id_raw = request.match_info["msgId"]
    if state.in_outage:
        recorder.count_outcome("outage")
        _abort_with_rst(request.transport)
        # Writing to the aborted transport raises ConnectionError, which aiohttp treats as a
        # client that went away: no error log, no response.
        return web.Response()

    body = await request.read()
    if config.latency_ms or config.latency_jitter_ms:
        jitter = config.latency_jitter_ms
        delay = config.latency_ms + (state.rng.uniform(-jitter, jitter) if jitter else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    expected = f"Bearer {config.token}"
    auth = request.headers.get("Authorization", "")
    if not hmac.compare_digest(auth.encode(), expected.encode()):
        recorder.count_outcome("unauthorized")
        return _json_error(401, "missing or invalid bearer token")

    checked = _validate(msg_id_raw, body)
    if isinstance(checked, str):
        recorder.count_outcome("bad_request")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("send %s: 400 %s", msg_id_raw, checked)
        return _json_error(400, checked)
    msg_id, phone = checked

    outcome = _decide(config, state.rng)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("send %d: %s", msg_id, outcome)

    if outcome == "accepted":
        recorder.record_delivery(msg_id, phone, arrived_at=arrived_at)
        return web.Response(body=_OK_BODY, content_type="application/json")
    if outcome == "rejected":
        recorder.count_outcome(outcome)
        return web.Response(body=_REJECT_BODY, content_type="application/json")
    if outcome == "reset":
        recorder.count_outcome(outcome)
        _abort_with_rst(request.transport)
        return web.Response()
    if outcome == "timeout":
        recorder.count_outcome(outcome)
        await asyncio.sleep(config.hang_seconds)
        return _json_error(504, "upstream timed out")
    if outcome == "error":
        recorder.count_outcome(outcome)
        status, content_type, payload = state.rng.choice(_ERROR_RESPONSES)
        return web.Response(status=status, body=payload, content_type=content_type)
    if outcome == "throttled":
        recorder.count_outcome(outcome)
        response = _json_error(429, "too many requests")
        response.headers["Retry-After"] = str(config.retry_after)
        return response
    if outcome == "malformed":
        recorder.count_outcome(outcome)
        content_type, payload = state.rng.choice(_MALFORMED_BODIES)
        return web.Response(body=payload, content_type=content_type)
    # drip: delivered, but the answer crawls, to catch clients that bound only per-read time.
    recorder.record_delivery(msg_id, phone, outcome="drip", arrived_at=arrived_at)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(_OK_BODY)
    try:
        await response.prepare(request)
        for i in range(len(_OK_BODY)):
            if i:
                await asyncio.sleep(_DRIP_INTERVAL)
            await response.write(_OK_BODY[i : i + 1])
    except ConnectionError:
        pass  # The client gave up, which is what this fault is for.
    return response


async def _handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].recorder.stats())


async def _handle_accepted(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].recorder.accepted_report())


async def _handle_get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].config.to_dict())


async def _handle_set_config(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        changes = await request.json()
    except ValueError:
        return _json_error(400, "the body is not valid JSON")
    if not isinstance(changes, dict):
        return _json_error(400, "the body must be a JSON object of config fields")
    try:
        config = updated_config(state.config, changes)
    except (ValueError, TypeError) as exc:
        return _json_error(400, str(exc))
    state.set_config(config)
    return web.json_response(config.to_dict())


async def _handle_reset(request: web.Request) -> web.Response:
    recorder = request.app[STATE_KEY].recorder
    recorder.reset()
    return web.json_response(recorder.stats())


def _summary(recorder: Recorder) -> str:
    stats = recorder.stats()
    outcomes = ", ".join(f"{k}={v}" for k, v in stats["by_outcome"].items() if v)
    return (
        f"fake provider: {stats['requests']} requests, {stats['accepted']} accepted "
        f"({stats['unique_accepted']} unique); {outcomes or 'no outcomes yet'}"
    )


async def _housekeeping(state: _ProviderState) -> None:
    # Flush the record file every second and log a summary every 10 s; a log line per request
    # would cost more than the request itself at 1,000/s.
    last_logged = 0
    tick = 0
    while True:
        await asyncio.sleep(1.0)
        tick += 1
        state.recorder.flush()
        if tick % 10 == 0 and state.recorder.requests != last_logged:
            last_logged = state.recorder.requests
            logger.info("%s", _summary(state.recorder))


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_housekeeping(app[STATE_KEY]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    app[STATE_KEY].recorder.flush()


def build_app(config: FaultConfig, recorder: Recorder | None = None) -> web.Application:
    """The aiohttp application. Outages need a listener (FakeProviderServer or run_forever)."""
    app = web.Application()
    app[STATE_KEY] = _ProviderState(config, recorder if recorder is not None else Recorder())
    app.router.add_post("/v1/send/{msgId}", _handle_send)
    app.router.add_get("/_admin/stats", _handle_stats)
    app.router.add_get("/_admin/accepted", _handle_accepted)
    app.router.add_get("/_admin/config", _handle_get_config)
    app.router.add_post("/_admin/config", _handle_set_config)
    app.router.add_post("/_admin/reset", _handle_reset)
    app.cleanup_ctx.append(_background)
    return app


def _merge_windows(outages: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, non-overlapping (start, end) windows."""
    merged: list[tuple[float, float]] = []
    for start, duration in sorted(outages):
        end = start + duration
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _base_url(host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


class _Listener:
    """Serves the app on host:port and really stops listening during outages."""

    def __init__(self, app: web.Application, host: str, port: int, shutdown_timeout: float) -> None:
        self.app = app
        self.state = app[STATE_KEY]
        self.host = host
        self.port = port
        # access_log=None: aiohttp's access log line per request would halve throughput.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
        self.site: web.TCPSite | None = None
        self._started_at = 0.0
        self._outage_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.runner.setup()
        await self._listen()
        # With port 0 the kernel picked one; outages must come back on that same port.
        self.port = self.runner.addresses[0][1]
        self._started_at = asyncio.get_running_loop().time()
        self.state.on_outages_changed = self._reschedule
        self._reschedule()

    async def _listen(self) -> None:
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.site = site

    def _elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self._started_at

    async def _go_down(self) -> None:
        if self.site is None:
            return
        self.state.in_outage = True
        await self.site.stop()
        self.site = None
        # Closing the listener leaves accepted connections alive; a provider that is down does
        # not keep answering on them, so drop them too.
        server = self.runner.server
        for handler in server.connections if server is not None else ():
            _abort_with_rst(handler.transport)
        logger.info("fake provider outage: refusing connections on port %d", self.port)

    async def _go_up(self) -> None:
        if self.site is not None:
            return
        while True:
            try:
                await self._listen()
                break
            except OSError as exc:
                # Someone else may hold the port for a moment; keep trying rather than die.
                logger.warning("fake provider cannot listen on %d yet: %s", self.port, exc)
                await asyncio.sleep(0.1)
        self.state.in_outage = False
        logger.info("fake provider outage over: listening on port %d", self.port)

    async def _run_outages(self, windows: list[tuple[float, float]]) -> None:
        now = self._elapsed()
        if not any(start <= now < end for start, end in windows):
            await self._go_up()  # A config change may have ended the current window.
        for start, end in windows:
            now = self._elapsed()
            if end <= now:
                continue
            if start > now:
                await asyncio.sleep(start - now)
            await self._go_down()
            await asyncio.sleep(max(0.0, end - self._elapsed()))
            await self._go_up()

    def _reschedule(self) -> None:
        if self._outage_task is not None:
            self._outage_task.cancel()
        windows = _merge_windows(self.state.config.outages)
        self._outage_task = asyncio.create_task(self._run_outages(windows))
        # Keep a reference and surface crashes; a silently dead outage task would be a mystery.
        self._outage_task.add_done_callback(self._outage_done)

    @staticmethod
    def _outage_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("fake provider outage scheduler failed", exc_info=task.exception())

    async def stop(self) -> None:
        self.state.on_outages_changed = None
        if self._outage_task is not None:
            self._outage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage_task
        # Stops the site, lets in-flight requests finish for up to shutdown_timeout, runs the
        # app's cleanup (which flushes the record file).
        await self.runner.cleanup()
        self.site = None


def _cancel_remaining_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class FakeProviderServer:
    """The stand-in in a background thread with its own event loop, for tests.

    ``with FakeProviderServer(FaultConfig(error_rate=0.1)) as server: ... server.base_url``
    """

    def __init__(
        self,
        config: FaultConfig | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        record_path: str | os.PathLike[str] | None = None,
        recorder: Recorder | None = None,
        shutdown_timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.recorder = recorder if recorder is not None else Recorder(record_path)
        self._app = build_app(config if config is not None else FaultConfig(), self.recorder)
        self._shutdown_timeout = shutdown_timeout
        self._listener: _Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The PROBE_URL to give a client, e.g. ``http://127.0.0.1:PORT/v1``."""
        return _base_url(self.host, self.port)

    @property
    def admin_url(self) -> str:
        return self.base_url.removesuffix("/v1") + "/_admin"

    @property
    def config(self) -> FaultConfig:
        return self._app[STATE_KEY].config

    def start(self, timeout: float = 10.0) -> FakeProviderServer:
        """Start serving; returns once the port is listening (raises if it cannot)."""
        if self._thread is not None or self._loop is not None:
            # The app's runner cannot be set up twice; make a new server instead.
            raise RuntimeError("a FakeProviderServer can only be started once")
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="fake-provider", daemon=True
        )
        self._thread.start()
        try:
            self.port = ready.result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        listener = _Listener(self._app, self.host, self.port, self._shutdown_timeout)
        self._listener = listener
        try:
            try:
                loop.run_until_complete(listener.start())
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(listener.port)
            loop.run_forever()
            loop.run_until_complete(listener.stop())
        finally:
            _cancel_remaining_tasks(loop)
            loop.close()
            self.recorder.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, finish in-flight requests (bounded), flush the record file."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # The loop may have closed meanwhile.
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("fake provider thread did not stop in time")
        self._thread = None

    def begin_outage(self, seconds: float) -> FaultConfig:
        """Refuse connections from now on for ``seconds`` (outages are otherwise given as
        offsets from the server's start, which a test rarely knows)."""
        listener, loop = self._listener, self._loop
        if listener is None or loop is None:
            raise RuntimeError("the fake provider is not running")
        state = self._app[STATE_KEY]

        async def apply() -> FaultConfig:
            window = (listener._elapsed(), float(seconds))
            config = updated_config(state.config, {"outages": [*state.config.outages, window]})
            state.set_config(config)
            return config

        return asyncio.run_coroutine_threadsafe(apply(), loop).result(10)

    def update_config(self, **fields: Any) -> FaultConfig:
        """Change the config at runtime; ValueError on unknown fields or bad values."""
        state = self._app[STATE_KEY]
        config = updated_config(state.config, fields)
        loop = self._loop
        if self._thread is None or loop is None:
            state.set_config(config)  # Not running: nothing to reschedule on a loop yet.
            return config

        async def apply() -> None:
            state.set_config(config)

        asyncio.run_coroutine_threadsafe(apply(), loop).result(10)
        return config

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def format_banner(base_url: str, config: FaultConfig) -> str:
    """The one line printed at start: what to set PROBE_URL to, and what will go wrong."""
    faults = config.active_faults()
    described = ", ".join(f"{k}={v}" for k, v in faults.items()) if faults else "none"
    return f"Fake provider listening: PROBE_URL={base_url}  faults: {described}"


def run_forever(
    config: FaultConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    record_path: str | os.PathLike[str] | None = None,
    *,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 1.0,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, then stop listening and flush; returns.

    ``ready`` is called with the base URL once the port is listening.
    """
    asyncio.run(_serve_until_signalled(config, host, port, record_path, ready, shutdown_timeout))


async def _serve_until_signalled(
    config: FaultConfig,
    host: str,
    port: int,
    record_path: str | os.PathLike[str] | None,
    ready: Callable[[str], None] | None,
    shutdown_timeout: float,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Only possible in the main thread; elsewhere the caller has to stop us another way.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    recorder = Recorder(record_path)
    listener = _Listener(build_app(config, recorder), host, port, shutdown_timeout)
    try:
        await listener.start()
        base_url = _base_url(host, listener.port)
        if ready is not None:
            ready(base_url)
        else:
            logger.info("%s", format_banner(base_url, config))
        await stop.wait()
        logger.info("fake provider stopping")
    finally:
        await listener.stop()
        recorder.close()
    logger.info("%s", _summary(recorder))


_HELP_DEFAULTS = FaultConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The CLI options, shared by ``manage.py fake_provider`` and ``python -m``.

    Fault options default to None so that FaultConfig stays the one place defaults live.
    """
    d = _HELP_DEFAULTS
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument(
        "--token", default=None, help="expected bearer token (default: PROBE_TOKEN)"
    )
    parser.add_argument(
        "--latency-ms", type=float, help=f"added to every answer (default {d.latency_ms})"
    )
    parser.add_argument(
        "--latency-jitter-ms", type=float, help="latency varies uniformly by +/- this much"
    )

    def rate(flag: str, what: str) -> None:
        parser.add_argument(flag, type=float, metavar="P", help=f"probability in [0, 1]: {what}")

    rate("--error-rate", "answer 500/502/503")
    rate("--timeout-rate", "hang for --hang-seconds, then 504 (not delivered)")
    parser.add_argument("--hang-seconds", type=float, help=f"default {d.hang_seconds:g}")
    rate("--malformed-rate", "200 with a garbage body (not delivered)")
    rate("--throttle-rate", "429 with Retry-After")
    parser.add_argument(
        "--retry-after", type=int, help=f"Retry-After seconds (default {d.retry_after})"
    )
    rate("--reject-rate", '200 {"code": 1}, a permanent rejection')
    rate("--reset-rate", "abort the connection with no answer")
    rate("--drip-rate", "deliver, then send the body one byte per second")
    parser.add_argument(
        "--outage",
        action="append",
        metavar="START:DURATION",
        help="refuse connections from START to START+DURATION seconds after start; repeatable",
    )
    parser.add_argument("--seed", type=int, help="seed the fault RNG for repeatable runs")
    parser.add_argument(
        "--record", metavar="FILE", help="append every delivery as a JSON line to FILE"
    )


def _parse_outage(value: Any) -> tuple[float, float]:
    if not isinstance(value, str):
        return value  # Already a pair (call_command); FaultConfig validates it.
    start, _, duration = value.partition(":")
    try:
        return float(start), float(duration)  # No colon leaves duration "", which fails too.
    except ValueError:
        raise ValueError(f"--outage must be START:DURATION in seconds, got {value!r}") from None


def config_from_options(options: Mapping[str, Any]) -> FaultConfig:
    """A FaultConfig from parsed CLI options (argparse vars or Django's options dict).

    Options that are absent or None keep FaultConfig's defaults; keys that are not config
    fields (verbosity, host, ...) are ignored. ValueError on bad values.
    """
    fields = _config_fields()
    changes = {
        name: value for name, value in options.items() if name in fields and value is not None
    }
    if options.get("outage"):
        changes["outages"] = [_parse_outage(item) for item in options["outage"]]
    return FaultConfig(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailing.fake_provider",
        description="Local stand-in for the external send API, with fault injection.",
    )
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="default %(default)s")
    options = vars(parser.parse_args(argv))
    if options["token"] is None:
        # Mirrors settings.PROBE_TOKEN without needing Django.
        options["token"] = os.environ.get("PROBE_TOKEN") or DEFAULT_TOKEN
    try:
        config = config_from_options(options)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=options["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    def announce(base_url: str) -> None:
        print(format_banner(base_url, config), flush=True)

    run_forever(config, options["host"], options["port"], options["record"], ready=announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
