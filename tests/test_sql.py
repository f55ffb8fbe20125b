"""Each hand-written statement of ``mailing.sql``, run on the database of this pass.

The suite runs once on SQLite and once on PostgreSQL (``make test``), so every test here
runs each statement on both vendors, and checks the vendor's own form of it.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, connections, transaction
from django.db.models import DateTimeField, Value
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailing import services, sql
from mailing.models import Client, Event, Mailing, Message, MessageStatus
from tests.conftest import make_clients, needs_postgres, now_plus

ROOT = Path(__file__).resolve().parent.parent


def _mailing() -> Mailing:
    return services.create_mailing(
        start_at=timezone.now() - timedelta(seconds=1), end_at=now_plus(3600), text="Hello"
    )


def _insert(mailing: Mailing, clients, status: str = MessageStatus.PENDING, **extra) -> int:
    now = timezone.now()
    return sql.insert_messages(
        clients,
        mailing_id=mailing.pk,
        status=status,
        created_at=now,
        next_attempt_at=Value(now, output_field=DateTimeField()),
        **extra,
    )


def _statements(captured: CaptureQueriesContext, verb: str) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].lstrip().startswith(verb)]


@pytest.mark.django_db
def test_insert_messages_copies_each_client_once():
    make_clients(3, tag="a")
    make_clients(2, tag="b", first=10)
    mailing = _mailing()
    with CaptureQueriesContext(connection) as captured:
        inserted = _insert(
            mailing, Client.objects.filter(tag="a"), MessageStatus.EXPIRED, last_error="why"
        )
    assert inserted == 3
    (statement,) = _statements(captured, "INSERT")
    assert "SELECT" in statement and "ON CONFLICT (mailing_id, client_id) DO NOTHING" in statement
    rows = Message.objects.filter(mailing=mailing).order_by("client__phone")
    assert [(m.client.phone, m.phone, m.timezone, m.status, m.last_error) for m in rows] == [
        (c.phone, c.phone, c.timezone, "expired", "why")
        for c in Client.objects.filter(tag="a").order_by("phone")
    ]
    # A repeat (a resumed fan-out) inserts nothing twice; new clients still come in.
    assert _insert(mailing, Client.objects.all()) == 2
    assert Message.objects.filter(mailing=mailing).count() == 5


@pytest.mark.django_db
def test_claim_due_messages_takes_due_pending_rows_in_order_and_leases_them():
    make_clients(5)
    mailing, other = _mailing(), _mailing()
    _insert(mailing, Client.objects.all())
    _insert(other, Client.objects.all())
    now = timezone.now()
    due = list(Message.objects.filter(mailing=mailing).order_by("id"))
    # Due in reverse id order; one not due yet, one already sent.
    for offset, message in enumerate(reversed(due[:3])):
        message.next_attempt_at = now - timedelta(seconds=10 - offset)
        message.save()
    Message.objects.filter(pk=due[3].pk).update(next_attempt_at=now + timedelta(minutes=1))
    Message.objects.filter(pk=due[4].pk).update(status=MessageStatus.SENT)
    lease_until = now + timedelta(seconds=30)
    with CaptureQueriesContext(connection) as captured:
        rows = sql.claim_due_messages(mailing.pk, "w1", 2, now, lease_until)
    (statement,) = _statements(captured, "UPDATE")
    assert ("FOR UPDATE SKIP LOCKED" in statement) == (connection.vendor == "postgresql")
    # The two due longest (RETURNING has no order of its own).
    by_id = {row[0]: row[1:] for row in rows}
    assert set(by_id) == {due[2].pk, due[1].pk}
    assert by_id[due[2].pk] == (due[2].client_id, due[2].phone, due[2].timezone, 0)
    claimed = Message.objects.filter(claimed_by="w1")
    assert set(claimed.values_list("id", flat=True)) == {due[2].pk, due[1].pk}
    assert {m.next_attempt_at for m in claimed} == {lease_until}
    # Leased rows are not due again until the lease ends; the other mailing is untouched.
    assert [r[0] for r in sql.claim_due_messages(mailing.pk, "w2", 10, now, lease_until)] == [
        due[0].pk
    ]
    assert not Message.objects.filter(mailing=other).exclude(claimed_by=None).exists()


@needs_postgres()
@pytest.mark.django_db(transaction=True)
def test_claim_due_messages_skips_rows_locked_by_another_claim_on_postgres():
    make_clients(4)
    mailing = _mailing()
    _insert(mailing, Client.objects.all())
    now = timezone.now()
    held = threading.Event()
    done = threading.Event()

    def hold_two_rows() -> None:
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT id FROM mailing_message ORDER BY id LIMIT 2 FOR UPDATE", [])
                held.set()
                done.wait(10)
                cursor.execute("ROLLBACK")
        finally:
            other.close()

    holder = threading.Thread(target=hold_two_rows)
    holder.start()
    try:
        assert held.wait(10)
        with transaction.atomic():
            rows = sql.claim_due_messages(mailing.pk, "w1", 10, now, now + timedelta(seconds=30))
    finally:
        done.set()
        holder.join(10)
    first_two = list(Message.objects.order_by("id").values_list("id", flat=True)[:2])
    assert len(rows) == 2 and not {r[0] for r in rows} & set(first_two)


@pytest.mark.django_db
def test_settle_messages_logging_events_logs_exactly_the_rows_it_changed():
    make_clients(4)
    mailing = _mailing()
    _insert(mailing, Client.objects.all())
    ids = list(Message.objects.filter(mailing=mailing).order_by("id").values_list("id", flat=True))
    Message.objects.filter(pk=ids[0]).update(status=MessageStatus.SENT)
    pending = Message.objects.filter(mailing=mailing, status=MessageStatus.PENDING)
    at = timezone.now()
    with CaptureQueriesContext(connection) as captured:
        changed = sql.settle_messages_logging_events(
            pending, MessageStatus.CANCELLED, "gone", "message.cancelled", at, {"reason": "gone"}
        )
    assert changed == 3
    if connection.vendor == "postgresql":
        (statement,) = [q["sql"] for q in captured.captured_queries]
        assert statement.startswith("WITH changed AS (UPDATE") and "RETURNING" in statement
    else:
        assert len(_statements(captured, "UPDATE")) == 1
        assert "RETURNING" in _statements(captured, "UPDATE")[0]
    settled = Message.objects.filter(status=MessageStatus.CANCELLED)
    assert set(settled.values_list("id", flat=True)) == set(ids[1:])
    assert set(settled.values_list("last_error", flat=True)) == {"gone"}
    assert not settled.exclude(claimed_by=None).exists()
    events = Event.objects.filter(kind="message.cancelled").order_by("message_id")
    assert [(e.message_id, e.mailing_id, e.data, e.at) for e in events] == [
        (i, mailing.pk, {"reason": "gone"}, at) for i in ids[1:]
    ]
    # Nothing left to change: nothing changed, nothing logged.
    assert (
        sql.settle_messages_logging_events(
            pending, MessageStatus.CANCELLED, "gone", "message.cancelled", at, {}
        )
        == 0
    )
    assert Event.objects.filter(kind="message.cancelled").count() == 3


@pytest.mark.django_db(transaction=True)
def test_commit_without_waiting_for_disk_is_for_one_transaction_on_postgres():
    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    if connection.vendor != "postgresql":
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            sql.commit_without_waiting_for_disk()
        assert [q for q in queries.captured_queries if "synchronous" in q["sql"]] == []
        return
    before = setting()
    assert before != "off"
    with transaction.atomic():
        sql.commit_without_waiting_for_disk()
        assert setting() == "off"
    assert setting() == before  # LOCAL: the next transaction waits for the disk again


def test_hand_written_sql_lives_only_in_mailing_sql():
    """ORM internals and raw cursors appear nowhere else in the app (the health probe's
    ``SELECT 1`` excepted)."""
    markers = ("sql_with_params", "get_compiler(", "cursor.execute(", ".raw(", "RawSQL(")
    offenders = []
    for path in sorted((ROOT / "mailing").rglob("*.py")) + sorted(
        (ROOT / "dashboard").rglob("*.py")
    ):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "mailing/sql.py" or "/migrations/" in relative:
            continue
        text = path.read_text()
        for marker in markers:
            if marker in text and not (relative.endswith("health.py") and "SELECT 1" in text):
                offenders.append(f"{relative}: {marker}")
    assert offenders == []
