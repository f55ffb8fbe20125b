"""The dispatcher: claims due messages, sends them concurrently, records the results.

One dispatcher runs one asyncio loop for the HTTP calls and one thread for the database,
so responses keep arriving while a batch is being claimed or recorded. Database work is
short transactions (claim, record); no transaction is open during an HTTP call.

The loop, one step per method: tick (the mailings' lifecycle, the shared credentials
state), start sends (claim what the send gate allows), flush (record finished sends in a
batch), wait (for an answer, or a moment when idle). What may be sent and when is the
send gate's decision (``mailing.engine.gate``): 429 pauses, refused credentials, the
circuit breaker, the concurrency window (``mailing.engine.limiter``: slow start, then AIMD)
and the shared rate limit.

Threads: the asyncio loop owns the gate, the report and the sends; the database thread
owns nothing but what it is handed. Methods that run on the database thread are marked
"(database thread)" and take a snapshot of what they need from the loop as arguments.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection

from mailing.engine import lifecycle, provider_state
from mailing.engine.circuit import CircuitBreaker, CircuitState
from mailing.engine.clock import SYSTEM_CLOCK, Clock
from mailing.engine.gate import SendGate
from mailing.engine.limiter import AdaptiveLimit, LimiterConfig
from mailing.engine.provider import HttpSendClient, Outcome, SendClient, SendResult
from mailing.engine.queue import Claimed, RetryPolicy, claim_due, record_results
from mailing.engine.send_health import SendHealthWindow
from ops import metrics

logger = logging.getLogger("mailing.engine")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    concurrency: int = 200  # the most calls in flight (the window's ceiling)
    window_initial: int = 4  # the window's start (slow start)
    window_adaptive: bool = True  # False: a fixed window of ``concurrency``
    lease: timedelta = timedelta(seconds=60)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base=5.0, cap=600.0))
    rate_limit: float = 0.0
    auth_retry_seconds: float = 30.0
    circuit_threshold: int = 20
    circuit_reset_seconds: float = 10.0
    total_timeout: float = 10.0
    tick_interval: float = 0.5
    idle_poll: float = 0.2
    flush_interval: float = 0.05
    # On the way out, how long calls in flight get to answer before they are handed back.
    stop_grace: float = 5.0

    @classmethod
    def from_settings(cls) -> DispatcherConfig:
        return cls(
            concurrency=settings.SEND_CONCURRENCY,
            window_initial=settings.SEND_WINDOW_INITIAL,
            window_adaptive=settings.SEND_WINDOW_ADAPTIVE,
            lease=timedelta(seconds=settings.CLAIM_LEASE_SECONDS),
            retry=RetryPolicy(settings.RETRY_BASE_SECONDS, settings.RETRY_MAX_SECONDS),
            rate_limit=settings.SEND_RATE_LIMIT,
            auth_retry_seconds=settings.AUTH_RETRY_SECONDS,
            circuit_threshold=settings.CIRCUIT_FAILURE_THRESHOLD,
            circuit_reset_seconds=settings.CIRCUIT_RESET_SECONDS,
            total_timeout=settings.PROBE_TOTAL_TIMEOUT,
            stop_grace=settings.DISPATCHER_STOP_SECONDS,
        )


def http_client_from_settings(config: DispatcherConfig) -> SendClient:
    return HttpSendClient(
        settings.PROBE_URL,
        settings.PROBE_TOKEN,
        connect_timeout=settings.PROBE_CONNECT_TIMEOUT,
        total_timeout=settings.PROBE_TOTAL_TIMEOUT,
        max_connections=config.concurrency,
    )


def _close_connection() -> None:
    # Looked up in the calling thread: Django's connections are per thread.
    connection.close()


def new_worker_id() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class DispatchReport:
    """What one run did, by outcome (for logs, tests and benchmarks)."""

    outcomes: dict[str, int] = field(default_factory=dict)
    claimed: int = 0
    # The latest decision to start a call (the dispatcher clock's wall time, taken where the
    # mailing's end is checked): what "nothing is sent at or after end_at" is about.
    last_send_started_at: datetime | None = None

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def send_started(self, at: datetime) -> None:
        if self.last_send_started_at is None or at > self.last_send_started_at:
            self.last_send_started_at = at


@dataclass(frozen=True, slots=True)
class DispatcherStatus:
    """A snapshot taken on the loop, handed to the tick hook (which runs on the database
    thread): what the dispatcher's keeper may store or show."""

    circuit_state: CircuitState
    paused_for_credentials: bool
    in_flight: int
    window: int  # the concurrency window now
    send_health: SendHealthWindow  # live, not a copy: safe from any thread


TickHook = Callable[[datetime, DispatcherStatus], bool]

Finished = tuple[Claimed, SendResult | None]


@dataclass
class _Sends:
    """This run's requests: in flight, and finished but not yet recorded (loop-owned)."""

    in_flight: dict[asyncio.Task[SendResult | None], Claimed]
    finished: list[Finished]
    last_flush: float

    def collect(self, done: set[asyncio.Task[SendResult | None]]) -> None:
        for task in done:
            self.finished.append((self.in_flight.pop(task), task.result()))


@dataclass(frozen=True, slots=True)
class _Ticked:
    keep_running: bool
    credentials_refused: bool  # what the shared provider state says


class CredentialsChange(enum.Enum):
    UNCHANGED = "unchanged"
    REFUSED = "refused"  # a result was 401/403: sending pauses, for every worker
    ACCEPTED = "accepted"  # an acceptance while paused: sending resumes, for every worker


@dataclass(frozen=True, slots=True)
class _Recorded:
    saved: bool
    credentials: CredentialsChange = CredentialsChange.UNCHANGED


_NOT_RECORDED = _Recorded(saved=False)


class Dispatcher:
    def __init__(
        self,
        config: DispatcherConfig | None = None,
        *,
        client_factory: Callable[[DispatcherConfig], SendClient] = http_client_from_settings,
        worker_id: str | None = None,
        stop_event: threading.Event | None = None,
        on_tick: TickHook | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config or DispatcherConfig.from_settings()
        self.client_factory = client_factory
        self.worker_id = worker_id or new_worker_id()
        self.stop_event = stop_event or threading.Event()  # set from any thread
        self.on_tick = on_tick
        self.clock = clock
        # Owned by the asyncio loop.
        self.gate = SendGate(
            limiter=AdaptiveLimit(
                LimiterConfig(
                    maximum=self.config.concurrency,
                    initial=self.config.window_initial,
                    adaptive=self.config.window_adaptive,
                )
            ),
            rate_limit=self.config.rate_limit,
            auth_retry_seconds=self.config.auth_retry_seconds,
            circuit=CircuitBreaker(
                self.config.circuit_threshold,
                self.config.circuit_reset_seconds,
                clock=clock.monotonic,
            ),
            clock=clock,
        )
        self.report = DispatchReport()
        self._next_tick = 0.0
        # Written by the loop, summarised by the tick hook (database thread): locked inside.
        self.send_health = SendHealthWindow(clock=clock.monotonic)
        # Owned by the database thread.
        self._rng = random.Random()
        self._db_executor: ThreadPoolExecutor | None = None

    # --- public ---------------------------------------------------------------------

    def run(self, duration: float | None = None) -> DispatchReport:
        """Dispatch until ``duration`` seconds have passed or ``stop_event`` is set."""
        deadline = None if duration is None else self.clock.monotonic() + duration
        self._db_executor = ThreadPoolExecutor(1, thread_name_prefix=f"db-{self.worker_id}")
        try:
            asyncio.run(self._main(deadline))
        finally:
            self._db_executor.submit(_close_connection).result()
            self._db_executor.shutdown()
        return self.report

    def stop(self) -> None:
        self.stop_event.set()

    # --- the loop -------------------------------------------------------------------

    async def _main(self, deadline: float | None) -> None:
        client = self.client_factory(self.config)
        sends = _Sends(in_flight={}, finished=[], last_flush=self.clock.monotonic())
        try:
            while not self._should_stop(deadline):
                if not await self._tick_if_due(sends):
                    logger.warning("the dispatcher's keeper asked it to stop")
                    break
                started = await self._start_sends(client, sends)
                await self._flush_if_due(sends)
                await self._wait(sends, started)
        finally:
            await self._drain(sends)
            await client.close()

    def _should_stop(self, deadline: float | None) -> bool:
        return self.stop_event.is_set() or (
            deadline is not None and self.clock.monotonic() >= deadline
        )

    async def _tick_if_due(self, sends: _Sends) -> bool:
        """Run the tick every ``tick_interval``; False when the tick hook says stop."""
        if self.clock.monotonic() < self._next_tick:
            return True
        status = self._status(sends)
        unchanged = _Ticked(True, status.paused_for_credentials)
        ticked = await self._db_safely("tick", unchanged, self._tick, status)
        self._next_tick = self.clock.monotonic() + self.config.tick_interval
        self.gate.credentials_seen(ticked.credentials_refused)
        return ticked.keep_running

    async def _start_sends(self, client: SendClient, sends: _Sends) -> int:
        """Claim as many messages as the gate allows and start sending them; how many."""
        allowance = self.gate.allowance(len(sends.in_flight))
        if allowance.requests == 0:
            return 0
        claimed: list[Claimed] = await self._db_safely("claim", [], self._claim, allowance.requests)
        if not claimed:
            return 0
        if allowance.probe is not None:
            self.gate.probe_started(allowance.probe)
        self.report.claimed += len(claimed)
        for claim in claimed:
            sends.in_flight[asyncio.create_task(self._send_one(client, claim))] = claim
        return len(claimed)

    async def _flush_if_due(self, sends: _Sends) -> None:
        """Record finished sends once nothing is in flight, a window's worth is waiting,
        or ``flush_interval`` has passed: batches stay large, results stay fresh."""
        if not sends.finished:
            return
        now = self.clock.monotonic()
        due = (
            not sends.in_flight
            or len(sends.finished) >= self.gate.window
            or now - sends.last_flush >= self.config.flush_interval
        )
        if due:
            await self._flush(sends)
            sends.last_flush = now

    async def _wait(self, sends: _Sends, started: int) -> None:
        """Wait for the next answer (briefly), or idle a moment when there is nothing to do."""
        if sends.in_flight:
            done, _ = await asyncio.wait(
                sends.in_flight, timeout=self.config.idle_poll, return_when=asyncio.FIRST_COMPLETED
            )
            sends.collect(done)
        elif not started:
            await asyncio.sleep(self.config.idle_poll)

    async def _drain(self, sends: _Sends) -> None:
        """On the way out: let in-flight calls end (bounded), hand back the rest, record all."""
        if sends.in_flight:
            done, pending = await asyncio.wait(sends.in_flight, timeout=self.config.stop_grace)
            sends.collect(done)
            for task in pending:
                task.cancel()
                sends.finished.append((sends.in_flight.pop(task), None))
        for _ in range(3):
            if not sends.finished or await self._flush(sends):
                return
        logger.error(
            "could not record %d results before stopping; their leases will expire and "
            "they will be retried",
            len(sends.finished),
        )

    # --- one send -------------------------------------------------------------------

    async def _send_one(self, client: SendClient, claim: Claimed) -> SendResult | None:
        """The call, or None when the mailing ended before it could start."""
        # Checked at the last moment before the call: nothing is sent at or after the end.
        now = self.clock.now()
        if now >= claim.end_at:
            return None
        self.report.send_started(now)
        result = await client.send(claim.message)
        self._observe(result)
        return result

    def _observe(self, result: SendResult) -> None:
        self.report.count(result.outcome.value)
        metrics.observe_send(result.outcome.value, result.latency)
        self.send_health.record(
            result.latency, result.outcome not in (Outcome.ACCEPTED, Outcome.REJECTED)
        )
        self.gate.observe(result)

    async def _flush(self, sends: _Sends) -> bool:
        """Record the finished sends; False (they are kept for the next try) if the
        database is away."""
        batch = list(sends.finished)
        paused = self.gate.paused_for_credentials
        recorded = await self._db_safely("record", _NOT_RECORDED, self._record, batch, paused)
        if not recorded.saved:
            return False
        del sends.finished[: len(batch)]
        if recorded.credentials is CredentialsChange.REFUSED:
            self.gate.credentials_refused()
        elif recorded.credentials is CredentialsChange.ACCEPTED:
            self.gate.credentials_accepted()
        return True

    def _status(self, sends: _Sends) -> DispatcherStatus:
        return DispatcherStatus(
            circuit_state=self.gate.circuit.state,
            paused_for_credentials=self.gate.paused_for_credentials,
            in_flight=len(sends.in_flight),
            window=self.gate.window,
            send_health=self.send_health,
        )

    # --- the database thread ----------------------------------------------------------

    async def _db_safely(self, what: str, fallback: T, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` on the database thread; during an outage, wait a moment and return
        ``fallback`` (a database outage is waited out, never fatal)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._db_executor, func, *args)
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("database unavailable during %s: %s", what, exc)
            await loop.run_in_executor(self._db_executor, _close_connection)
            await asyncio.sleep(1.0)
            return fallback

    def _tick(self, status: DispatcherStatus) -> _Ticked:
        """(database thread) The hook, the lifecycle, the shared credentials state."""
        now = self.clock.now()
        if self.on_tick is not None and not self.on_tick(now, status):
            return _Ticked(False, status.paused_for_credentials)
        lifecycle.tick(now)
        refused = provider_state.unauthorized_since() is not None
        return _Ticked(True, refused)

    def _claim(self, wanted: int) -> list[Claimed]:
        """(database thread) Permits from the shared rate limit, then the claim."""
        now = self.clock.now()
        permitted = self.gate.take_rate_permits(wanted, now)
        return claim_due(self.worker_id, permitted, now, self.config.lease)

    def _record(self, results: list[Finished], paused_for_credentials: bool) -> _Recorded:
        """(database thread) Write the results; pause or resume sending for every worker
        when they show the credentials refused or working again."""
        now = self.clock.now()
        record_results(self.worker_id, results, now, self.config.retry, self._rng)
        refused = [r for _, r in results if r is not None and r.outcome == Outcome.UNAUTHORIZED]
        if refused:
            provider_state.mark_unauthorized(refused[0].detail, now)
            return _Recorded(True, CredentialsChange.REFUSED)
        accepted = any(r is not None and r.outcome == Outcome.ACCEPTED for _, r in results)
        if accepted and paused_for_credentials:
            provider_state.clear_unauthorized()
            return _Recorded(True, CredentialsChange.ACCEPTED)
        return _Recorded(True)
