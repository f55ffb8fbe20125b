"""Real HTTP servers on loopback that misbehave in the ways the provider does.

Each :class:`ProviderServer` runs an aiohttp app on its own event loop in a
background thread, so the client under test runs in the test's own loop
(``asyncio.run``) and talks to it over a real TCP socket. The scenario is
picked by the first path segment: ``{server.base("s503")}/send/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OK_BODY = {"code": 0, "message": "OK"}
# A fixed server clock for Retry-After dates, so the expected delay is exact.
FIXED_DATE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class RecordedRequest:
    scenario: str
    path: str
    method: str
    authorization: str | None
    content_type: str | None
    body: bytes
    peer: tuple[str, int]


class ProviderServer:
    def __init__(self, gate_target: int = 1) -> None:
        self.requests: list[RecordedRequest] = []
        self.connections = 0  # TCP connections accepted by the HTTP server
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate_target = gate_target
        self.port = 0
        self.raw_close_port = 0
        self.raw_reset_port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="provider-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._release: asyncio.Event | None = None
        self._gate: asyncio.Event | None = None
        self.scenarios: dict[str, Handler] = {
            "ok": self._ok,
            "record": self._ok,
            "gate": self._gate_then_ok,
            "code3": _json(200, {"code": 3, "message": "rejected"}),
            "code3long": _json(200, {"code": 3, "message": "x" * 5000}),
            "code0nomsg": _json(200, {"code": 0}),
            "bad400": _text(400, "bad phone"),
            "bad400long": _text(400, "y" * 10_000),
            "u401": _text(401, "token expired"),
            "u403": _text(403, ""),
            "s500": _text(500, "boom"),
            "s502": _text(502, "bad gateway"),
            "s503": _text(503, "unavailable"),
            "nf404": _text(404, "no such route"),
            "redirect": self._redirect,
            "throttle7": _text(429, "", {"Retry-After": "7"}),
            "throttle_date": _text(
                429,
                "",
                {
                    "Date": format_datetime(FIXED_DATE, usegmt=True),
                    "Retry-After": format_datetime(FIXED_DATE + timedelta(seconds=30), usegmt=True),
                },
            ),
            "throttle_date_live": self._throttle_live_date,
            "throttle_none": _text(429, ""),
            "throttle_garbage": _text(429, "", {"Retry-After": "soon"}),
            "nonjson": _raw(200, b"<html>Service Unavailable</html>", "text/html"),
            "list": _raw(200, b"[0]"),
            "nocode": _raw(200, b'{"message": "OK"}'),
            "codestr": _raw(200, b'{"code": "0", "message": "OK"}'),
            "codetrue": _raw(200, b'{"code": true, "message": "OK"}'),
            "codefloat": _raw(200, b'{"code": 0.0, "message": "OK"}'),
            "empty": _raw(200, b""),
            "badutf8": _raw(200, b'{"code": 0, "message": "\xff\xfe"}'),
            "deep": _raw(200, b"[" * 30_000 + b"]" * 30_000),
            "huge": _raw(200, json.dumps({"code": 0, "pad": "z" * 100_000}).encode()),
            "slow": self._slow,
            "drip": self._drip,
        }

    # lifecycle ----------------------------------------------------------

    def start(self) -> ProviderServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base(self, scenario: str) -> str:
        return f"{self.url}/{scenario}"

    def recorded(self, scenario: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if scenario is None or r.scenario == scenario]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _start(self) -> None:
        self._release = asyncio.Event()
        self._gate = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{scenario}/send/{msg_id}", self._dispatch)
        # handler_cancellation: a client that gave up (timeout) cancels the
        # slow handler instead of leaving it to linger until shutdown.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        http_factory = self._runner.server
        assert http_factory is not None

        def counting_factory() -> asyncio.BaseProtocol:
            # The on-connection hook: called once per accepted TCP connection.
            self.connections += 1
            return http_factory()

        loop = asyncio.get_running_loop()
        http = await loop.create_server(counting_factory, "127.0.0.1", 0)
        close = await loop.create_server(_CloseAfterRequest, "127.0.0.1", 0)
        reset = await loop.create_server(_ResetAfterRequest, "127.0.0.1", 0)
        self._servers = [http, close, reset]
        self.port = http.sockets[0].getsockname()[1]
        self.raw_close_port = close.sockets[0].getsockname()[1]
        self.raw_reset_port = reset.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._release is not None
        self._release.set()
        for server in self._servers:
            server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # handlers -----------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        scenario = request.match_info["scenario"]
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    scenario=scenario,
                    path=request.path,
                    method=request.method,
                    authorization=request.headers.get("Authorization"),
                    content_type=request.headers.get("Content-Type"),
                    body=body,
                    peer=tuple(peer) if peer else ("", 0),
                )
            )
        handler = self.scenarios.get(scenario)
        if handler is None:
            return web.Response(status=599, text=f"unknown scenario {scenario}")
        return await handler(request)

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(OK_BODY)

    async def _gate_then_ok(self, request: web.Request) -> web.StreamResponse:
        # Hold every request until gate_target of them are in flight at once:
        # that proves the client really runs that many calls concurrently.
        assert self._gate is not None
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.in_flight >= self.gate_target:
                self._gate.set()
            await asyncio.wait_for(self._gate.wait(), timeout=10)
            return web.json_response(OK_BODY)
        finally:
            self.in_flight -= 1

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=302, headers={"Location": f"/ok/send/{request.match_info['msg_id']}"}
        )

    async def _throttle_live_date(self, request: web.Request) -> web.StreamResponse:
        # Only Retry-After is set: the client must fall back to the real Date
        # header that aiohttp adds (or to its own clock).
        when = datetime.now(UTC) + timedelta(seconds=30)
        return web.Response(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        assert self._release is not None
        # Far longer than any client timeout in the tests; released at shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout=30)
        return web.json_response(OK_BODY)

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        body = json.dumps(OK_BODY).encode()
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
        )
        await response.prepare(request)
        for byte in body:
            await response.write(bytes([byte]))
            await asyncio.sleep(0.3)
        await response.write_eof()
        return response


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers=headers)

    return handler


def _json(status: int, payload: object) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handler


def _raw(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type=content_type)

    return handler


class _CloseAfterRequest(asyncio.Protocol):
    """Reads the request, then hangs up without a single byte of answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.close()


class _ResetAfterRequest(_CloseAfterRequest):
    """Like the above, but with a TCP RST (SO_LINGER 0) instead of a clean FIN."""

    def data_received(self, data: bytes) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def refused_port() -> tuple[socket.socket, int]:
    """A port on which connections are refused: bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]
