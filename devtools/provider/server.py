"""The stand-in's HTTP server: the send route with its fault model, the scenario routes, the
admin routes, a listener that really stops listening during outages, and two ways to run it
(a background thread for tests, the foreground until a signal for the CLI)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import os
import random
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from devtools.provider.faults import (
    DEFAULT_ADMIN_TOKEN,
    DRIP_INTERVAL_SECONDS,
    ERROR_RESPONSES,
    MALFORMED_BODIES,
    OK_BODY,
    REJECT_BODY,
    FaultConfig,
    decide,
    merge_windows,
    updated_config,
)
from devtools.provider.recorder import RecordedRequest, Recorder
from devtools.provider.scenarios import Scenarios
from devtools.provider.transport import abort_with_rst

logger = logging.getLogger("devtools.provider")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PHONE_MIN, _PHONE_MAX = 70_000_000_000, 79_999_999_999
_MSG_ID_RE = re.compile(r"-?[0-9]{1,19}")


class ProviderState:
    """Everything the request handlers share: the live config, the RNG, the recorder, the
    scenarios. Lives on the server's event loop."""

    def __init__(self, config: FaultConfig, recorder: Recorder, scenarios: Scenarios) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.recorder = recorder
        self.scenarios = scenarios
        self.in_outage = False
        # Set by Listener, which owns the socket and so is the one that can do outages.
        self.on_outages_changed: Callable[[], None] | None = None

    def set_config(self, config: FaultConfig) -> None:
        """Apply a new config; must run on the server's event loop."""
        old, self.config = self.config, config
        if config.seed != old.seed:
            self.rng = random.Random(config.seed)
        if config.outages != old.outages and self.on_outages_changed is not None:
            self.on_outages_changed()
        logger.info("stand-in config changed: %s", config.active_faults() or "no faults")


STATE_KEY = web.AppKey("provider_state", ProviderState)


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


# --- the send route: the fault model ------------------------------------------------------


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
        abort_with_rst(request.transport)
        # Writing to the aborted transport raises ConnectionError, which aiohttp treats as a
        # client that went away: no error log, no response.
        return web.Response()

    body = await request.read()
    delay = config.latency_seconds(state.rng)
    if delay > 0:
        await asyncio.sleep(delay)

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

    outcome = decide(config, state.rng)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("send %d: %s", msg_id, outcome)

    if outcome == "accepted":
        recorder.record_delivery(msg_id, phone, arrived_at=arrived_at)
        return web.Response(body=OK_BODY, content_type="application/json")
    if outcome == "rejected":
        recorder.count_outcome(outcome)
        return web.Response(body=REJECT_BODY, content_type="application/json")
    if outcome == "reset":
        recorder.count_outcome(outcome)
        abort_with_rst(request.transport)
        return web.Response()
    if outcome == "timeout":
        recorder.count_outcome(outcome)
        await asyncio.sleep(config.hang_seconds)
        return _json_error(504, "upstream timed out")
    if outcome == "error":
        recorder.count_outcome(outcome)
        status, content_type, payload = state.rng.choice(ERROR_RESPONSES)
        return web.Response(status=status, body=payload, content_type=content_type)
    if outcome == "throttled":
        recorder.count_outcome(outcome)
        response = _json_error(429, "too many requests")
        response.headers["Retry-After"] = str(config.retry_after)
        return response
    if outcome == "malformed":
        recorder.count_outcome(outcome)
        content_type, payload = state.rng.choice(MALFORMED_BODIES)
        return web.Response(body=payload, content_type=content_type)
    # drip: delivered, but the answer crawls, to catch clients that bound only per-read time.
    recorder.record_delivery(msg_id, phone, outcome="drip", arrived_at=arrived_at)
    stream = web.StreamResponse(headers={"Content-Type": "application/json"})
    stream.content_length = len(OK_BODY)
    try:
        await stream.prepare(request)
        for i in range(len(OK_BODY)):
            if i:
                await asyncio.sleep(DRIP_INTERVAL_SECONDS)
            await stream.write(OK_BODY[i : i + 1])
    except ConnectionError:
        pass  # The client gave up, which is what this fault is for.
    return stream


# --- the scenario routes --------------------------------------------------------------------


async def _handle_scenario(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    name = request.match_info["scenario"]
    body = await request.read()
    peer = request.transport.get_extra_info("peername") if request.transport else None
    state.recorder.record_scenario_request(
        RecordedRequest(
            scenario=name,
            path=request.path,
            method=request.method,
            authorization=request.headers.get("Authorization"),
            content_type=request.headers.get("Content-Type"),
            body=body,
            peer=tuple(peer[:2]) if peer else ("", 0),
        )
    )
    handler = state.scenarios.handlers.get(name)
    if handler is None:
        known = ", ".join(state.scenarios.names())
        return _json_error(404, f"unknown scenario {name!r}; known: {known}")
    return await handler(request)


# --- the admin routes -----------------------------------------------------------------------


async def _handle_healthz(request: web.Request) -> web.Response:
    """Public and empty of data: for health checks that hold no admin token."""
    return web.json_response({"status": "ok"})


async def _handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].recorder.stats())


async def _handle_accepted(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].recorder.accepted_report())


async def _handle_get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].config.public_dict())


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
    return web.json_response(config.public_dict())


async def _handle_reset(request: web.Request) -> web.Response:
    recorder = request.app[STATE_KEY].recorder
    recorder.reset()
    return web.json_response(recorder.stats())


async def _housekeeping(state: ProviderState) -> None:
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
            logger.info("%s", state.recorder.summary())


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_housekeeping(app[STATE_KEY]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    app[STATE_KEY].recorder.flush()


async def _release_held_requests(app: web.Application) -> None:
    app[STATE_KEY].scenarios.release()


def _admin_guard(admin_token: str) -> Callable[..., Any]:
    """The admin routes need their own bearer token (never the send token): they change
    how the stand-in answers and list the phone numbers it was sent."""
    expected = f"Bearer {admin_token}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.path.startswith("/_admin/"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                response = _json_error(401, "the admin routes need the stand-in's admin token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="stand-in admin"'
                return response
        return await handler(request)

    return guard


def build_app(
    config: FaultConfig,
    recorder: Recorder | None = None,
    scenarios: Scenarios | None = None,
    *,
    admin_token: str = DEFAULT_ADMIN_TOKEN,
) -> web.Application:
    """The aiohttp application. Outages need a listener (StandInServer or run_forever)."""
    if not admin_token:
        raise ValueError("the admin token must not be empty")
    app = web.Application(middlewares=[_admin_guard(admin_token)])
    app[STATE_KEY] = ProviderState(
        config,
        recorder if recorder is not None else Recorder(),
        scenarios if scenarios is not None else Scenarios(),
    )
    app.router.add_post("/v1/send/{msgId}", _handle_send)
    app.router.add_post("/scenario/{scenario}/v1/send/{msgId}", _handle_scenario)
    app.router.add_get("/healthz", _handle_healthz)
    app.router.add_get("/_admin/stats", _handle_stats)
    app.router.add_get("/_admin/accepted", _handle_accepted)
    app.router.add_get("/_admin/config", _handle_get_config)
    app.router.add_post("/_admin/config", _handle_set_config)
    app.router.add_post("/_admin/reset", _handle_reset)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_release_held_requests)
    return app


def base_url(host: str, port: int) -> str:
    """The PROBE_URL of a stand-in listening on host:port."""
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


# --- the listener: outages close the socket for real ----------------------------------------


class Listener:
    """Serves the app on host:port and really stops listening during outages."""

    def __init__(self, app: web.Application, host: str, port: int, shutdown_timeout: float) -> None:
        self.app = app
        self.state = app[STATE_KEY]
        self.host = host
        self.port = port
        # access_log=None: aiohttp's access log line per request would halve throughput.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
        self.server: asyncio.Server | None = None
        self._started_at = 0.0
        self._outage_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.runner.setup()
        await self._listen()
        # With port 0 the kernel picked one; outages must come back on that same port.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        self._started_at = asyncio.get_running_loop().time()
        self.state.on_outages_changed = self._reschedule
        self._reschedule()

    async def _listen(self) -> None:
        http = self.runner.server
        assert http is not None
        recorder = self.state.recorder

        def counting_factory() -> asyncio.BaseProtocol:
            recorder.count_connection()  # called once per accepted TCP connection
            return http()

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            counting_factory, self.host, self.port, reuse_address=True
        )

    def elapsed(self) -> float:
        """Seconds since the listener started (the clock of the outage windows)."""
        return asyncio.get_running_loop().time() - self._started_at

    async def _go_down(self) -> None:
        if self.server is None:
            return
        self.state.in_outage = True
        self.server.close()
        self.server = None
        # Closing the listener leaves accepted connections alive; a provider that is down does
        # not keep answering on them, so drop them too.
        http = self.runner.server
        for handler in http.connections if http is not None else ():
            abort_with_rst(handler.transport)
        logger.info("stand-in outage: refusing connections on port %d", self.port)

    async def _go_up(self) -> None:
        if self.server is not None:
            return
        while True:
            try:
                await self._listen()
                break
            except OSError as exc:
                # Someone else may hold the port for a moment; keep trying rather than die.
                logger.warning("stand-in cannot listen on %d yet: %s", self.port, exc)
                await asyncio.sleep(0.1)
        self.state.in_outage = False
        logger.info("stand-in outage over: listening on port %d", self.port)

    async def _run_outages(self, windows: list[tuple[float, float]]) -> None:
        now = self.elapsed()
        if not any(start <= now < end for start, end in windows):
            await self._go_up()  # A config change may have ended the current window.
        for start, end in windows:
            now = self.elapsed()
            if end <= now:
                continue
            if start > now:
                await asyncio.sleep(start - now)
            await self._go_down()
            await asyncio.sleep(max(0.0, end - self.elapsed()))
            await self._go_up()

    def _reschedule(self) -> None:
        if self._outage_task is not None:
            self._outage_task.cancel()
        windows = merge_windows(self.state.config.outages)
        self._outage_task = asyncio.create_task(self._run_outages(windows))
        # Keep a reference and surface crashes; a silently dead outage task would be a mystery.
        self._outage_task.add_done_callback(self._outage_done)

    @staticmethod
    def _outage_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("stand-in outage scheduler failed", exc_info=task.exception())

    async def stop(self) -> None:
        self.state.on_outages_changed = None
        if self._outage_task is not None:
            self._outage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage_task
        if self.server is not None:
            self.server.close()
            self.server = None
        # Lets in-flight requests finish for up to shutdown_timeout, runs the app's cleanup
        # (which flushes the record file).
        await self.runner.cleanup()


def _cancel_remaining_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


# --- running it -----------------------------------------------------------------------------


class StandInServer:
    """The stand-in in a background thread with its own event loop, for tests.

    ``with StandInServer(FaultConfig(error_rate=0.1)) as server: ... server.base_url``
    """

    def __init__(
        self,
        config: FaultConfig | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        record_path: str | os.PathLike[str] | None = None,
        recorder: Recorder | None = None,
        gate_target: int = 1,
        admin_token: str = DEFAULT_ADMIN_TOKEN,
        shutdown_timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.admin_token = admin_token
        self.recorder = recorder if recorder is not None else Recorder(record_path)
        self.scenarios = Scenarios(gate_target=gate_target)
        self._app = build_app(
            config if config is not None else FaultConfig(),
            self.recorder,
            self.scenarios,
            admin_token=admin_token,
        )
        self._shutdown_timeout = shutdown_timeout
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The PROBE_URL to give a client, e.g. ``http://127.0.0.1:PORT/v1``."""
        return base_url(self.host, self.port)

    @property
    def admin_url(self) -> str:
        return self.base_url.removesuffix("/v1") + "/_admin"

    @property
    def admin_headers(self) -> dict[str, str]:
        """The Authorization header the admin routes want."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def scenario_url(self, name: str) -> str:
        """The PROBE_URL of one scenario (see devtools.provider.scenarios)."""
        return self.base_url.removesuffix("/v1") + f"/scenario/{name}/v1"

    @property
    def config(self) -> FaultConfig:
        return self._app[STATE_KEY].config

    def start(self, timeout: float = 10.0) -> StandInServer:
        """Start serving; returns once the port is listening (raises if it cannot)."""
        if self._thread is not None or self._loop is not None:
            # The app's runner cannot be set up twice; make a new server instead.
            raise RuntimeError("a StandInServer can only be started once")
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="provider-stand-in", daemon=True
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
        listener = Listener(self._app, self.host, self.port, self._shutdown_timeout)
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
            raise RuntimeError("the stand-in's thread did not stop in time")
        self._thread = None

    def begin_outage(self, seconds: float) -> FaultConfig:
        """Refuse connections from now on for ``seconds`` (outages are otherwise given as
        offsets from the server's start, which a test rarely knows)."""
        listener, loop = self._listener, self._loop
        if listener is None or loop is None:
            raise RuntimeError("the stand-in is not running")
        state = self._app[STATE_KEY]

        async def apply() -> FaultConfig:
            window = (listener.elapsed(), float(seconds))
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

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def check_exposure(host: str, admin_token: str) -> None:
    """Refuse to listen beyond loopback with the public default admin token: whoever can
    reach the port could rewrite the stand-in's behaviour and read the numbers it was sent."""
    if host not in LOOPBACK_HOSTS and admin_token == DEFAULT_ADMIN_TOKEN:
        raise ValueError(
            f"listening on {host} needs an admin token of its own "
            "(--admin-token or STAND_IN_ADMIN_TOKEN), not the development default"
        )


def run_forever(
    config: FaultConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    record_path: str | os.PathLike[str] | None = None,
    *,
    admin_token: str = DEFAULT_ADMIN_TOKEN,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 1.0,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, then stop listening and flush; returns.

    ``ready`` is called with the base URL once the port is listening. ValueError when
    ``host`` is not loopback and ``admin_token`` is the development default.
    """
    check_exposure(host, admin_token)
    asyncio.run(
        _serve_until_signalled(
            config, host, port, record_path, admin_token, ready, shutdown_timeout
        )
    )


async def _serve_until_signalled(
    config: FaultConfig,
    host: str,
    port: int,
    record_path: str | os.PathLike[str] | None,
    admin_token: str,
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
    app = build_app(config, recorder, admin_token=admin_token)
    listener = Listener(app, host, port, shutdown_timeout)
    try:
        await listener.start()
        url = base_url(host, listener.port)
        if ready is not None:
            ready(url)
        else:
            logger.info("stand-in listening: PROBE_URL=%s", url)
        await stop.wait()
        logger.info("stand-in stopping")
    finally:
        await listener.stop()
        recorder.close()
    logger.info("%s", recorder.summary())
