"""Send windows through the whole engine, with the engine's clock under the test's control."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from mailing import services
from mailing.engine.clock import SystemClock
from mailing.models import Mailing, Message, MessageStatus
from tests.conftest import make_clients, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class Clock(SystemClock):
    """The engine's idea of the wall time, set by the test; intervals and HTTP calls
    still happen in real time."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def windowed_mailing(now: datetime, start: str, end: str, hours: float = 48) -> Mailing:
    return services.create_mailing(
        start_at=now - timedelta(minutes=1),
        end_at=now + timedelta(hours=hours),
        text="Windowed",
        send_window=services.SendWindow(time.fromisoformat(start), time.fromisoformat(end)),
        now=now,
    )


def statuses_by_zone(mailing: Mailing) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for zone, status in Message.objects.filter(mailing=mailing).values_list("timezone", "status"):
        result.setdefault(zone, set()).add(status)
    return result


def test_only_clients_inside_their_window_get_messages(provider, dispatcher_factory):
    make_clients(5, timezone_name="Europe/Moscow")
    make_clients(5, timezone_name="Asia/Vladivostok", first=100)
    # 12:00 UTC: 15:00 in Moscow (inside 09-21), 22:00 in Vladivostok (outside).
    clock = Clock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    mailing = windowed_mailing(clock.at, "09:00", "21:00")
    worker = dispatcher_factory(clock=clock)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent == 5, 15)
    worker.stop()
    assert statuses_by_zone(mailing) == {
        "Europe/Moscow": {MessageStatus.SENT},
        "Asia/Vladivostok": {MessageStatus.PENDING},
    }
    waiting = Message.objects.filter(mailing=mailing, timezone="Asia/Vladivostok")
    # 09:00 in Vladivostok (UTC+10) is 23:00 UTC.
    assert set(waiting.values_list("next_attempt_at", flat=True)) == {
        datetime(2026, 6, 1, 23, 0, tzinfo=UTC)
    }
    assert provider.recorder.unique_accepted == 5

    clock.at = datetime(2026, 6, 1, 23, 0, tzinfo=UTC)
    worker = dispatcher_factory(clock=clock)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent == 10, 15)
    worker.stop()


def test_window_crossing_midnight(provider, dispatcher_factory):
    make_clients(3, timezone_name="Europe/Moscow")
    make_clients(3, timezone_name="Asia/Vladivostok", first=100)
    # 20:00 UTC: 23:00 in Moscow (inside 22-06); 06:00 next day in Vladivostok: the end is
    # exclusive, so outside until 22:00 local = 12:00 UTC.
    clock = Clock(datetime(2026, 6, 1, 20, 0, tzinfo=UTC))
    mailing = windowed_mailing(clock.at, "22:00", "06:00")
    worker = dispatcher_factory(clock=clock)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent == 3, 15)
    worker.stop()
    waiting = Message.objects.filter(mailing=mailing, status=MessageStatus.PENDING)
    assert set(waiting.values_list("timezone", flat=True)) == {"Asia/Vladivostok"}
    assert set(waiting.values_list("next_attempt_at", flat=True)) == {
        datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
    }


def test_window_that_opens_after_the_end_expires_the_message(provider, dispatcher_factory):
    make_clients(2, timezone_name="Asia/Vladivostok")
    clock = Clock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    mailing = windowed_mailing(clock.at, "09:00", "21:00", hours=5)
    worker = dispatcher_factory(clock=clock)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).expired == 2, 15)
    worker.stop()
    assert provider.recorder.unique_accepted == 0
    assert {m.last_error for m in Message.objects.filter(mailing=mailing)} == {
        "send window does not open before the mailing ends"
    }


def test_window_start_in_a_daylight_saving_gap(provider, dispatcher_factory):
    make_clients(3, timezone_name="America/New_York")
    # 2026-03-08 06:00 UTC is 01:00 EST; at 02:00 clocks jump to 03:00, so a window
    # starting 02:30 opens at the end of the gap: 03:00 EDT = 07:00 UTC.
    clock = Clock(datetime(2026, 3, 8, 6, 0, tzinfo=UTC))
    mailing = windowed_mailing(clock.at, "02:30", "05:00")
    worker = dispatcher_factory(clock=clock)
    wait_for(
        lambda: (
            set(Message.objects.filter(mailing=mailing).values_list("next_attempt_at", flat=True))
            == {datetime(2026, 3, 8, 7, 0, tzinfo=UTC)}
        ),
        15,
    )
    clock.at = datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC)
    assert provider.recorder.unique_accepted == 0
    clock.at = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent == 3, 15)
    worker.stop()
