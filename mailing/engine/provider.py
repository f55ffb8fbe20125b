"""The external send API behind one small interface.

The dispatcher only knows :class:`SendClient`; :class:`HttpSendClient` is the
real one, and tests point it at the stand-in of the send API (devtools.provider)
on loopback. A client never raises for network or protocol trouble; every
call ends in a :class:`SendResult` whose :class:`Outcome` tells the dispatcher
what to do with the message, because a provider that "answers slowly, answers
garbage, or refuses connections" (PRODUCT.md) must cost a retry, not a crash.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import aiohttp

from mailing.rules import ERROR_MAX_LENGTH

logger = logging.getLogger("mailing.provider")

MAX_BODY_BYTES = 64 * 1024
# A Retry-After of years would overflow the caller's datetime arithmetic; a
# day is already longer than any mailing should wait on one provider hint.
MAX_RETRY_AFTER = 24 * 3600.0

_DELAY_SECONDS = re.compile(r"\d{1,12}(\.\d{1,6})?")


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"  # HTTP 200 with {"code": 0}
    REJECTED = "rejected"  # 400, or 200 with a non-zero code: permanent, the message fails
    RETRY = "retry"  # timeouts, refused/reset connections, 5xx, garbage: try later
    THROTTLED = "throttled"  # 429: try later, no sooner than retry_after
    UNAUTHORIZED = "unauthorized"  # 401/403: the token is wrong; never burn the message


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    message_id: int
    phone: str  # "79161234567"; sent as an integer in the JSON body
    text: str
    mailing_id: int
    client_id: int | None


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: int
    outcome: Outcome
    detail: str  # short human reason, stored in Message.last_error (clipped)
    status_code: int | None
    retry_after: float | None
    latency: float  # seconds, wall time of the whole call


class SendClient(Protocol):
    async def send(self, message: OutgoingMessage) -> SendResult: ...

    async def close(self) -> None: ...


def clip(text: str, limit: int = ERROR_MAX_LENGTH) -> str:
    """Shorten ``text`` to ``limit`` characters so it fits ``last_error``."""
    text = " ".join(text.split())  # provider bodies may carry newlines and HTML
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_retry_after(value: str | None, date_header: str | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date).

    An HTTP-date is measured against the response's own ``Date`` header when
    that parses, so the provider's clock skew does not distort the delay;
    otherwise against our clock. Dates in the past give 0. Anything
    unparseable gives None.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _DELAY_SECONDS.fullmatch(value):
        return min(float(value), MAX_RETRY_AFTER)
    when = _parse_http_date(value)
    if when is None:
        return None
    reference = _parse_http_date(date_header) if date_header else None
    if reference is None:
        reference = datetime.now(UTC)
    delay = (when - reference).total_seconds()
    if not math.isfinite(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:  # pragma: no cover - older Pythons returned None on garbage
        return None
    # RFC 9110 dates are always GMT; "-0000" parses as naive.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class _BodyTooLarge(ValueError):
    pass


async def _read_limited(content: aiohttp.StreamReader, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read the whole body, but refuse to hold more than ``limit`` bytes of it."""
    buffer = bytearray()
    while True:
        chunk = await content.read(limit + 1 - len(buffer))
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > limit:
            raise _BodyTooLarge(f"larger than {limit} bytes")


def _classify_ok_body(body: bytes) -> tuple[Outcome, str]:
    """Outcome of an HTTP 200 from its body: only a JSON object with an integer code counts."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return Outcome.RETRY, "malformed body: not UTF-8"
    except (ValueError, RecursionError) as exc:
        return Outcome.RETRY, clip(f"malformed body: not JSON ({exc})")
    if not isinstance(data, dict):
        return Outcome.RETRY, f"malformed body: JSON {type(data).__name__}, not an object"
    if "code" not in data:
        return Outcome.RETRY, "malformed body: missing 'code'"
    code = data["code"]
    # bool is an int subclass; {"code": false} is garbage, not acceptance.
    if isinstance(code, bool) or not isinstance(code, int):
        return Outcome.RETRY, clip(f"malformed body: 'code' is not an integer: {code!r:.80}")
    message = data.get("message")
    detail = f"code {code}" if message in (None, "") else f"code {code}: {message}"
    return (Outcome.ACCEPTED if code == 0 else Outcome.REJECTED), clip(detail)


def _classify_status(status: int, body: bytes) -> tuple[Outcome, str]:
    snippet = body[:200].decode("utf-8", "replace").strip()
    detail = f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"
    if status == 400:
        return Outcome.REJECTED, clip(detail)
    if status in (401, 403):
        return Outcome.UNAUTHORIZED, clip(detail)
    if status == 429:
        return Outcome.THROTTLED, clip(detail)
    if 500 <= status <= 599:
        return Outcome.RETRY, clip(detail)
    # Redirects, 404, 2xx other than 200...: the provider is not behaving as
    # specified; retrying with the same msgId is safe, failing the message is not.
    return Outcome.RETRY, clip(f"unexpected {detail}")


def _log_call(message: OutgoingMessage, result: SendResult) -> None:
    latency_ms = result.latency * 1000
    logger.info(
        "provider call msg=%s outcome=%s status=%s latency_ms=%.1f detail=%s",
        message.message_id,
        result.outcome.value,
        result.status_code,
        latency_ms,
        result.detail,
        extra={
            "mailing_id": message.mailing_id,
            "message_id": message.message_id,
            "client_id": message.client_id,
            "outcome": result.outcome.value,
            "status_code": result.status_code,
            "latency_ms": round(latency_ms, 1),
        },
    )


class HttpSendClient:
    """:class:`SendClient` over aiohttp with one pooled session per client object.

    The session (and its keep-alive pool of ``max_connections``) is created on
    the first ``send`` inside the running loop, because aiohttp sessions are
    bound to the loop they were created in. ``total_timeout`` bounds the whole
    call including the body, so a server that drips a byte a second still ends
    as RETRY on time.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout: float = 3.0,
        total_timeout: float = 10.0,
        max_connections: int = 100,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if connect_timeout <= 0 or total_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def __aenter__(self) -> HttpSendClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, message: OutgoingMessage) -> SendResult:
        started = time.monotonic()
        outcome, detail, status, retry_after = await self._call(message)
        result = SendResult(
            message_id=message.message_id,
            outcome=outcome,
            detail=detail,
            status_code=status,
            retry_after=retry_after,
            latency=time.monotonic() - started,
        )
        _log_call(message, result)
        return result

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._session_loop is asyncio.get_running_loop():
            await session.close()

    async def _call(
        self, message: OutgoingMessage
    ) -> tuple[Outcome, str, int | None, float | None]:
        if self._closed:
            return Outcome.RETRY, "client closed", None, None
        phone = message.phone.strip()
        if not phone.isascii() or not phone.isdigit():
            # The provider would answer 400 for it; no point asking.
            return Outcome.REJECTED, clip(f"invalid phone {message.phone!r}"), None, None
        payload = {"id": message.message_id, "phone": int(phone), "text": message.text}
        session = self._session_for_running_loop()
        url = f"{self._base_url}/send/{message.message_id}"
        status: int | None = None
        try:
            async with session.post(
                url, json=payload, headers=self._headers, allow_redirects=False
            ) as response:
                status = response.status
                if status == 200:
                    try:
                        body = await _read_limited(response.content)
                    except _BodyTooLarge as exc:
                        return Outcome.RETRY, f"malformed body: {exc}", status, None
                    outcome, detail = _classify_ok_body(body)
                    return outcome, detail, status, None
                # The status decides; the body only decorates the detail. Reading
                # it (bounded) also lets the connection go back to the pool.
                try:
                    body = await _read_limited(response.content)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    body = b""
                outcome, detail = _classify_status(status, body)
                retry_after = None
                if outcome is Outcome.THROTTLED:
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), response.headers.get("Date")
                    )
                return outcome, detail, status, retry_after
        except TimeoutError as exc:
            # aiohttp's connect timeout is a TimeoutError too; name it, because
            # "connect" points at the network and "total" at the provider.
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                return (
                    Outcome.RETRY,
                    f"connect timeout after {self._connect_timeout}s",
                    status,
                    None,
                )
            return Outcome.RETRY, f"timeout after {self._total_timeout}s", status, None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError covers UnicodeDecodeError and aiohttp's header parsing.
            return Outcome.RETRY, clip(f"{type(exc).__name__}: {exc}"), status, None

    def _session_for_running_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and not session.closed and self._session_loop is loop:
            return session
        if session is not None and not session.closed:
            # Sessions cannot cross loops; the old one dies with its loop.
            logger.warning("HttpSendClient used from a new event loop; opening a new pool")
        connector = aiohttp.TCPConnector(limit=self._max_connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._session_loop = loop
        return self._session
