"""Big deletes in the background: a deleted mailing is gone at once, its rows go in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.brokers import get_broker

from mailing import cleanup, events, selectors, services, sql
from mailing.engine import lifecycle, queue
from mailing.models import Event, Mailing, MailingStatus, Message, MessageStatus
from tests.conftest import make_clients

MESSAGE_TABLE = Message._meta.db_table

pytestmark = pytest.mark.django_db


def fanned_out_mailing(clients: int) -> Mailing:
    """A running mailing, its audience of its own (an operator code per mailing), whose
    messages exist and are due now."""
    code = f"9{Mailing.objects.count():02d}"
    make_clients(clients, operator_code=code)
    now = timezone.now()
    mailing = services.create_mailing(
        start_at=now - timedelta(seconds=1),
        end_at=now + timedelta(hours=1),
        text="Bye",
        operator_codes=[code],
    )
    lifecycle.fan_out_started_mailings(now)
    mailing.refresh_from_db()
    assert mailing.total == clients and mailing.fanned_out_at is not None
    return mailing


def statements_on(table: str, queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if table in q["sql"]]


@pytest.fixture
def broker():
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def test_delete_touches_only_the_mailing_row_and_enqueues_the_purge(
    broker, django_capture_on_commit_callbacks
):
    mailing = fanned_out_mailing(30)
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.delete_mailing(mailing)
    # Whatever its number of messages: no statement reads or writes them.
    assert statements_on(MESSAGE_TABLE, queries) == []
    assert len(queries.captured_queries) <= 8
    assert broker.queue_size() == 1
    assert mailing.status == MailingStatus.DELETING and mailing.is_deleted
    deleted = Event.objects.get(kind=events.MAILING_DELETED, mailing_id=mailing.pk)
    assert deleted.data == {"status": MailingStatus.RUNNING}
    assert Message.objects.filter(mailing=mailing).count() == 30


def test_a_deleted_mailing_is_gone_from_every_list_lookup_and_statistic():
    kept = fanned_out_mailing(2)
    gone = fanned_out_mailing(0)
    services.delete_mailing(gone)
    assert list(selectors.list_mailings()) == [kept]
    assert list(selectors.list_mailings(status=MailingStatus.DELETING)) == []
    with pytest.raises(Http404):
        selectors.get_mailing(gone.pk)
    assert [row["id"] for row in selectors.overall_stats()["mailings"]] == [kept.pk]
    overview = selectors.recent_overview()
    assert overview["recent"] == [kept] and overview["mailings_by_status"] == {"running": 1}
    with pytest.raises(services.StateConflict, match="deleting mailing cannot be deleted"):
        services.delete_mailing(gone)


def test_the_engine_claims_and_settles_nothing_of_a_mailing_being_deleted():
    mailing = fanned_out_mailing(20)
    now = timezone.now()
    services.delete_mailing(mailing)
    assert queue.claim_due("w1", 100, now, timedelta(seconds=60)) == []
    # Even a claimer that listed the mailing as running just before the delete gets
    # nothing: the claim itself asks that the mailing still sends.
    assert sql.claim_due_messages(mailing.pk, "w1", 100, now, now + timedelta(seconds=60)) == []
    lifecycle.tick(now + timedelta(hours=2))  # past its end: nothing expires or finishes
    assert set(Message.objects.filter(mailing=mailing).values_list("status", "claimed_by")) == {
        (MessageStatus.PENDING, None)
    }
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.DELETING and mailing.pending == 20


def test_a_deleted_scheduled_mailing_never_starts():
    make_clients(3)
    now = timezone.now()
    mailing = services.create_mailing(
        start_at=now + timedelta(minutes=5), end_at=now + timedelta(hours=1), text="Later"
    )
    services.delete_mailing(mailing)
    lifecycle.tick(now + timedelta(minutes=10))
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.DELETING and not Message.objects.exists()


def test_the_purge_deletes_in_batches_then_the_mailing_and_keeps_the_events():
    mailing = fanned_out_mailing(25)
    other = fanned_out_mailing(0)
    services.delete_mailing(mailing)
    with CaptureQueriesContext(connection) as queries:
        removed = cleanup.purge_deleted_mailings(batch_size=10)
    assert removed == {"messages": 25, "mailings": 1, "left": 0}
    deletes = [q for q in statements_on(MESSAGE_TABLE, queries) if q.startswith("DELETE")]
    # 10 + 10 + 5 rows by id, each its own statement and transaction; then the mailing's
    # cascade, with nothing left to delete.
    assert [q.count(",") + 1 for q in deletes[:3]] == [10, 10, 5]
    assert len(deletes) == 4 and '"mailing_id" IN' in deletes[3]
    assert not Message.objects.filter(mailing_id=mailing.pk).exists()
    assert list(Mailing.objects.all()) == [other]
    timeline = [e.kind for e in selectors.events_for(mailing_id=mailing.pk)]
    assert timeline[0] == events.MAILING_CREATED and timeline[-1] == events.MAILING_DELETED
    assert cleanup.purge_deleted_mailings() == {"messages": 0, "mailings": 0, "left": 0}


def test_a_purge_out_of_time_hands_the_rest_to_a_fresh_task(broker):
    mailing = fanned_out_mailing(5)
    services.delete_mailing(mailing)
    assert cleanup.purge_deleted_mailings(seconds=0) == {"messages": 0, "mailings": 0, "left": 1}
    assert broker.queue_size() == 1
    assert cleanup.purge_deleted_mailings() == {"messages": 5, "mailings": 1, "left": 0}


def test_migrations_create_the_purge_schedule():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name=cleanup.PURGE_SCHEDULE_NAME)
    assert schedule.func == "mailing.cleanup.purge_deleted_mailings"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.repeats == -1
