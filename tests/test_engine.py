"""The sending engine end to end: real database, real HTTP to the stand-in on loopback."""

from __future__ import annotations

import time
from datetime import time as clock_time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailing import cleanup, services
from mailing.engine import lifecycle
from mailing.engine.circuit import CircuitState
from mailing.engine.clock import SystemClock
from mailing.engine.fanout import fan_out
from mailing.engine.queue import claim_due
from mailing.models import Mailing, MailingStatus, Message, MessageStatus, ProviderState
from mailing.transitions import reconcile_counters
from tests.conftest import RefusedPort, make_clients, now_plus, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def counters_match_messages(mailing: Mailing) -> bool:
    mailing.refresh_from_db()
    actual = dict(
        Message.objects.filter(mailing=mailing)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    expected = {status: actual.get(status, 0) for status in MessageStatus.values}
    return mailing.counters() == {"total": sum(actual.values())} | expected


def running_mailing(seconds: float = 60, **filters) -> Mailing:
    return services.create_mailing(
        start_at=timezone.now() - timedelta(seconds=1),
        end_at=now_plus(seconds),
        text="Hello",
        **filters,
    )


# --- fan-out ------------------------------------------------------------------------


def test_fan_out_creates_one_message_per_matching_client_once():
    make_clients(30, operator_code="916", tag="vip")
    make_clients(20, operator_code="916", tag="new", first=100)
    make_clients(10, operator_code="903", tag="vip", first=200)
    mailing = running_mailing(operator_codes=["916"], tags=["vip"])

    assert fan_out(mailing, timezone.now()) == 30
    assert fan_out(mailing, timezone.now()) == 0  # idempotent
    mailing.refresh_from_db()
    assert mailing.total == mailing.pending == 30
    assert set(Message.objects.filter(mailing=mailing).values_list("phone", flat=True)) == {
        f"7916{n:07d}" for n in range(30)
    }
    assert counters_match_messages(mailing)


def test_empty_filter_matches_everyone_and_empty_audience_finishes():
    make_clients(3, operator_code="900")
    make_clients(4, operator_code="977", first=10)
    everyone = running_mailing()
    nobody = running_mailing(tags=["no-such-tag"])
    lifecycle.tick(timezone.now())
    everyone.refresh_from_db()
    nobody.refresh_from_db()
    assert everyone.total == 7
    assert nobody.total == 0 and nobody.status == MailingStatus.FINISHED


# --- sending ------------------------------------------------------------------------


def test_running_mailing_is_delivered_exactly_once_per_client(provider, dispatcher_factory):
    make_clients(200)
    mailing = running_mailing()
    worker = dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 20)
    worker.stop()

    mailing.refresh_from_db()
    assert mailing.sent == mailing.total == 200
    ids = set(Message.objects.filter(mailing=mailing).values_list("id", flat=True))
    assert provider.recorder.unique_accepted == 200
    assert set(provider.recorder.first_accepted_at()) == ids
    assert provider.recorder.duplicates() == {}
    assert counters_match_messages(mailing)
    assert not Message.objects.filter(mailing=mailing, sent_at__isnull=True).exists()


def test_future_mailing_starts_by_itself_at_start_at(provider, dispatcher_factory):
    make_clients(5)
    start_at = now_plus(1.5)
    mailing = services.create_mailing(start_at=start_at, end_at=now_plus(60), text="Later")
    assert mailing.status == MailingStatus.SCHEDULED
    worker = dispatcher_factory()
    wait_for(lambda: provider.recorder.unique_accepted == 5, 15)
    worker.stop()
    # The arrival of the first request (stamped before any latency), not its acceptance.
    first = min(provider.recorder.first_arrived_at().values())
    delay = first - start_at.timestamp()
    assert 0 <= delay < 2.0, f"first message {delay:.2f} s after start_at"


def test_nothing_is_sent_after_end_at(provider, dispatcher_factory):
    provider.update_config(latency_ms=300)
    make_clients(300)
    end_at = now_plus(1.0)
    mailing = services.create_mailing(
        start_at=timezone.now() - timedelta(seconds=1), end_at=end_at, text="Short"
    )
    concurrency = 10
    worker = dispatcher_factory(concurrency=concurrency)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 20)
    worker.stop()
    mailing.refresh_from_db()
    # The engine's own decision, taken where it checks the end: its last call began before it.
    last_start = worker.dispatcher.report.last_send_started_at
    assert last_start is not None and last_start < end_at
    # The stand-in stamps each arrival before its 300 ms latency. Whatever arrived at or after
    # the end was already on its way: at most the calls in flight, never a new wave.
    arrivals = provider.recorder.last_arrived_at().values()
    assert max(arrivals) >= last_start.timestamp()  # one clock: the last call did arrive
    assert sum(at >= end_at.timestamp() for at in arrivals) <= concurrency
    assert mailing.expired > 0 and mailing.sent == provider.recorder.unique_accepted
    assert mailing.sent + mailing.expired == 300
    assert counters_match_messages(mailing)


# --- error policy -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"error_rate": 1.0},
        {"malformed_rate": 1.0},
        {"reset_rate": 1.0},
        {"timeout_rate": 1.0, "hang_seconds": 5.0},
    ],
    ids=["5xx", "malformed", "reset", "timeout"],
)
def test_transient_failures_are_retried_with_the_same_id(provider, dispatcher_factory, fault):
    make_clients(10)
    mailing = running_mailing()
    provider.update_config(**fault)
    worker = dispatcher_factory(total_timeout=0.5)
    wait_for(lambda: Message.objects.filter(mailing=mailing, attempts__gte=2).count() == 10, 20)
    assert provider.recorder.unique_accepted == 0
    provider.update_config(**{key: 0 for key in fault if key.endswith("rate")})
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 20)
    worker.stop()
    assert provider.recorder.unique_accepted == 10
    assert provider.recorder.duplicates() == {}
    assert set(provider.recorder.first_accepted_at()) == set(
        Message.objects.filter(mailing=mailing).values_list("id", flat=True)
    )
    assert counters_match_messages(mailing)


def test_connection_refused_is_retried_until_the_provider_is_back(provider, dispatcher_factory):
    make_clients(5)
    mailing = running_mailing()
    # Nothing listens on the stand-in's port once it is stopped.
    base_url = provider.base_url
    provider.stop()
    worker = dispatcher_factory(base_url=base_url)
    wait_for(lambda: Message.objects.filter(mailing=mailing, attempts__gte=2).count() == 5, 20)
    assert Message.objects.filter(mailing=mailing, last_error__icontains="connect").count() == 5
    worker.stop()
    assert Mailing.objects.get(pk=mailing.pk).pending == 5


def test_rejections_fail_with_the_reason(provider, dispatcher_factory):
    make_clients(6)
    mailing = running_mailing()
    provider.update_config(reject_rate=1.0)
    worker = dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 20)
    worker.stop()
    mailing.refresh_from_db()
    assert mailing.failed == 6 and mailing.sent == 0
    reasons = set(Message.objects.filter(mailing=mailing).values_list("last_error", flat=True))
    assert len(reasons) == 1 and "code 1" in reasons.pop()
    assert counters_match_messages(mailing)


def test_throttling_waits_at_least_retry_after(provider, dispatcher_factory):
    make_clients(4)
    mailing = running_mailing()
    provider.update_config(throttle_rate=1.0, retry_after=2)
    before = timezone.now()
    worker = dispatcher_factory()
    wait_for(lambda: Message.objects.filter(mailing=mailing, attempts=1).count() == 4, 10)
    worker.stop()
    for message in Message.objects.filter(mailing=mailing):
        assert "429" in message.last_error
        assert message.next_attempt_at >= before + timedelta(seconds=2)


class SkippableClock(SystemClock):
    """Real time, except that the test moves the engine's monotonic time forward at will
    (to make a probe due at a moment of its choosing, without waiting for it)."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped


def nothing_claimed(mailing: Mailing) -> bool:
    return not Message.objects.filter(mailing=mailing, claimed_by__isnull=False).exists()


# The bound of issue 9: what a refused token or a provider that is down may cost before
# sending pauses (one full wave of SEND_CONCURRENCY, about 200 requests, before slow start).
PAUSE_COST_BOUND = 20


def test_refused_credentials_burn_nothing_and_sending_resumes(provider, dispatcher_factory, caplog):
    make_clients(500)
    mailing = running_mailing()
    provider.update_config(token="a-different-token")
    clock = SkippableClock()
    # No probe is due until the test moves the clock by an hour: every request that reaches
    # the stand-in before that is the price of the refusal. The client's timeout is the
    # shipped one: on a loaded machine a slow 401 must not turn into a timeout (an attempt).
    worker = dispatcher_factory(
        clock=clock,
        concurrency=settings.SEND_CONCURRENCY,
        window_initial=settings.SEND_WINDOW_INITIAL,
        auth_retry_seconds=3600,
        total_timeout=settings.PROBE_TOTAL_TIMEOUT,
    )
    wait_for(lambda: ProviderState.objects.filter(auth_failed_at__isnull=False).exists(), 10)
    # What was in flight when the first refusal came back is answered and handed back.
    wait_for(lambda: nothing_claimed(mailing), 10)
    assert worker.dispatcher.gate.paused_for_credentials
    stats = provider.recorder.stats()  # counted by the stand-in as the requests arrive
    assert 1 <= stats["requests"] <= PAUSE_COST_BOUND
    assert stats["by_outcome"]["unauthorized"] == stats["requests"]
    assert Message.objects.filter(mailing=mailing, status=MessageStatus.PENDING).count() == 500
    assert not Message.objects.filter(mailing=mailing, attempts__gt=0).exists()
    assert any("refused our credentials" in r.getMessage() for r in caplog.records)

    provider.update_config(token="test-token")
    refused = stats["requests"]
    clock.skipped += 3600  # the next probe is due now
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 30)
    worker.stop()
    assert Mailing.objects.get(pk=mailing.pk).sent == 500
    assert provider.recorder.stats()["by_outcome"]["unauthorized"] == refused
    assert not ProviderState.objects.filter(auth_failed_at__isnull=False).exists()


def test_a_provider_that_is_down_costs_at_most_20_requests_before_sending_pauses(
    dispatcher_factory,
):
    make_clients(500)
    mailing = running_mailing()
    with RefusedPort() as port:
        # The shipped defaults; no half-open probe within the test (reset in an hour).
        worker = dispatcher_factory(
            base_url=f"http://127.0.0.1:{port}/v1",
            concurrency=settings.SEND_CONCURRENCY,
            window_initial=settings.SEND_WINDOW_INITIAL,
            circuit_threshold=settings.CIRCUIT_FAILURE_THRESHOLD,
            circuit_reset_seconds=3600,
        )
        wait_for(lambda: worker.dispatcher.gate.circuit.state is CircuitState.OPEN, 10)
        wait_for(lambda: nothing_claimed(mailing), 10)
        worker.stop()
    # Nothing listens, so the calls are counted where they were made: each one is an attempt
    # of a message and an outcome in the dispatcher's report.
    attempts = Message.objects.filter(mailing=mailing).aggregate(n=Sum("attempts"))["n"]
    assert attempts == worker.dispatcher.report.outcomes.get("retry", 0)
    assert settings.CIRCUIT_FAILURE_THRESHOLD <= attempts <= PAUSE_COST_BOUND
    assert worker.dispatcher.gate.window == 1
    assert Mailing.objects.get(pk=mailing.pk).pending == 500


def test_the_window_slow_starts_and_grows_to_the_ceiling(provider, dispatcher_factory):
    make_clients(3000)
    provider.update_config(latency_ms=20)
    mailing = running_mailing()
    windows: list[int] = []

    def on_tick(now, status) -> bool:
        windows.append(status.window)
        return True

    worker = dispatcher_factory(concurrency=64, window_initial=4, on_tick=on_tick)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 60)
    worker.stop()
    assert windows[0] == 4
    assert max(windows) == 64
    assert provider.recorder.unique_accepted == 3000 and provider.recorder.duplicates() == {}


def test_circuit_breaker_opens_and_probes_a_failing_provider(provider, dispatcher_factory):
    make_clients(100)
    running_mailing()
    provider.update_config(error_rate=1.0)
    worker = dispatcher_factory(circuit_threshold=5, circuit_reset_seconds=0.5, concurrency=5)
    wait_for(lambda: worker.dispatcher.gate.circuit.state.value != "closed", 10)
    requests_then = provider.recorder.stats()["requests"]
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started > 1.5, 5)
    calls_while_open = provider.recorder.stats()["requests"] - requests_then
    # Open for 0.5 s, then one probe; failed probes double the wait: a handful at most.
    assert calls_while_open <= 4
    provider.update_config(error_rate=0.0)
    wait_for(lambda: worker.dispatcher.gate.circuit.state.value == "closed", 10)
    worker.stop()


# --- control ------------------------------------------------------------------------


def test_pause_stops_sending_and_resume_continues(provider, dispatcher_factory):
    make_clients(200)
    provider.update_config(latency_ms=20)
    mailing = running_mailing()
    worker = dispatcher_factory(concurrency=5)
    wait_for(lambda: provider.recorder.unique_accepted >= 10, 20)
    services.pause_mailing(Mailing.objects.get(pk=mailing.pk))
    # What was in flight at the pause may still land; after that, nothing more.
    wait_for(lambda: not Message.objects.filter(mailing=mailing, claimed_by__isnull=False).exists())
    after_pause = provider.recorder.unique_accepted
    paused_at = time.monotonic()
    wait_for(lambda: time.monotonic() - paused_at > 0.5)
    assert provider.recorder.unique_accepted == after_pause < 200
    services.resume_mailing(Mailing.objects.get(pk=mailing.pk))
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 30)
    worker.stop()
    assert provider.recorder.unique_accepted == 200
    assert provider.recorder.duplicates() == {}


def test_cancel_cancels_pending_messages():
    make_clients(10)
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    services.cancel_mailing(Mailing.objects.get(pk=mailing.pk))
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.CANCELLED
    assert mailing.cancelled == 10 and mailing.pending == 0
    assert counters_match_messages(mailing)
    assert claim_due("w", 100, timezone.now(), timedelta(seconds=30)) == []


def test_deleting_a_client_cancels_its_pending_messages_and_keeps_statistics():
    clients = make_clients(3)
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    client = Mailing.objects.get(pk=mailing.pk).messages.first().client
    services.delete_client(client)
    mailing.refresh_from_db()
    assert mailing.cancelled == 1 and mailing.pending == 2 and mailing.total == 3
    cancelled = Message.objects.get(mailing=mailing, status=MessageStatus.CANCELLED)
    assert cancelled.client_id is None and cancelled.phone == client.phone
    assert len(clients) == 3 and counters_match_messages(mailing)


def test_deleting_a_running_mailing_stops_it(provider, dispatcher_factory):
    make_clients(300)
    provider.update_config(latency_ms=50)
    mailing = running_mailing()
    worker = dispatcher_factory(concurrency=5)
    wait_for(lambda: provider.recorder.unique_accepted >= 5, 20)
    services.delete_mailing(Mailing.objects.get(pk=mailing.pk))
    deleted_at = provider.recorder.stats()["requests"]
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started > 0.5)
    worker.stop()
    # At most the requests in flight at the deletion (concurrency 5) arrive afterwards.
    assert provider.recorder.stats()["requests"] - deleted_at <= 5
    cleanup.purge_deleted_mailings()
    assert not Message.objects.filter(mailing_id=mailing.pk).exists()


def test_editing_a_started_mailing_is_a_conflict():
    mailing = running_mailing()
    with pytest.raises(services.StateConflict):
        services.update_mailing(mailing, text="Changed")
    with pytest.raises(services.StateConflict):
        services.update_mailing(mailing, operator_codes=["903"])
    extended = services.update_mailing(mailing, end_at=now_plus(120))
    assert extended.end_at > now_plus(100)


# --- the queue ----------------------------------------------------------------------


def test_an_abandoned_claim_is_taken_over_after_its_lease():
    make_clients(10)
    running_mailing()
    now = timezone.now()
    lifecycle.tick(now)
    lease = timedelta(seconds=30)
    first = claim_due("dead-worker", 100, now, lease)
    assert len(first) == 10
    assert claim_due("other", 100, now + timedelta(seconds=29), lease) == []
    taken_over = claim_due("other", 100, now + timedelta(seconds=31), lease)
    assert {c.message.message_id for c in taken_over} == {c.message.message_id for c in first}
    assert set(Message.objects.values_list("claimed_by", flat=True)) == {"other"}


def test_overall_statistics_do_not_read_messages():
    from mailing.selectors import overall_stats

    make_clients(50)
    for _ in range(3):
        running_mailing()
    lifecycle.tick(timezone.now())
    with CaptureQueriesContext(connection) as queries:
        stats = overall_stats()
    assert stats["totals"]["total"] == 150 and stats["totals"]["pending"] == 150
    assert all("mailing_message" not in q["sql"] for q in queries.captured_queries)


def test_reconciliation_corrects_drifted_counters():
    make_clients(8)
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    # Drift made on purpose, as a bug or a manual fix in SQL would.
    Message.objects.filter(pk__in=Message.objects.filter(mailing=mailing).values("pk")[:3]).update(
        status=MessageStatus.SENT
    )
    assert not counters_match_messages(mailing)
    corrections = reconcile_counters(mailing.pk)
    assert corrections == {"pending": -3, "sent": 3}
    assert counters_match_messages(mailing)
    assert reconcile_counters(mailing.pk) == {}


def test_services_refuse_nul_bytes_and_empty_preview_windows():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        services.create_mailing(start_at=timezone.now(), end_at=now_plus(60), text="a\x00b")
    assert "text" in error.value.message_dict
    # The preview (like the services) takes a SendWindow, and an empty one cannot be built.
    with pytest.raises(ValidationError) as error:
        services.SendWindow(clock_time(9), clock_time(9))
    assert "send_window" in error.value.message_dict
