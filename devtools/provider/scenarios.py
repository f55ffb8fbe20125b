"""Scenarios: fixed answers, one per route, for the corners a random fault model rarely hits.

``POST /scenario/<name>/v1/send/<msgId>`` answers the way scenario ``<name>`` says, whatever
the token and body, and the request is kept whole (``Recorder.recorded(name)``). A client is
pointed at one with ``PROBE_URL=http://HOST:PORT/scenario/<name>/v1`` (``StandInServer
.scenario_url(name)``). They cover what the provider-client tests need: every status the
spec allows and some it does not, Retry-After in both forms, bodies that are not JSON or
too big or too deep, a redirect that must not be followed, a server that hangs up, resets,
stalls or drips, and a gate that proves how many requests a client really sends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from aiohttp import web

from devtools.provider.transport import abort_with_rst

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OK = {"code": 0, "message": "OK"}
# A fixed server clock for Retry-After dates, so the expected delay is exact.
FIXED_DATE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
# Far longer than any client timeout in the tests; the stand-in releases it when it stops.
SLOW_HOLD_SECONDS = 30.0
GATE_WAIT_SECONDS = 10.0
DRIP_BYTE_SECONDS = 0.3


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


class Scenarios:
    """The scenario handlers and the little state some of them share (the gate, the hold).

    ``gate_target``: the "gate" scenario holds every request until that many are in flight
    at once (``max_in_flight`` shows the most seen). Lives on the server's event loop.
    """

    def __init__(self, gate_target: int = 1) -> None:
        self.gate_target = gate_target
        self.in_flight = 0
        self.max_in_flight = 0
        self._gate = asyncio.Event()
        self._release = asyncio.Event()
        self.handlers: dict[str, Handler] = {
            "ok": _json(200, OK),
            "record": _json(200, OK),
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
            "hangup": self._hang_up,
            "reset": self._reset,
        }

    def names(self) -> list[str]:
        return sorted(self.handlers)

    def release(self) -> None:
        """Let every held request ("slow", "gate") answer now: the stand-in is stopping."""
        self._release.set()
        self._gate.set()

    async def _gate_then_ok(self, request: web.Request) -> web.StreamResponse:
        # Hold every request until gate_target of them are in flight at once:
        # that proves the client really runs that many calls concurrently.
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.in_flight >= self.gate_target:
                self._gate.set()
            await asyncio.wait_for(self._gate.wait(), timeout=GATE_WAIT_SECONDS)
            return web.json_response(OK)
        finally:
            self.in_flight -= 1

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        target = f"/scenario/ok/v1/send/{request.match_info['msgId']}"
        return web.Response(status=302, headers={"Location": target})

    async def _throttle_live_date(self, request: web.Request) -> web.StreamResponse:
        # Only Retry-After is set: the client must fall back to the real Date
        # header that aiohttp adds (or to its own clock).
        when = datetime.now(UTC) + timedelta(seconds=30)
        return web.Response(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout=SLOW_HOLD_SECONDS)
        return web.json_response(OK)

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        body = json.dumps(OK).encode()
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
        )
        try:
            await response.prepare(request)
            for byte in body:
                await response.write(bytes([byte]))
                await asyncio.sleep(DRIP_BYTE_SECONDS)
            await response.write_eof()
        except ConnectionError:
            pass  # The client gave up, which is what this scenario is for.
        return response

    async def _hang_up(self, request: web.Request) -> web.StreamResponse:
        """Read the request, then close the connection (a FIN) without a byte of answer."""
        if request.transport is not None:
            request.transport.close()
        return web.Response()

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        """Read the request, then abort the connection with a TCP RST."""
        abort_with_rst(request.transport)
        return web.Response()
