"""HttpSendClient against the send API stand-in on loopback: its scenario routes for the
corners of the protocol (devtools/provider/scenarios.py), its fault model for the rest."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from devtools.provider import FaultConfig, StandInServer
from mailing.engine.provider import (
    MAX_RETRY_AFTER,
    HttpSendClient,
    Outcome,
    OutgoingMessage,
    SendResult,
    parse_retry_after,
)
from mailing.rules import ERROR_MAX_LENGTH
from tests.conftest import RefusedPort

TOKEN = "secret-token"
MSG = OutgoingMessage(message_id=42, phone="79161234567", text="Hello", mailing_id=7, client_id=9)


@pytest.fixture(scope="module")
def server() -> Iterator[StandInServer]:
    with StandInServer(FaultConfig(token=TOKEN)) as running:
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


def test_accepted(server: StandInServer) -> None:
    result = send_one(server.scenario_url("ok"))
    assert result == SendResult(42, Outcome.ACCEPTED, "code 0: OK", 200, None, result.latency)
    assert 0 < result.latency < 5


def test_accepted_without_message_field(server: StandInServer) -> None:
    result = send_one(server.scenario_url("code0nomsg"))
    assert (result.outcome, result.detail) == (Outcome.ACCEPTED, "code 0")


def test_400_is_rejected_with_the_reason(server: StandInServer) -> None:
    result = send_one(server.scenario_url("bad400"))
    assert result.outcome is Outcome.REJECTED
    assert result.status_code == 400
    assert result.detail == "HTTP 400: bad phone"


def test_nonzero_code_is_rejected_with_the_provider_message(server: StandInServer) -> None:
    result = send_one(server.scenario_url("code3"))
    assert (result.outcome, result.status_code) == (Outcome.REJECTED, 200)
    assert result.detail == "code 3: rejected"


@pytest.mark.parametrize("scenario", ["bad400long", "code3long"])
def test_detail_is_clipped_for_last_error(server: StandInServer, scenario: str) -> None:
    result = send_one(server.scenario_url(scenario))
    assert result.outcome is Outcome.REJECTED
    assert 100 < len(result.detail) <= ERROR_MAX_LENGTH


@pytest.mark.parametrize(("scenario", "status"), [("s500", 500), ("s502", 502), ("s503", 503)])
def test_5xx_is_retry(server: StandInServer, scenario: str, status: int) -> None:
    result = send_one(server.scenario_url(scenario))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, status)
    assert result.detail.startswith(f"HTTP {status}")


@pytest.mark.parametrize(("scenario", "status"), [("u401", 401), ("u403", 403)])
def test_401_403_are_unauthorized(server: StandInServer, scenario: str, status: int) -> None:
    result = send_one(server.scenario_url(scenario))
    assert (result.outcome, result.status_code) == (Outcome.UNAUTHORIZED, status)


def test_429_with_delay_seconds(server: StandInServer) -> None:
    result = send_one(server.scenario_url("throttle7"))
    assert (result.outcome, result.status_code) == (Outcome.THROTTLED, 429)
    assert result.retry_after == 7.0


def test_429_with_http_date_is_measured_against_the_servers_date(server: StandInServer) -> None:
    # Server's Date is 2026-03-01 (not now) and Retry-After 30 s later: a client
    # comparing with its own clock would get 0, not 30.
    result = send_one(server.scenario_url("throttle_date"))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after == 30.0


def test_429_with_http_date_and_live_clock(server: StandInServer) -> None:
    result = send_one(server.scenario_url("throttle_date_live"))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after is not None
    # HTTP dates have one-second resolution on both headers.
    assert 28.0 <= result.retry_after <= 31.0


@pytest.mark.parametrize("scenario", ["throttle_none", "throttle_garbage"])
def test_429_without_usable_retry_after(server: StandInServer, scenario: str) -> None:
    result = send_one(server.scenario_url(scenario))
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
def test_malformed_200_is_retry(server: StandInServer, scenario: str, reason: str) -> None:
    result = send_one(server.scenario_url(scenario))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 200)
    assert result.detail.startswith("malformed body: ")
    assert reason in result.detail
    assert len(result.detail) <= ERROR_MAX_LENGTH


def test_unexpected_status_is_retry(server: StandInServer) -> None:
    result = send_one(server.scenario_url("nf404"))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 404)
    assert result.detail.startswith("unexpected HTTP 404")


def test_redirect_is_not_followed(server: StandInServer) -> None:
    message = OutgoingMessage(4302, "79161234567", "Hello", 7, 9)
    result = send_one(server.scenario_url("redirect"), message)
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 302)
    # Following it would have carried the token to wherever Location points.
    assert [r for r in server.recorder.recorded("ok") if r.path.endswith("/4302")] == []


# --- transport failures -------------------------------------------------------------


def test_server_hangs_up_without_answer(server: StandInServer) -> None:
    result = send_one(server.scenario_url("hangup"))
    assert result.outcome is Outcome.RETRY
    assert result.status_code is None
    assert "disconnected" in result.detail.lower()


def test_connection_reset(server: StandInServer) -> None:
    result = send_one(server.scenario_url("reset"))
    assert result.outcome is Outcome.RETRY
    assert result.status_code is None
    assert any(word in result.detail.lower() for word in ("reset", "disconnected"))


def test_connection_refused() -> None:
    with RefusedPort() as port:
        result, elapsed = timed_send(f"http://127.0.0.1:{port}")
    assert result.outcome is Outcome.RETRY
    assert result.status_code is None
    assert "ClientConnectorError" in result.detail
    assert elapsed < 2.0  # refusal is immediate, no timeout involved


def test_slow_server_times_out(server: StandInServer) -> None:
    result, elapsed = timed_send(server.scenario_url("slow"), total_timeout=0.5)
    assert result.outcome is Outcome.RETRY
    assert result.detail == "timeout after 0.5s"
    assert 0.4 <= elapsed < 2.0


def test_dripping_body_is_bounded_by_total_timeout(server: StandInServer) -> None:
    # Each byte arrives well within any per-read timeout; only a bound on the
    # whole call stops this. The full body would take ~8.4 s.
    result, elapsed = timed_send(server.scenario_url("drip"), total_timeout=1.0)
    assert result.outcome is Outcome.RETRY
    assert result.status_code == 200  # headers had arrived
    assert result.detail == "timeout after 1.0s"
    assert 0.9 <= elapsed < 2.0
    assert 0.9 <= result.latency < 2.0


# --- the request on the wire --------------------------------------------------------


def test_request_carries_token_path_and_integer_json(server: StandInServer) -> None:
    message = OutgoingMessage(987654321012, "79161234567", "Привет, мир", 7, None)
    result = send_one(server.scenario_url("record") + "/", message)  # trailing slash tolerated
    assert result.outcome is Outcome.ACCEPTED
    [request] = server.recorder.recorded("record")
    assert request.method == "POST"
    assert request.path == "/scenario/record/v1/send/987654321012"
    assert request.authorization == f"Bearer {TOKEN}"
    assert request.content_type is not None
    assert request.content_type.startswith("application/json")
    body = json.loads(request.body)
    assert body == {"id": 987654321012, "phone": 79161234567, "text": "Привет, мир"}
    assert type(body["id"]) is int
    assert type(body["phone"]) is int


# The last one is full-width digits: str.isdigit() accepts them, the provider would not.
@pytest.mark.parametrize("phone", ["", "7916abc4567", "+79161234567", "\uff17\uff19\uff11\uff16"])
def test_invalid_phone_is_rejected_without_a_call(server: StandInServer, phone: str) -> None:
    before = len(server.recorder.recorded())
    result = send_one(server.scenario_url("ok"), OutgoingMessage(5, phone, "x", 7, 9))
    assert result.outcome is Outcome.REJECTED
    assert result.status_code is None
    assert len(server.recorder.recorded()) == before


# --- connection pooling -------------------------------------------------------------


def test_sequential_sends_reuse_one_connection() -> None:
    async def go(base: str) -> list[SendResult]:
        async with HttpSendClient(base, TOKEN) as client:
            return [await client.send(MSG), await client.send(MSG)]

    with StandInServer() as fresh:
        results = asyncio.run(go(fresh.scenario_url("ok")))
        assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
        assert len(fresh.recorder.recorded("ok")) == 2
        assert fresh.recorder.connections == 1
        assert len({r.peer for r in fresh.recorder.recorded("ok")}) == 1


def test_concurrent_sends_stay_within_the_pool() -> None:
    pool = 10

    async def go(base: str) -> list[SendResult]:
        async with HttpSendClient(base, TOKEN, max_connections=pool) as client:
            messages = [OutgoingMessage(i, "79161234567", "hi", 7, i) for i in range(1, 201)]
            return await asyncio.gather(*(client.send(m) for m in messages))

    with StandInServer(gate_target=pool) as fresh:
        results = asyncio.run(go(fresh.scenario_url("gate")))
        assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 200
        assert sorted(r.message_id for r in results) == list(range(1, 201))
        # The pool was really used in full (the server held requests until ten
        # were in flight together) and never exceeded.
        assert fresh.scenarios.max_in_flight == pool
        assert fresh.recorder.connections <= pool
        assert len({r.peer for r in fresh.recorder.recorded("gate")}) <= pool


# --- lifecycle ----------------------------------------------------------------------


def test_client_is_built_outside_a_loop_and_closes_without_a_session() -> None:
    client = HttpSendClient("http://127.0.0.1:9", TOKEN)
    asyncio.run(client.close())


def test_send_after_close_is_retry_not_an_exception(server: StandInServer) -> None:
    async def go() -> SendResult:
        client = HttpSendClient(server.scenario_url("ok"), TOKEN)
        await client.send(MSG)
        await client.close()
        return await client.send(MSG)

    result = asyncio.run(go())
    assert (result.outcome, result.detail) == (Outcome.RETRY, "client closed")


def test_client_survives_a_new_event_loop(server: StandInServer) -> None:
    client = HttpSendClient(server.scenario_url("ok"), TOKEN)
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
    server: StandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailing.provider")
    send_one(server.scenario_url("s503"))
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


# --- the stand-in's fault model ------------------------------------------------------
# The dispatcher's tests drive the client through the stand-in's fault model; here each
# fault meets the client once, so the two agree on what every fault means.


@pytest.mark.parametrize(
    ("faults", "outcome", "status"),
    [
        ({}, Outcome.ACCEPTED, 200),
        ({"reject_rate": 1.0}, Outcome.REJECTED, 200),
        ({"error_rate": 1.0}, Outcome.RETRY, None),  # 500, 502 or 503
        ({"throttle_rate": 1.0, "retry_after": 4}, Outcome.THROTTLED, 429),
        ({"malformed_rate": 1.0}, Outcome.RETRY, 200),
        ({"reset_rate": 1.0}, Outcome.RETRY, None),
        ({"timeout_rate": 1.0, "hang_seconds": 5.0}, Outcome.RETRY, None),
        ({"drip_rate": 1.0}, Outcome.RETRY, 200),  # delivered, but the answer is too slow
    ],
    ids=["perfect", "reject", "error", "throttle", "malformed", "reset", "timeout", "drip"],
)
def test_each_fault_of_the_stand_in_is_the_outcome_it_means(
    faults: dict[str, float], outcome: Outcome, status: int | None
) -> None:
    with StandInServer(FaultConfig(token=TOKEN, seed=3, **faults)) as stand_in:
        result = send_one(stand_in.base_url, total_timeout=1.0)
        delivered = stand_in.recorder.count_of(MSG.message_id)
    assert result.outcome is outcome, result
    if status is not None:
        assert result.status_code == status
    if outcome is Outcome.THROTTLED:
        assert result.retry_after == 4.0
    # Only an acceptance and a drip deliver; the client sees the drip as a retry.
    assert delivered == (1 if not faults or "drip_rate" in faults else 0)


def test_a_wrong_token_is_unauthorized_and_delivers_nothing() -> None:
    with StandInServer(FaultConfig(token="the-right-one")) as stand_in:
        result = send_one(stand_in.base_url)
        assert stand_in.recorder.by_outcome["unauthorized"] == 1
        assert stand_in.recorder.accepted == 0
    assert (result.outcome, result.status_code) == (Outcome.UNAUTHORIZED, 401)


def test_the_stand_in_sees_the_concurrency_the_client_sends() -> None:
    pool = 6

    async def go(base: str) -> list[SendResult]:
        async with HttpSendClient(base, TOKEN, max_connections=pool) as client:
            messages = [OutgoingMessage(i, "79161234567", "hi", 7, i) for i in range(1, 61)]
            return await asyncio.gather(*(client.send(m) for m in messages))

    with StandInServer(FaultConfig(token=TOKEN, latency_ms=20)) as stand_in:
        results = asyncio.run(go(stand_in.base_url))
        assert stand_in.recorder.unique_accepted == 60
        assert stand_in.recorder.connections <= pool
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 60
