"""Shared fixtures: the send API stand-in on loopback, clients, a dispatcher to drive."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from devtools.provider import FaultConfig, StandInServer
from mailing.engine.clock import Clock
from mailing.engine.dispatcher import Dispatcher, DispatcherConfig, TickHook
from mailing.engine.provider import HttpSendClient
from mailing.engine.queue import RetryPolicy
from mailing.models import Client

TOKEN = "test-token"


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    """Poll ``condition`` until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"condition not met within {timeout} s: {condition.__doc__ or condition}"
            )
        time.sleep(interval)


def free_port() -> int:
    """A loopback port free at the time of asking (the kernel's pick), for a child process
    that needs its port on the command line. Bind with port 0 yourself where you can."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RefusedPort:
    """A loopback port that refuses connections: bound (so nobody else takes it while the
    test runs) but not listening. ``with RefusedPort() as port: ...``"""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> int:
        return self.port

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ChildProcess(subprocess.Popen):
    """A child process whose stdout and stderr go to temporary files, not pipes: a pipe
    nobody reads fills up and blocks the child, and a blocking read has no deadline.
    ``output()`` reads what it wrote so far; ``stop()`` signals it and waits, bounded."""

    # Every child started during the current test: the autouse fixture below kills what a
    # failed test left running, so a leaked dispatcher never sends the next test's mailings.
    started: list[ChildProcess] = []

    def __init__(self, args: list[str], **kwargs: object) -> None:
        # Closed by close() / __exit__, which outlive this constructor.
        self._stdout_file = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._stderr_file = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        super().__init__(
            args, stdout=self._stdout_file, stderr=self._stderr_file, text=True, **kwargs
        )
        ChildProcess.started.append(self)

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) as written so far."""
        return _read_all(self._stdout_file), _read_all(self._stderr_file)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> tuple[str, str]:
        """Send ``sig`` (to the whole group when the child leads one), wait at most
        ``timeout`` seconds, then kill; returns (stdout, stderr). Raises AssertionError
        when the child had to be killed."""
        if self.poll() is None:
            self._signal(sig)
        try:
            self.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.wait(timeout=10)
            _out, err = self.output()
            raise AssertionError(f"process did not stop on signal {sig}:\n{err[-3000:]}") from None
        return self.output()

    def _signal(self, sig: int) -> None:
        try:
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Kill the child if it still runs and drop its output files."""
        if self.poll() is None:
            self._signal(signal.SIGKILL)
            self.wait(timeout=10)
        self._stdout_file.close()
        self._stderr_file.close()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(autouse=True)
def no_child_outlives_its_test() -> Iterator[None]:
    """Kill (with its process group) every child a test started and left running."""
    ChildProcess.started.clear()
    yield
    leftovers, ChildProcess.started[:] = list(ChildProcess.started), []
    for child in leftovers:
        if child.returncode is None and child.poll() is None:
            child._signal(signal.SIGKILL)
            child.wait(timeout=10)


def _read_all(file: object) -> str:
    file.flush()  # type: ignore[attr-defined]
    file.seek(0)  # type: ignore[attr-defined]
    return file.read()  # type: ignore[attr-defined]


def needs_postgres() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres", "postgresql")),
        reason="needs DATABASE_URL pointing at PostgreSQL",
    )


def needs_redis() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")


@pytest.fixture
def provider() -> Iterator[StandInServer]:
    """The local stand-in of the send API, on a free loopback port, behaving perfectly."""
    server = StandInServer(FaultConfig(token=TOKEN, seed=1), host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider_settings(settings, provider):
    settings.PROBE_URL = provider.base_url
    settings.PROBE_TOKEN = TOKEN
    return settings


def make_clients(
    count: int,
    *,
    operator_code: str = "916",
    tag: str = "",
    timezone_name: str = "Europe/Moscow",
    first: int = 0,
) -> list[Client]:
    rows = [
        Client(
            phone=f"7{operator_code}{number:07d}",
            operator_code=operator_code,
            tag=tag,
            timezone=timezone_name,
        )
        for number in range(first, first + count)
    ]
    Client.objects.bulk_create(rows, batch_size=2000)
    return rows


FAST_CONFIG = DispatcherConfig(
    concurrency=50,
    lease=timedelta(seconds=30),
    retry=RetryPolicy(base=0.05, cap=0.2),
    auth_retry_seconds=0.3,
    circuit_threshold=1000,
    circuit_reset_seconds=0.3,
    total_timeout=2.0,
    tick_interval=0.1,
    idle_poll=0.05,
)


class DispatcherThread:
    """A real dispatcher (real HTTP client, real database) running beside the test."""

    def __init__(self, base_url: str, config: DispatcherConfig, **kwargs) -> None:
        self.config = config
        self.dispatcher = Dispatcher(
            config,
            client_factory=lambda cfg: HttpSendClient(
                base_url,
                TOKEN,
                connect_timeout=1.0,
                total_timeout=cfg.total_timeout,
                max_connections=cfg.concurrency,
            ),
            **kwargs,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.dispatcher.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> DispatcherThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.dispatcher.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "dispatcher did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def dispatcher_factory(provider) -> Iterator[Callable[..., DispatcherThread]]:
    started: list[DispatcherThread] = []

    def start(
        config: DispatcherConfig = FAST_CONFIG,
        base_url: str | None = None,
        clock: Clock | None = None,
        on_tick: TickHook | None = None,
        **changes,
    ):
        config = dataclasses.replace(config, **changes) if changes else config
        extra: dict[str, object] = {"on_tick": on_tick}
        if clock is not None:
            extra["clock"] = clock
        thread = DispatcherThread(base_url or provider.base_url, config, **extra).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        if thread.thread.is_alive():
            thread.stop()


def database_url_of_test_db() -> str:
    """A DATABASE_URL for subprocesses (workers) that points at this test database."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child process on the test database. The send API and the
    identity provider point at a port nobody listens on unless the test says otherwise, so
    no child reaches a `make run` that is up on the default ports."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DATABASE_URL=database_url_of_test_db(),
        PYTHONUNBUFFERED="1",
        PROBE_URL=f"{_NOWHERE.url}/v1",
        OIDC_ISSUER_URL=_NOWHERE.url,
    )
    env.update(extra)
    return env


def now_plus(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


# One refusing port for the whole run: the default address of everything a test did not
# start itself (the defaults, 8081 and 8090, may belong to a `make run` that is up).
_NOWHERE = RefusedPort()


@pytest.fixture(autouse=True)
def _nothing_at_the_default_ports(settings) -> None:
    """The send API and the identity provider of the settings point at a refusing port
    unless a test starts its own (the provider_settings and sso fixtures)."""
    settings.PROBE_URL = f"{_NOWHERE.url}/v1"
    oidc = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]
    settings.SOCIALACCOUNT_PROVIDERS = {
        **settings.SOCIALACCOUNT_PROVIDERS,
        "openid_connect": {
            **oidc,
            "APPS": [
                {**app, "settings": {**app.get("settings", {}), "server_url": _NOWHERE.url}}
                for app in oidc["APPS"]
            ],
        },
    }


@pytest.fixture(autouse=True)
def _isolated_cache():
    """Counters in the cache (the sign-in rate limit) do not leak between tests."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
