"""The local stand-in of the external send API (devtools.provider): protocol checks, every
fault, the scenarios, admin, CLI.

Plain pytest: no database. Servers run in a background thread on a free port; everything
time-dependent waits on a condition with a deadline instead of sleeping and hoping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.provider import FaultConfig, StandInServer
from devtools.provider.cli import config_from_options
from tests.conftest import ChildProcess, wait_for

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-token"
PHONE = 79161234567
REPO_ROOT = Path(__file__).resolve().parent.parent
OK = {"code": 0, "message": "OK"}


def send(
    server: StandInServer,
    msg_id: int,
    *,
    token: str | None = TOKEN,
    body: Any = None,
    path_id: Any = None,
    timeout: float | tuple[float, float] = 5.0,
    session: requests.Session | None = None,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if body is None:
        body = {"id": msg_id, "phone": PHONE, "text": "hello"}
    url = f"{server.base_url}/send/{msg_id if path_id is None else path_id}"
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes | str) else {"json": body}
    return (session or requests).post(url, headers=headers, timeout=timeout, **kwargs)


def raw_send_request(msg_id: int) -> bytes:
    """A valid send request as raw HTTP/1.1 bytes, for tests that watch the socket itself."""
    body = json.dumps({"id": msg_id, "phone": PHONE, "text": "hi"}).encode()
    head = (
        f"POST /v1/send/{msg_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def admin(
    server: StandInServer, name: str, payload: Any = None, *, authorised: bool = True
) -> requests.Response:
    url = f"{server.admin_url}/{name}"
    headers = server.admin_headers if authorised else {}
    if payload is None and name in {"stats", "accepted", "config"}:
        return requests.get(url, headers=headers, timeout=5)
    return requests.post(url, json=payload, headers=headers, timeout=5)


@pytest.fixture
def make_server() -> Iterator[Callable[..., StandInServer]]:
    servers: list[StandInServer] = []

    def make(record_path: Path | None = None, **fields: Any) -> StandInServer:
        fields.setdefault("token", TOKEN)
        server = StandInServer(FaultConfig(**fields), record_path=record_path)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., StandInServer]) -> StandInServer:
    return make_server()


def test_accepts_a_valid_request_and_records_it(server: StandInServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    response = send(server, 42)

    assert response.status_code == 200
    assert response.json() == OK
    assert server.recorder.count_of(42) == 1
    stats = admin(server, "stats").json()
    assert stats["requests"] == 1
    assert stats["accepted"] == 1
    assert stats["unique_accepted"] == 1
    assert stats["duplicates"] == {}
    assert stats["by_outcome"]["accepted"] == 1
    accepted = admin(server, "accepted").json()
    assert accepted["ids"] == [42]
    assert abs(accepted["last_accepted_at"]["42"] - time.time()) < 60


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"bearer {TOKEN}"},
        {"Authorization": f"Token {TOKEN}"},
    ],
    ids=["missing", "wrong-token", "lowercase-scheme", "other-scheme"],
)
def test_unauthorized(server: StandInServer, headers: dict[str, str]) -> None:
    response = requests.post(
        f"{server.base_url}/send/1",
        json={"id": 1, "phone": PHONE, "text": "hi"},
        headers=headers,
        timeout=5,
    )

    assert response.status_code == 401
    assert response.json()["code"] == 401
    assert response.json()["message"]
    assert server.recorder.accepted == 0
    assert server.recorder.by_outcome["unauthorized"] == 1


@pytest.mark.parametrize(
    ("path_id", "body"),
    [
        (8, {"id": 7, "phone": PHONE, "text": "hi"}),
        ("abc", {"id": 7, "phone": PHONE, "text": "hi"}),
        (7, {"id": "7", "phone": PHONE, "text": "hi"}),
        (7, {"id": 7, "phone": 89161234567, "text": "hi"}),
        (7, {"id": 7, "phone": 7916123456, "text": "hi"}),
        (7, {"id": 7, "phone": str(PHONE), "text": "hi"}),
        (7, {"id": 7, "phone": PHONE, "text": ""}),
        (7, {"id": 7, "phone": PHONE}),
        (7, b"this is not json"),
        (7, b"[1, 2, 3]"),
    ],
    ids=[
        "id-differs-from-path",
        "path-not-integer",
        "id-not-integer",
        "phone-not-starting-with-7",
        "phone-10-digits",
        "phone-as-string",
        "empty-text",
        "missing-text",
        "not-json",
        "not-an-object",
    ],
)
def test_bad_request(server: StandInServer, path_id: Any, body: Any) -> None:
    response = send(server, 7, body=body, path_id=path_id)

    assert response.status_code == 400
    assert response.json()["code"] == 400
    assert response.json()["message"]
    assert server.recorder.accepted == 0
    assert server.recorder.by_outcome["bad_request"] == 1


def test_error_rate_answers_server_errors(make_server: Callable[..., StandInServer]) -> None:
    server = make_server(error_rate=1.0, seed=1)
    statuses = {send(server, i).status_code for i in range(30)}

    assert statuses <= {500, 502, 503}
    assert len(statuses) > 1, "the three error kinds should all show up"
    assert server.recorder.accepted == 0
    assert server.recorder.by_outcome["error"] == 30


def test_throttle_answers_429_with_retry_after(
    make_server: Callable[..., StandInServer],
) -> None:
    server = make_server(throttle_rate=1.0, retry_after=3)
    response = send(server, 1)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert server.recorder.accepted == 0


def test_malformed_bodies_are_not_a_valid_result(
    make_server: Callable[..., StandInServer],
) -> None:
    server = make_server(malformed_rate=1.0, seed=3)
    bodies = set()
    for i in range(40):
        response = send(server, i)
        assert response.status_code == 200
        bodies.add(response.content)
        try:
            parsed = json.loads(response.content)
        except ValueError:
            continue
        assert not (isinstance(parsed, dict) and "code" in parsed), parsed

    assert len(bodies) == 4, "text, truncated JSON, JSON without code and HTML"
    assert server.recorder.accepted == 0


def test_reject_answers_code_1(make_server: Callable[..., StandInServer]) -> None:
    server = make_server(reject_rate=1.0)
    response = send(server, 1)

    assert response.status_code == 200
    assert response.json()["code"] == 1
    assert server.recorder.accepted == 0
    assert server.recorder.by_outcome["rejected"] == 1


def test_reset_drops_the_connection(make_server: Callable[..., StandInServer]) -> None:
    server = make_server(reset_rate=1.0)

    with pytest.raises(requests.ConnectionError):
        send(server, 1)
    assert server.recorder.by_outcome["reset"] == 1
    assert server.recorder.accepted == 0


def test_timeout_hangs_past_the_client_read_timeout(
    make_server: Callable[..., StandInServer],
) -> None:
    hang = 10.0
    server = make_server(timeout_rate=1.0, hang_seconds=hang)
    started = time.monotonic()

    with pytest.raises(requests.ReadTimeout):
        send(server, 1, timeout=(2.0, 0.5))
    # The client gave up on its read timeout, long before the stand-in would have answered.
    assert time.monotonic() - started < hang
    assert server.recorder.by_outcome["timeout"] == 1
    assert server.recorder.accepted == 0


def test_drip_sends_the_body_one_byte_at_a_time(
    make_server: Callable[..., StandInServer],
) -> None:
    server = make_server(drip_rate=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(raw_send_request(5))
        received = b""

        def first_body_byte() -> bool:
            """the headers and the first body byte arrive"""
            nonlocal received
            sock.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                received += sock.recv(4096)
            _, sep, rest = received.partition(b"\r\n\r\n")
            return bool(sep and rest)

        wait_for(first_body_byte, timeout=5)
        head, _, content = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))

        # For the next half second the body must still be incomplete.
        window_end = time.monotonic() + 0.5
        while (remaining := window_end - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            content += chunk
        assert 1 <= len(content) < length

    # Delivered: the 200 OK is on its way, just slowly.
    assert server.recorder.count_of(5) == 1
    assert server.recorder.by_outcome["drip"] == 1


def _connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_outage_refuses_connections_then_recovers(
    make_server: Callable[..., StandInServer],
) -> None:
    server = make_server(outages=[(0.2, 1.0)])
    port = server.port

    def refused() -> bool:
        """the port refuses connections"""
        return _connection_refused(port)

    wait_for(refused, timeout=10)
    with pytest.raises(requests.ConnectionError):
        send(server, 1, timeout=(1.0, 1.0))

    def answers() -> bool:
        """a send succeeds again on the same port"""
        try:
            return send(server, 2, timeout=(1.0, 2.0)).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(answers, timeout=10)
    assert server.port == port
    assert server.recorder.count_of(2) == 1
    assert server.recorder.count_of(1) == 0


def test_outage_drops_open_keep_alive_connections(
    make_server: Callable[..., StandInServer],
) -> None:
    server = make_server(outages=[(0.5, 1.0)])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(raw_send_request(1))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # Keep-alive: the socket stays open.

        def refused() -> bool:
            """the port refuses connections"""
            return _connection_refused(server.port)

        wait_for(refused, timeout=10)
        # A real outage does not keep answering on old connections: this one is reset too.
        sock.settimeout(2)
        with pytest.raises(ConnectionResetError):
            sock.recv(4096)


def test_duplicates_are_counted(server: StandInServer) -> None:
    for msg_id in (10, 11, 10, 10):
        assert send(server, msg_id).json() == OK

    stats = admin(server, "stats").json()
    assert stats["accepted"] == 4
    assert stats["unique_accepted"] == 2
    assert stats["duplicates"] == {"10": 3}
    assert admin(server, "accepted").json()["ids"] == [10, 11]
    first = server.recorder.first_accepted_at()[10]
    last = server.recorder.last_accepted_at()[10]
    assert first <= last


def test_admin_reset_clears_the_recorder(server: StandInServer) -> None:
    send(server, 1)
    assert admin(server, "reset").status_code == 200

    stats = admin(server, "stats").json()
    assert stats["requests"] == 0
    assert stats["accepted"] == 0
    assert admin(server, "accepted").json()["ids"] == []


def test_config_can_change_at_runtime(server: StandInServer) -> None:
    response = admin(server, "config", {"error_rate": 1, "latency_ms": 1})
    assert response.status_code == 200
    assert response.json()["error_rate"] == 1.0
    assert send(server, 1).status_code in {500, 502, 503}

    admin(server, "config", {"error_rate": 0, "token": "rotated"})
    assert send(server, 2).status_code == 401
    assert send(server, 3, token="rotated").json() == OK

    server.update_config(reject_rate=1.0)
    assert send(server, 4, token="rotated").json()["code"] == 1
    assert admin(server, "config").json()["reject_rate"] == 1.0


@pytest.mark.parametrize(
    ("name", "payload"),
    [("stats", None), ("accepted", None), ("config", None), ("config", {}), ("reset", {})],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Bearer {TOKEN}"])
def test_admin_routes_need_the_admin_token(
    server: StandInServer, name: str, payload: Any, header: str | None
) -> None:
    send(server, 1)
    url = f"{server.admin_url}/{name}"
    headers = {"Authorization": header} if header else {}
    if payload is None:
        response = requests.get(url, headers=headers, timeout=5)
    else:
        response = requests.post(url, json=payload, headers=headers, timeout=5)
    # Not even the send token opens them; nothing is revealed or changed.
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "79161234567" not in response.text
    assert server.recorder.accepted == 1


def test_healthz_is_public_and_says_nothing_else(server: StandInServer) -> None:
    send(server, 1)
    response = requests.get(server.base_url.removesuffix("/v1") + "/healthz", timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_the_config_never_shows_the_token(server: StandInServer) -> None:
    shown = admin(server, "config").json()
    changed = admin(server, "config", {"token": "rotated-secret"}).json()
    assert "token" not in shown and "token" not in changed
    assert TOKEN not in json.dumps(shown) and "rotated-secret" not in json.dumps(changed)
    assert send(server, 1, token="rotated-secret").json() == OK


@pytest.mark.parametrize(
    "command",
    [["manage.py", "fake_provider"], ["-m", "devtools.provider"]],
    ids=["manage.py", "python-m"],
)
def test_listening_beyond_loopback_needs_an_admin_token_of_its_own(command: list[str]) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env.pop("STAND_IN_ADMIN_TOKEN", None)
    result = subprocess.run(
        [sys.executable, *command, "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "admin token" in result.stderr


@pytest.mark.parametrize(
    "payload",
    [
        {"bogus": 1},
        {"error_rate": 2},
        {"error_rate": True},
        {"latency_ms": -1},
        {"token": ""},
        {"outages": [[1]]},
        [1, 2],
    ],
    ids=[
        "unknown-field",
        "rate-above-1",
        "rate-bool",
        "negative-latency",
        "empty-token",
        "bad-outage",
        "not-an-object",
    ],
)
def test_bad_config_change_is_refused(server: StandInServer, payload: Any) -> None:
    response = admin(server, "config", payload)

    assert response.status_code == 400
    assert response.json()["message"]
    assert server.config == FaultConfig(token=TOKEN)
    if isinstance(payload, dict):
        with pytest.raises(ValueError):
            server.update_config(**payload)
        assert server.config == FaultConfig(token=TOKEN)


def test_record_file_gets_the_accepted_ids(
    make_server: Callable[..., StandInServer], tmp_path: Path
) -> None:
    record = tmp_path / "accepted.jsonl"
    server = make_server(record_path=record)
    send(server, 100)
    send(server, 101)
    send(server, 7, body={"id": 8, "phone": PHONE, "text": "hi"})  # 400: not recorded

    def recorded_lines() -> list[dict[str, Any]]:
        """both deliveries are flushed to the record file while the server runs"""
        lines = record.read_text().splitlines() if record.exists() else []
        return [json.loads(line) for line in lines] if len(lines) >= 2 else []

    lines = wait_for(recorded_lines, timeout=5)
    assert [line["id"] for line in lines] == [100, 101]
    assert all(line["phone"] == PHONE for line in lines)
    assert all(abs(line["at"] - time.time()) < 60 for line in lines)
    assert all(line["arrived_at"] <= line["at"] for line in lines)


def test_arrival_is_stamped_before_the_latency(
    make_server: Callable[..., StandInServer],
) -> None:
    server = make_server(latency_ms=300)
    sent_at = time.time()
    send(server, 9)
    answered_at = time.time()
    arrived = server.recorder.last_arrived_at()[9]
    accepted = server.recorder.last_accepted_at()[9]
    assert server.recorder.first_arrived_at() == {9: arrived}
    # The request arrived right after it was sent; the acceptance waited out the latency.
    assert sent_at <= arrived <= accepted <= answered_at
    assert accepted - arrived >= 0.29  # asyncio may wake a hair early on its clock
    assert admin(server, "accepted").json()["last_arrived_at"] == {"9": arrived}


def test_config_from_cli_options() -> None:
    config = config_from_options(
        {
            "token": "t",
            "error_rate": 0.5,
            "outage": ["1:2", "5.5:0.5"],
            "latency_ms": None,
            "verbosity": 1,
        }
    )

    assert config.error_rate == 0.5
    assert config.outages == [(1.0, 2.0), (5.5, 0.5)]
    assert config.latency_ms == 0.0
    assert config.active_faults() == {"error_rate": 0.5, "outages": [[1.0, 2.0], [5.5, 0.5]]}
    for bad in ({"error_rate": 1.5}, {"reset_rate": -0.1}, {"outage": ["5"]}, {"outage": ["a:1"]}):
        with pytest.raises(ValueError):
            config_from_options(bad)


@pytest.mark.parametrize(
    "command",
    [["manage.py", "fake_provider"], ["-m", "devtools.provider"]],
    ids=["manage.py", "python-m"],
)
def test_cli_serves_until_sigterm(command: list[str]) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env["STAND_IN_TOKEN"] = "cli-token"
    # Port 0: the kernel picks a free one and the banner names it (no race for a port).
    with ChildProcess(
        [sys.executable, *command, "--port", "0", "--latency-ms", "1"], cwd=REPO_ROOT, env=env
    ) as proc:

        def banner_url() -> str | None:
            """the banner names the address it listens on"""
            stdout, stderr = proc.output()
            if proc.poll() is not None:
                pytest.fail(f"exited early with {proc.returncode}: {stderr}")
            found = re.search(r"PROBE_URL=(http://127\.0\.0\.1:\d+/v1)", stdout)
            return found.group(1) if found else None

        base = wait_for(banner_url, timeout=30, interval=0.1)
        assert not base.endswith(":0/v1")
        response = requests.post(
            f"{base}/send/1",
            json={"id": 1, "phone": PHONE, "text": "hi"},
            # The token defaults to STAND_IN_TOKEN (via settings for manage.py).
            headers={"Authorization": "Bearer cli-token"},
            timeout=5,
        )
        assert response.status_code == 200
        assert response.json() == OK
        stdout, stderr = proc.stop(signal.SIGTERM, timeout=10)

    assert proc.returncode == 0, stderr
    assert "latency_ms=1.0" in stdout


def test_manage_py_rejects_a_rate_outside_0_1() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "fake_provider", "--port", "0", "--error-rate", "1.5"],
        cwd=REPO_ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert "CommandError" in result.stderr
    assert "error_rate" in result.stderr


def test_the_stand_in_needs_no_django_and_the_product_holds_no_server() -> None:
    check = "import sys, devtools.provider; sys.exit('django' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # The product's packages serve no development HTTP server (aiohttp is its client only).
    for package in ("mailing", "dashboard", "project"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            assert "aiohttp import web" not in path.read_text(), path


def test_a_scenario_route_answers_its_scenario_and_keeps_the_request(server: StandInServer):
    url = f"{server.scenario_url('s503')}/send/5"
    response = requests.post(url, json={"id": 5}, headers={"Authorization": "Bearer x"}, timeout=5)
    assert (response.status_code, response.text) == (503, "unavailable")
    [request] = server.recorder.recorded("s503")
    assert request.path == "/scenario/s503/v1/send/5" and request.authorization == "Bearer x"
    # Scenarios are outside the fault model: nothing counted or delivered there.
    assert server.recorder.stats()["requests"] == 0 and server.recorder.accepted == 0
    unknown = requests.post(f"{server.scenario_url('nope')}/send/5", timeout=5)
    assert unknown.status_code == 404 and "s503" in unknown.json()["message"]
