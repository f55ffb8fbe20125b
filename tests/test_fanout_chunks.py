"""Fan-out in chunks: a keyset cursor on the mailing, one short transaction per chunk.

Shown here, on SQLite and PostgreSQL: the counters are exact after every chunk (``total``
is the messages that exist), a fan-out stopped after any chunk resumes where it stopped, a
worker process killed in the middle of a chunk loses only that chunk's open transaction and
another worker finishes the fan-out, and a worker that finds the cursor moved by another
does nothing. Never a duplicate message.
"""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count, Max
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailing import events, services
from mailing.engine import lifecycle
from mailing.engine.fanout import fan_out, fan_out_chunk
from mailing.models import Event, Mailing, Message, MessageStatus
from mailing.rules import FANOUT_FIRST_CHUNK, Reason
from tests.conftest import ChildProcess, make_clients, needs_postgres, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
INSERT_MESSAGES = f"INSERT INTO {Message._meta.db_table} "


def exact(mailing: Mailing) -> Mailing:
    """The mailing, reloaded, after checking that its counters are its messages' counts,
    that no client has two messages and that the cursor is the last client done."""
    mailing.refresh_from_db()
    messages = Message.objects.filter(mailing=mailing)
    by_status = dict(
        messages.order_by().values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    counted = {status: by_status.get(status, 0) for status in MessageStatus.values}
    assert mailing.counters() == {"total": sum(by_status.values())} | counted
    assert messages.values("client_id").distinct().count() == messages.count()
    if mailing.fanned_out_at is None:
        assert mailing.fanout_cursor == (messages.aggregate(m=Max("client_id"))["m"] or 0)
    return mailing


def running_mailing(**fields) -> Mailing:
    now = timezone.now()
    return services.create_mailing(
        start_at=now - timedelta(seconds=1),
        end_at=now + timedelta(hours=1),
        text="Chunked",
        **fields,
    )


def fanned_out_events(mailing: Mailing) -> list[Event]:
    return list(Event.objects.filter(mailing_id=mailing.pk, kind=events.MAILING_FANNED_OUT))


def test_counters_are_exact_after_every_chunk_and_a_stopped_fan_out_resumes(settings):
    settings.FANOUT_CHUNK_SIZE = 4
    make_clients(25, tag="vip")
    make_clients(10, tag="other", first=100)
    mailing = running_mailing(tags=["vip"])
    now = timezone.now()

    totals = []
    while exact(mailing).fanned_out_at is None:
        assert fanned_out_events(mailing) == []
        fan_out(mailing, now, max_chunks=1)
        totals.append(exact(mailing).total)
    # Seven chunks of at most four clients; the counters grew with each, never past it.
    assert totals == [4, 8, 12, 16, 20, 24, 25]
    assert mailing.pending == 25
    assert fan_out(mailing, now) == 0  # complete: nothing more, however often it is run
    [event] = fanned_out_events(mailing)
    assert event.data == {"messages": 25, "expired_at_creation": 0}


def test_an_audience_of_whole_chunks_needs_no_empty_chunk_at_the_end(settings):
    settings.FANOUT_CHUNK_SIZE = 4
    make_clients(8)
    mailing = running_mailing()
    assert fan_out(mailing, timezone.now(), max_chunks=1) == 4
    assert exact(mailing).fanned_out_at is None
    assert fan_out(mailing, timezone.now(), max_chunks=1) == 4
    assert exact(mailing).fanned_out_at is not None


def test_chunks_of_a_windowed_mailing_count_the_born_expired_exactly(settings):
    settings.FANOUT_CHUNK_SIZE = 3
    make_clients(5, timezone_name="Europe/Moscow")
    make_clients(4, timezone_name="Asia/Vladivostok", first=100)
    make_clients(3, timezone_name="Europe/Moscow", first=200)
    # 12:00 UTC: 15:00 in Moscow (inside 09-21); Vladivostok opens at 23:00 UTC, after the end.
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    mailing = services.create_mailing(
        start_at=now - timedelta(minutes=1),
        end_at=now + timedelta(hours=5),
        text="Windowed",
        send_window=services.SendWindow(time(9), time(21)),
        now=now,
    )
    while exact(mailing).fanned_out_at is None:
        fan_out(mailing, now, max_chunks=1)
    assert (mailing.total, mailing.pending, mailing.expired) == (12, 8, 4)
    expired = Message.objects.filter(mailing=mailing, status=MessageStatus.EXPIRED)
    assert set(expired.values_list("timezone", "last_error")) == {
        ("Asia/Vladivostok", Reason.WINDOW_NEVER_OPENS)
    }
    [event] = fanned_out_events(mailing)
    assert event.data == {"messages": 12, "expired_at_creation": 4}


def test_a_few_statements_per_chunk_and_one_for_the_whole_audience_at_chunk_size_0(settings):
    make_clients(505)
    settings.FANOUT_CHUNK_SIZE = 100
    chunked = running_mailing()
    with CaptureQueriesContext(connection) as queries:
        assert fan_out(chunked, timezone.now()) == 505
    chunks = message_inserts(queries)
    assert len(chunks) == 6  # 100 x 5, then the last 5
    assert all("SELECT" in sql and "ON CONFLICT" in sql for sql in chunks)
    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "SET LOCAL"))
    ]
    # Each chunk: read the cursor, find its last client, move the cursor, insert, count;
    # the last one also reads the totals and records the event. (PostgreSQL: each chunk
    # also commits without waiting for the disk, a SET LOCAL.)
    assert len(statements) == 5 * len(chunks) + 2
    exact(chunked)

    settings.FANOUT_CHUNK_SIZE = 0
    whole = running_mailing()
    with CaptureQueriesContext(connection) as queries:
        assert fan_out(whole, timezone.now()) == 505
    assert len(message_inserts(queries)) == 1
    exact(whole)


def message_inserts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith(INSERT_MESSAGES)]


def test_the_first_chunk_is_small_and_a_tick_runs_it_alone(settings):
    settings.FANOUT_CHUNK_SIZE = 50_000
    make_clients(FANOUT_FIRST_CHUNK + 500)
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    # The first messages exist (and can be claimed) before the rest of the audience.
    assert exact(mailing).total == FANOUT_FIRST_CHUNK
    assert mailing.fanned_out_at is None
    assert mailing.fanout_started_at is None  # the slice's lease is handed back
    lifecycle.tick(timezone.now())
    assert exact(mailing).total == FANOUT_FIRST_CHUNK + 500
    assert mailing.fanned_out_at is not None


# --- Real processes --------------------------------------------------------------------

# A worker process that runs the fan-out as a dispatcher's ticks do, and stops inside its
# third chunk, after that chunk's INSERT and before its commit, until the file GO appears.
WORKER = """
import os, sys, time
import django
django.setup()
from django.utils import timezone
from mailing import sql
from mailing.engine import lifecycle
from mailing.models import Mailing

GO, STOP_AT, MAILING = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
real_insert = sql.insert_messages
calls = 0

def insert_then_wait(*args, **kwargs):
    global calls
    inserted = real_insert(*args, **kwargs)
    calls += 1
    if calls == STOP_AT:
        print(f"inside chunk {calls}", flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(GO):
            if time.monotonic() > deadline:
                sys.exit(3)
            time.sleep(0.01)
    return inserted

sql.insert_messages = insert_then_wait
while not Mailing.objects.filter(pk=MAILING, fanned_out_at__isnull=False).exists():
    lifecycle.fan_out_started_mailings(timezone.now())
print("fanned out", flush=True)
"""


def start_worker(tmp_path: Path, mailing: Mailing, stop_at: int) -> tuple[ChildProcess, Path]:
    go = tmp_path / "go"
    child = ChildProcess(
        [sys.executable, "-c", WORKER, str(go), str(stop_at), str(mailing.pk)],
        cwd=ROOT,
        env=subprocess_env(FANOUT_CHUNK_SIZE="4", LOG_LEVEL="WARNING"),
    )
    wait_for(lambda: "inside chunk" in child.output()[0] or child.poll() is not None, 60)
    assert f"inside chunk {stop_at}" in child.output()[0], child.output()
    return child, go


def test_a_worker_killed_inside_a_chunk_loses_only_that_chunk_and_another_finishes(
    tmp_path, settings
):
    settings.FANOUT_CHUNK_SIZE = 4
    make_clients(30)
    mailing = running_mailing()
    child, _go = start_worker(tmp_path, mailing, stop_at=3)
    with child:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)

    # Two chunks committed; the third's INSERT died with its transaction.
    assert exact(mailing).total == 8 and mailing.fanned_out_at is None
    # Its slice's lease is still held: another dispatcher waits for it to lapse...
    held_at = mailing.fanout_started_at
    assert held_at is not None
    lifecycle.tick(held_at + lifecycle.FANOUT_GRACE - timedelta(seconds=1))
    assert exact(mailing).total == 8
    # ... then takes over, from the cursor.
    later = held_at + lifecycle.FANOUT_GRACE + timedelta(seconds=1)
    for _ in range(30):
        if exact(mailing).fanned_out_at is not None:
            break
        lifecycle.tick(later)
    assert (mailing.total, mailing.pending) == (30, 30)
    assert len(fanned_out_events(mailing)) == 1


@needs_postgres()
def test_a_worker_that_finds_the_cursor_moved_does_nothing(tmp_path, settings):
    settings.FANOUT_CHUNK_SIZE = 4
    make_clients(30)
    mailing = running_mailing()
    child, go = start_worker(tmp_path, mailing, stop_at=3)
    with child:
        # The child holds chunk 3 open; this worker starts the same chunk from the same
        # cursor and waits for the mailing's row, which the child's UPDATE holds.
        result = {}

        def other_worker() -> None:
            try:
                result["chunk"] = fan_out_chunk(mailing, timezone.now())
            finally:
                connection.close()

        thread = threading.Thread(target=other_worker)
        thread.start()
        wait_for(waiting_for_a_lock, 30)
        go.touch()  # the child commits chunk 3 and goes on
        thread.join(timeout=60)
        assert not thread.is_alive()
        wait_for(lambda: child.poll() is not None, 60)
        assert "fanned out" in child.output()[0], child.output()
    assert result["chunk"].lost and result["chunk"].created == 0
    assert exact(mailing).total == 30 and mailing.fanned_out_at is not None
    assert len(fanned_out_events(mailing)) == 1


def waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0
