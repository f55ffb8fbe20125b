"""The dispatcher: claims due messages, sends them concurrently, records the results.

One dispatcher runs one asyncio loop for the HTTP calls and one thread for the database,
so responses keep arriving while a batch is being claimed or recorded. Database work is
short transactions (claim, record); no transaction is open during an HTTP call.

What stops sending: the provider refusing our credentials (shared by every worker through
the database, probed once every AUTH_RETRY_SECONDS), the circuit breaker (per dispatcher,
probed by single requests), a 429 (waits for Retry-After), the shared rate limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from django.utils import timezone

from mailing.engine import lifecycle, provider_state
from mailing.engine.circuit import CircuitBreaker
from mailing.engine.provider import HttpSendClient, Outcome, SendClient, SendResult
from mailing.engine.queue import Claimed, RetryPolicy, claim_due, record_results
from mailing.engine.send_health import SendHealthWindow
from mailing.models import DispatcherSlot
from ops import metrics

logger = logging.getLogger("mailing.engine")

RETRYABLE = (Outcome.RETRY,)
HEALTH_STORE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    concurrency: int = 200
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

    @classmethod
    def from_settings(cls) -> DispatcherConfig:
        return cls(
            concurrency=settings.SEND_CONCURRENCY,
            lease=timedelta(seconds=settings.CLAIM_LEASE_SECONDS),
            retry=RetryPolicy(settings.RETRY_BASE_SECONDS, settings.RETRY_MAX_SECONDS),
            rate_limit=settings.SEND_RATE_LIMIT,
            auth_retry_seconds=settings.AUTH_RETRY_SECONDS,
            circuit_threshold=settings.CIRCUIT_FAILURE_THRESHOLD,
            circuit_reset_seconds=settings.CIRCUIT_RESET_SECONDS,
            total_timeout=settings.PROBE_TOTAL_TIMEOUT,
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

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class Dispatcher:
    def __init__(
        self,
        config: DispatcherConfig | None = None,
        *,
        client_factory: Callable[[DispatcherConfig], SendClient] = http_client_from_settings,
        worker_id: str | None = None,
        stop_event: threading.Event | None = None,
        on_tick: Callable[[datetime], bool] | None = None,
        clock: Callable[[], datetime] = timezone.now,
    ) -> None:
        self.config = config or DispatcherConfig.from_settings()
        self.client_factory = client_factory
        self.worker_id = worker_id or new_worker_id()
        self.stop_event = stop_event or threading.Event()
        self.on_tick = on_tick
        self.clock = clock
        self.circuit = CircuitBreaker(
            self.config.circuit_threshold, self.config.circuit_reset_seconds
        )
        self.report = DispatchReport()
        self._rng = random.Random()
        self._auth_failed_at: datetime | None = None
        self._last_auth_probe = 0.0
        self._throttled_until = 0.0
        self._db_executor: ThreadPoolExecutor | None = None
        self.send_health = SendHealthWindow()
        self._health_stored_at = 0.0

    # --- public ---------------------------------------------------------------------

    def run(self, duration: float | None = None) -> DispatchReport:
        """Dispatch until ``duration`` seconds have passed or ``stop_event`` is set."""
        deadline = None if duration is None else time.monotonic() + duration
        self._db_executor = ThreadPoolExecutor(1, thread_name_prefix=f"db-{self.worker_id}")
        try:
            asyncio.run(self._main(deadline))
        finally:
            self._db_executor.submit(_close_connection).result()
            self._db_executor.shutdown()
        return self.report

    def stop(self) -> None:
        self.stop_event.set()

    # --- loop -----------------------------------------------------------------------

    async def _db(self, func, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_executor, func, *args)

    async def _db_safely(self, what: str, func, *args):
        """Run database work; a database outage is waited out, not fatal."""
        try:
            return await self._db(func, *args)
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("database unavailable during %s: %s", what, exc)
            await self._db(_close_connection)
            await asyncio.sleep(1.0)
            return None

    def _should_stop(self, deadline: float | None) -> bool:
        return self.stop_event.is_set() or (deadline is not None and time.monotonic() >= deadline)

    async def _main(self, deadline: float | None) -> None:
        client = self.client_factory(self.config)
        in_flight: dict[asyncio.Task, Claimed] = {}
        finished: list[tuple[Claimed, SendResult | None]] = []
        next_tick = 0.0
        last_flush = time.monotonic()
        try:
            while not self._should_stop(deadline):
                if time.monotonic() >= next_tick:
                    if await self._db_safely("tick", self._tick) is False:
                        logger.warning("dispatcher lost its slot; stopping")
                        break
                    next_tick = time.monotonic() + self.config.tick_interval
                claimed = await self._claim_more(len(in_flight))
                for claim in claimed:
                    task = asyncio.create_task(self._send_one(client, claim))
                    in_flight[task] = claim
                now_mono = time.monotonic()
                if finished and (
                    not in_flight
                    or len(finished) >= self.config.concurrency
                    or now_mono - last_flush >= self.config.flush_interval
                ):
                    if await self._flush(finished):
                        finished = []
                    last_flush = now_mono
                if in_flight:
                    done, _ = await asyncio.wait(
                        in_flight,
                        timeout=self.config.idle_poll,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for task in done:
                        finished.append((in_flight.pop(task), task.result()))
                elif not claimed:
                    await asyncio.sleep(self.config.idle_poll)
        finally:
            await self._drain(in_flight, finished)
            await client.close()

    async def _drain(self, in_flight: dict, finished: list) -> None:
        """On the way out: let in-flight calls end (bounded), hand back the rest, record all."""
        if in_flight:
            done, pending = await asyncio.wait(in_flight, timeout=self.config.total_timeout + 1)
            for task in done:
                finished.append((in_flight.pop(task), task.result()))
            for task in pending:
                task.cancel()
                finished.append((in_flight.pop(task), None))
        for _ in range(3):
            if not finished or await self._flush(finished):
                return
        logger.error(
            "could not record %d results before stopping; their leases will expire and "
            "they will be retried",
            len(finished),
        )

    # --- steps ----------------------------------------------------------------------

    def _tick(self) -> bool:
        now = self.clock()
        if self.on_tick is not None and not self.on_tick(now):
            return False
        lifecycle.tick(now)
        self._auth_failed_at = provider_state.unauthorized_since()
        self._store_send_health(now)
        return True

    def _store_send_health(self, now: datetime) -> None:
        """Every few seconds, the last minute's latency and errors onto our slot (if any)."""
        if time.monotonic() - self._health_stored_at < HEALTH_STORE_SECONDS:
            return
        self._health_stored_at = time.monotonic()
        health = self.send_health.summary()
        DispatcherSlot.objects.filter(owner=self.worker_id).update(
            send_requests=health["requests"],
            send_p50_ms=health["p50_ms"],
            send_p95_ms=health["p95_ms"],
            send_error_rate=health["error_rate"],
            send_health_at=now,
        )

    def _allowance(self, in_flight: int) -> int:
        if time.monotonic() < self._throttled_until:
            return 0
        if self._auth_failed_at is not None:
            # Credentials refused: one probe at a time, once per AUTH_RETRY_SECONDS.
            due = time.monotonic() - self._last_auth_probe >= self.config.auth_retry_seconds
            if in_flight or not due:
                return 0
            self._last_auth_probe = time.monotonic()
            return 1
        circuit = self.circuit.request_allowance()
        if circuit is not None:
            return 0 if in_flight else circuit
        free = self.config.concurrency - in_flight
        # Claim in sizeable batches: refill once half the slots are free.
        return free if free >= max(1, self.config.concurrency // 2) or not in_flight else 0

    async def _claim_more(self, in_flight: int) -> list[Claimed]:
        wanted = self._allowance(in_flight)
        if wanted <= 0:
            return []
        claimed = await self._db_safely("claim", self._claim, wanted)
        if not claimed:
            return []
        if len(claimed) == 1 and self.circuit.request_allowance() == 1:
            self.circuit.on_request_started()
        self.report.claimed += len(claimed)
        return claimed

    def _claim(self, wanted: int) -> list[Claimed]:
        now = self.clock()
        permitted = provider_state.acquire_send_permits(wanted, self.config.rate_limit, now)
        return claim_due(self.worker_id, permitted, now, self.config.lease)

    async def _send_one(self, client: SendClient, claim: Claimed) -> SendResult | None:
        # Checked at the last moment before the call: nothing is sent at or after the end.
        if self.clock() >= claim.end_at:
            return None
        result = await client.send(claim.message)
        self._observe(result)
        return result

    def _observe(self, result: SendResult) -> None:
        self.report.count(result.outcome.value)
        metrics.observe_send(result.outcome.value, result.latency)
        self.send_health.record(
            result.latency, result.outcome not in (Outcome.ACCEPTED, Outcome.REJECTED)
        )
        if result.outcome in (Outcome.ACCEPTED, Outcome.REJECTED):
            self.circuit.record_success()
        elif result.outcome in RETRYABLE:
            self.circuit.record_failure()
        elif result.outcome == Outcome.THROTTLED:
            pause = result.retry_after if result.retry_after is not None else 1.0
            self._throttled_until = max(self._throttled_until, time.monotonic() + pause)

    async def _flush(self, finished: list[tuple[Claimed, SendResult | None]]) -> bool:
        """Record the results; False (keep them for the next try) if the database is away."""
        return bool(await self._db_safely("record", self._record, list(finished)))

    def _record(self, results: list[tuple[Claimed, SendResult | None]]) -> bool:
        now = self.clock()
        record_results(self.worker_id, results, now, self.config.retry, self._rng)
        refused = [r for _, r in results if r is not None and r.outcome == Outcome.UNAUTHORIZED]
        accepted = any(r is not None and r.outcome == Outcome.ACCEPTED for _, r in results)
        if refused:
            provider_state.mark_unauthorized(refused[0].detail, now)
            self._auth_failed_at = now
            self._last_auth_probe = time.monotonic()
        elif accepted and self._auth_failed_at is not None:
            provider_state.clear_unauthorized()
            self._auth_failed_at = None
        return True
