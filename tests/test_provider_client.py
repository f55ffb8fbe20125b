"""HttpSendClient against real HTTP servers on loopback (see tests/provider_servers.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from mailing.engine.provider import (
    MAX_DETAIL_CHARS,
    MAX_RETRY_AFTER,
    HttpSendClient,
    Outcome,
    OutgoingMessage,
    RecordingSendClient,
    SendClient,
    SendResult,
    parse_retry_after,
)
from tests.provider_servers import ProviderServer, refused_port

TOKEN = "secret-token"
MSG = OutgoingMessage(message_id=42, phone="79161234567", text="Hello", mailing_id=7, client_id=9)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


def send_one(base_url: str, message: OutgoingMessage = MSG, **kwargs: float) -> SendResult:
    async def go() -> SendResult:
        client = HttpSendClient(base_url, TOKEN, **kwargs)
        try:
            return await client.send(message)
        finally:
            await client.close()

    return asyncio.run(go())


def timed_send(base_url: str, **kwargs: float) -> tuple[SendResult, float]:
    started = time.monotonic()
    result = send_one(base_url, **kwargs)
    return result, time.monotonic() - started


# --- outcomes by status and body ---------------------------------------------------


def test_accepted(server: ProviderServer) -> None:
    result = send_one(server.base("ok"))
    assert result == SendResult(42, Outcome.ACCEPTED, "code 0: OK", 200, None, result.latency)
    assert 0 < result.latency < 5


def test_accepted_without_message_field(server: ProviderServer) -> None:
    result = send_one(server.base("code0nomsg"))
    assert (result.outcome, result.detail) == (Outcome.ACCEPTED, "code 0")


def test_400_is_rejected_with_the_reason(server: ProviderServer) -> None:
    result = send_one(server.base("bad400"))
    assert result.outcome is Outcome.REJECTED
    assert result.status_code == 400
    assert result.detail == "HTTP 400: bad phone"


def test_nonzero_code_is_rejected_with_the_provider_message(server: ProviderServer) -> None:
    result = send_one(server.base("code3"))
    assert (result.outcome, result.status_code) == (Outcome.REJECTED, 200)
    assert result.detail == "code 3: rejected"


@pytest.mark.parametrize("scenario", ["bad400long", "code3long"])
def test_detail_is_clipped_for_last_error(server: ProviderServer, scenario: str) -> None:
    result = send_one(server.base(scenario))
    assert result.outcome is Outcome.REJECTED
    assert 100 < len(result.detail) <= MAX_DETAIL_CHARS


@pytest.mark.parametrize(("scenario", "status"), [("s500", 500), ("s502", 502), ("s503", 503)])
def test_5xx_is_retry(server: ProviderServer, scenario: str, status: int) -> None:
    result = send_one(server.base(scenario))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, status)
    assert result.detail.startswith(f"HTTP {status}")


@pytest.mark.parametrize(("scenario", "status"), [("u401", 401), ("u403", 403)])
def test_401_403_are_unauthorized(server: ProviderServer, scenario: str, status: int) -> None:
    result = send_one(server.base(scenario))
    assert (result.outcome, result.status_code) == (Outcome.UNAUTHORIZED, status)


def test_429_with_delay_seconds(server: ProviderServer) -> None:
    result = send_one(server.base("throttle7"))
    assert (result.outcome, result.status_code) == (Outcome.THROTTLED, 429)
    assert result.retry_after == 7.0


def test_429_with_http_date_is_measured_against_the_servers_date(server: ProviderServer) -> None:
    # Server's Date is 2026-03-01 (not now) and Retry-After 30 s later: a client
    # comparing with its own clock would get 0, not 30.
    result = send_one(server.base("throttle_date"))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after == 30.0


def test_429_with_http_date_and_live_clock(server: ProviderServer) -> None:
    result = send_one(server.base("throttle_date_live"))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after is not None
    # HTTP dates have one-second resolution on both headers.
    assert 28.0 <= result.retry_after <= 31.0


@pytest.mark.parametrize("scenario", ["throttle_none", "throttle_garbage"])
def test_429_without_usable_retry_after(server: ProviderServer, scenario: str) -> None:
    result = send_one(server.base(scenario))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after is None


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("nonjson", "not JSON"),
        ("list", "JSON list, not an object"),
        ("nocode", "missing 'code'"),
        ("codestr", "'code' is not an integer: '0'"),
        ("codetrue", "'code' is not an integer: True"),
        ("codefloat", "'code' is not an integer: 0.0"),
        ("empty", "not JSON"),
        ("badutf8", "not UTF-8"),
        ("deep", "not JSON"),
        ("huge", "larger than 65536 bytes"),
    ],
)
def test_malformed_200_is_retry(server: ProviderServer, scenario: str, reason: str) -> None:
    result = send_one(server.base(scenario))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 200)
    assert result.detail.startswith("malformed body: ")
    assert reason in result.detail
    assert len(result.detail) <= MAX_DETAIL_CHARS


def test_unexpected_status_is_retry(server: ProviderServer) -> None:
    result = send_one(server.base("nf404"))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 404)
    assert result.detail.startswith("unexpected HTTP 404")


def test_redirect_is_not_followed(server: ProviderServer) -> None:
    message = OutgoingMessage(4302, "79161234567", "Hello", 7, 9)
    result = send_one(server.base("redirect"), message)
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 302)
    # Following it would have carried the token to wherever Location points.
    assert [r for r in server.recorded("ok") if r.path.endswith("/4302")] == []


# --- transport failures -------------------------------------------------------------


def test_server_hangs_up_without_answer(server: ProviderServer) -> None:
    result = send_one(f"http://127.0.0.1:{server.raw_close_port}")
    assert result.outcome is Outcome.RETRY
    assert result.status_code is None
    assert "disconnected" in result.detail.lower()


def test_connection_reset(server: ProviderServer) -> None:
    result = send_one(f"http://127.0.0.1:{server.raw_reset_port}")
    assert result.outcome is Outcome.RETRY
    assert result.status_code is None
    assert any(word in result.detail.lower() for word in ("reset", "disconnected"))


def test_connection_refused() -> None:
    sock, port = refused_port()
    try:
        result, elapsed = timed_send(f"http://127.0.0.1:{port}")
    finally:
        sock.close()
    assert result.outcome is Outcome.RETRY
    assert result.status_code is None
    assert "ClientConnectorError" in result.detail
    assert elapsed < 2.0  # refusal is immediate, no timeout involved


def test_slow_server_times_out(server: ProviderServer) -> None:
    result, elapsed = timed_send(server.base("slow"), total_timeout=0.5)
    assert result.outcome is Outcome.RETRY
    assert result.detail == "timeout after 0.5s"
    assert 0.4 <= elapsed < 2.0


def test_dripping_body_is_bounded_by_total_timeout(server: ProviderServer) -> None:
    # Each byte arrives well within any per-read timeout; only a bound on the
    # whole call stops this. The full body would take ~8.4 s.
    result, elapsed = timed_send(server.base("drip"), total_timeout=1.0)
    assert result.outcome is Outcome.RETRY
    assert result.status_code == 200  # headers had arrived
    assert result.detail == "timeout after 1.0s"
    assert 0.9 <= elapsed < 2.0
    assert 0.9 <= result.latency < 2.0


# --- the request on the wire --------------------------------------------------------


def test_request_carries_token_path_and_integer_json(server: ProviderServer) -> None:
    message = OutgoingMessage(987654321012, "79161234567", "Привет, мир", 7, None)
    result = send_one(server.base("record") + "/", message)  # trailing slash tolerated
    assert result.outcome is Outcome.ACCEPTED
    [request] = server.recorded("record")
    assert request.method == "POST"
    assert request.path == "/record/send/987654321012"
    assert request.authorization == f"Bearer {TOKEN}"
    assert request.content_type is not None
    assert request.content_type.startswith("application/json")
    body = json.loads(request.body)
    assert body == {"id": 987654321012, "phone": 79161234567, "text": "Привет, мир"}
    assert type(body["id"]) is int
    assert type(body["phone"]) is int


# The last one is full-width digits: str.isdigit() accepts them, the provider would not.
@pytest.mark.parametrize("phone", ["", "7916abc4567", "+79161234567", "\uff17\uff19\uff11\uff16"])
def test_invalid_phone_is_rejected_without_a_call(server: ProviderServer, phone: str) -> None:
    before = len(server.recorded())
    result = send_one(server.base("ok"), OutgoingMessage(5, phone, "x", 7, 9))
    assert result.outcome is Outcome.REJECTED
    assert result.status_code is None
    assert len(server.recorded()) == before


# --- connection pooling -------------------------------------------------------------


def test_sequential_sends_reuse_one_connection() -> None:
    async def go(base: str) -> list[SendResult]:
        async with HttpSendClient(base, TOKEN) as client:
            return [await client.send(MSG), await client.send(MSG)]

    with ProviderServer() as fresh:
        results = asyncio.run(go(fresh.base("ok")))
        assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
        assert len(fresh.recorded("ok")) == 2
        assert fresh.connections == 1
        assert len({r.peer for r in fresh.recorded("ok")}) == 1


def test_concurrent_sends_stay_within_the_pool() -> None:
    pool = 10

    async def go(base: str) -> list[SendResult]:
        async with HttpSendClient(base, TOKEN, max_connections=pool) as client:
            messages = [OutgoingMessage(i, "79161234567", "hi", 7, i) for i in range(1, 201)]
            return await asyncio.gather(*(client.send(m) for m in messages))

    with ProviderServer(gate_target=pool) as fresh:
        results = asyncio.run(go(fresh.base("gate")))
        assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 200
        assert sorted(r.message_id for r in results) == list(range(1, 201))
        # The pool was really used in full (the server held requests until ten
        # were in flight together) and never exceeded.
        assert fresh.max_in_flight == pool
        assert fresh.connections <= pool
        assert len({r.peer for r in fresh.recorded("gate")}) <= pool


# --- lifecycle ----------------------------------------------------------------------


def test_client_is_built_outside_a_loop_and_closes_without_a_session() -> None:
    client = HttpSendClient("http://127.0.0.1:9", TOKEN)
    asyncio.run(client.close())


def test_send_after_close_is_retry_not_an_exception(server: ProviderServer) -> None:
    async def go() -> SendResult:
        client = HttpSendClient(server.base("ok"), TOKEN)
        await client.send(MSG)
        await client.close()
        return await client.send(MSG)

    result = asyncio.run(go())
    assert (result.outcome, result.detail) == (Outcome.RETRY, "client closed")


def test_client_survives_a_new_event_loop(server: ProviderServer) -> None:
    client = HttpSendClient(server.base("ok"), TOKEN)
    first = asyncio.run(client.send(MSG))
    second = asyncio.run(client.send(MSG))
    asyncio.run(client.close())
    assert (first.outcome, second.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "probe.fbrq.cloud/v1"},
        {"total_timeout": 0},
        {"connect_timeout": -1},
        {"max_connections": 0},
    ],
)
def test_bad_configuration_fails_fast(kwargs: dict) -> None:
    arguments = {"base_url": "http://127.0.0.1:9", "token": TOKEN, **kwargs}
    with pytest.raises(ValueError):
        HttpSendClient(**arguments)


# --- logging ------------------------------------------------------------------------


def test_one_structured_log_line_per_call(
    server: ProviderServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailing.provider")
    send_one(server.base("s503"))
    records = [r for r in caplog.records if r.name == "mailing.provider"]
    assert len(records) == 1
    [record] = records
    assert record.levelno == logging.INFO
    assert record.message_id == 42
    assert record.mailing_id == 7
    assert record.client_id == 9
    assert record.outcome == "retry"
    assert record.status_code == 503
    assert record.latency_ms >= 0
    message = record.getMessage()
    assert "msg=42" in message
    assert "outcome=retry" in message
    assert "status=503" in message
    assert TOKEN not in message


# --- Retry-After parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("1e3", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("99999999999", MAX_RETRY_AFTER),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_dates() -> None:
    date = format_datetime(datetime(2026, 3, 1, 12, 0, tzinfo=UTC), usegmt=True)
    later = format_datetime(datetime(2026, 3, 1, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, date) == 90.0
    assert parse_retry_after(date, later) == 0.0  # in the past: go now
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past) == 0.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    delay = parse_retry_after(soon, "not a date")  # bad Date header: our own clock
    assert delay is not None
    assert 58.0 <= delay <= 61.0


# --- the recording double -----------------------------------------------------------


def test_recording_client_follows_script_then_default() -> None:
    client = RecordingSendClient(script={1: [Outcome.RETRY, Outcome.THROTTLED]}, retry_after=3.0)
    assert isinstance(client, RecordingSendClient)

    async def go() -> list[SendResult]:
        sender: SendClient = client
        m1 = OutgoingMessage(1, "79161234567", "x", 7, 1)
        m2 = OutgoingMessage(2, "79161234567", "x", 7, 2)
        return [await sender.send(m) for m in (m1, m1, m1, m2)]

    results = asyncio.run(go())
    assert [r.outcome for r in results] == [
        Outcome.RETRY,
        Outcome.THROTTLED,
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
    ]
    assert results[1].retry_after == 3.0
    assert results[1].status_code == 429
    assert [m.message_id for m in client.calls] == [1, 1, 1, 2]
    assert len(client.calls_for(1)) == 3
    assert client.accepted_ids == [1, 2]


def test_recording_client_with_callables_and_concurrency() -> None:
    async def handler(message: OutgoingMessage) -> Outcome:
        return Outcome.REJECTED if message.message_id % 2 else Outcome.ACCEPTED

    client = RecordingSendClient(handler, latency=0.01)
    client.script(
        4, SendResult(999, Outcome.UNAUTHORIZED, "HTTP 401", 401, None, 0.0)
    )  # message_id is corrected to the real one

    async def go() -> list[SendResult]:
        messages = [OutgoingMessage(i, "79161234567", "x", 7, i) for i in range(1, 7)]
        results = await asyncio.gather(*(client.send(m) for m in messages))
        await client.close()
        after = await client.send(messages[0])
        return [*results, after]

    results = asyncio.run(go())
    assert [r.outcome for r in results[:6]] == [
        Outcome.REJECTED,
        Outcome.ACCEPTED,
        Outcome.REJECTED,
        Outcome.UNAUTHORIZED,
        Outcome.REJECTED,
        Outcome.ACCEPTED,
    ]
    assert results[3].message_id == 4
    assert client.max_in_flight == 6
    assert client.in_flight == 0
    assert client.closed
    assert (results[6].outcome, results[6].detail) == (Outcome.RETRY, "client closed")

    sync_client = RecordingSendClient(lambda m: Outcome.RETRY)
    result = asyncio.run(sync_client.send(MSG))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 503)
