"""Events past EVENT_RETENTION_DAYS go, in batches, oldest first; newer ones stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule

from mailing import cleanup
from mailing.models import Event

pytestmark = pytest.mark.django_db

EVENT_TABLE = Event._meta.db_table


def events_aged(days: list[float]) -> list[Event]:
    """One event per age in days, inserted oldest first (as they are written)."""
    now = timezone.now()
    return Event.objects.bulk_create(
        Event(kind="message.send.accepted", mailing_id=1, at=now - timedelta(days=age), data={})
        for age in days
    )


def test_events_past_the_retention_go_in_batches_and_the_rest_stay(settings):
    settings.EVENT_RETENTION_DAYS = 90
    old = events_aged([120.0] * 25 + [90.01] * 2)
    recent = events_aged([89.99, 30.0, 0.0])
    with CaptureQueriesContext(connection) as queries:
        removed = cleanup.delete_old_events(batch_size=10)
    assert removed == {"events": len(old), "left": 0}
    deletes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("DELETE") and EVENT_TABLE in q["sql"]
    ]
    assert [q.count(",") + 1 for q in deletes] == [10, 10, 7]
    assert list(Event.objects.values_list("id", flat=True)) == [e.pk for e in recent]
    assert cleanup.delete_old_events(batch_size=10) == {"events": 0, "left": 0}


def test_a_retention_of_zero_keeps_every_event(settings):
    settings.EVENT_RETENTION_DAYS = 0
    events_aged([4000.0, 1.0])
    assert cleanup.delete_old_events() == {"events": 0, "left": 0}
    assert Event.objects.count() == 2


def test_a_run_out_of_time_hands_the_rest_to_a_fresh_task(settings):
    settings.EVENT_RETENTION_DAYS = 90
    events_aged([100.0] * 3)
    broker = get_broker()
    broker.purge_queue()
    try:
        assert cleanup.delete_old_events(seconds=0) == {"events": 0, "left": 1}
        assert broker.queue_size() == 1
    finally:
        broker.purge_queue()
    assert cleanup.delete_old_events() == {"events": 3, "left": 0}


def test_migrations_create_the_hourly_retention_schedule():
    schedule = Schedule.objects.get(name=cleanup.RETENTION_SCHEDULE_NAME)
    assert schedule.func == "mailing.cleanup.delete_old_events"
    assert schedule.schedule_type == Schedule.HOURLY and schedule.repeats == -1
