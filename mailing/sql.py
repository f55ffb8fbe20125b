"""The hand-written SQL of the app, all of it, in one module.

The ORM writes every other statement. These three it cannot, and each says why below (a
fourth, ``commit_without_waiting_for_disk``, is a transaction setting, not a query). They
are built the same way: table and column names come from the models, filters are written
once as querysets and compiled by the ORM (so the rule of *which* rows stays in Python),
and every value is a bound parameter; nothing from outside is ever formatted into the text.
Each one runs on SQLite and PostgreSQL (``tests/test_sql.py`` runs them on both).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import (
    CharField,
    DateTimeField,
    Expression,
    IntegerField,
    QuerySet,
    Value,
)

from mailing.models import Client, Event, Mailing, Message
from mailing.rules import SENDING_STATUSES

# The columns a fan-out fills, in the order of its SELECT.
_MESSAGE_COLUMNS = (
    "mailing_id",
    "client_id",
    "phone",
    "timezone",
    "status",
    "created_at",
    "attempts",
    "last_error",
    "next_attempt_at",
)


def insert_messages(
    clients: QuerySet[Client],
    *,
    mailing_id: int,
    status: str,
    created_at: datetime,
    next_attempt_at: Expression,
    last_error: str = "",
) -> int:
    """One message of ``mailing_id`` per client of ``clients``; returns the rows inserted.

    Hand-written because the ORM has no INSERT ... SELECT: ``bulk_create`` would bring a
    million clients into Python and send them back. ``ON CONFLICT (mailing_id, client_id)
    DO NOTHING`` against the unique index makes a repeat (a resumed or concurrent fan-out)
    insert nothing twice.
    """
    select = (
        # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT; this one is free.
        clients.filter(pk__isnull=False)
        .order_by()
        .annotate(
            _mailing=Value(mailing_id, output_field=IntegerField()),
            _status=Value(status, output_field=CharField()),
            _created=Value(created_at, output_field=DateTimeField()),
            _attempts=Value(0, output_field=IntegerField()),
            _error=Value(last_error, output_field=CharField()),
            _next=next_attempt_at,
        )
        .values_list(
            "_mailing",
            "pk",
            "phone",
            "timezone",
            "_status",
            "_created",
            "_attempts",
            "_error",
            "_next",
        )
    )
    select_sql, params = select.query.sql_with_params()
    insert_sql = (
        f"INSERT INTO {Message._meta.db_table} ({', '.join(_MESSAGE_COLUMNS)}) "
        f"{select_sql} ON CONFLICT (mailing_id, client_id) DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(insert_sql, params)
        return max(cursor.rowcount, 0)


def commit_without_waiting_for_disk() -> None:
    """This transaction's COMMIT returns before its WAL is on disk (PostgreSQL's
    ``synchronous_commit`` off, for this transaction only); nothing on SQLite.

    For fan-out chunks: waiting for each chunk's ~25 MB of WAL to be flushed was a quarter of
    a million-message fan-out (docs/benchmarks.md). It loses nothing that matters: a crash
    may forget the last chunks committed this way, but then atomically (messages, cursor and
    counters together), so the fan-out redoes them from the cursor; and none of their
    messages can have been sent, because a claim commits synchronously, which flushes the
    WAL up to and including every commit before it.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def claim_due_messages(
    mailing_id: int, worker_id: str, limit: int, now: datetime, lease_until: datetime
) -> list[tuple[int, int | None, str, str, int]]:
    """Claim up to ``limit`` due pending messages of one mailing for ``worker_id``.

    Returns ``(id, client_id, phone, timezone, attempts)`` of each row claimed.

    Hand-written because the ORM cannot express ``UPDATE ... WHERE id IN (SELECT ... ORDER
    BY ... LIMIT ... FOR UPDATE SKIP LOCKED) RETURNING``: one round trip that both picks and
    takes the rows, where concurrent workers skip each other's rows instead of waiting on
    them. SQLite has one writer at a time and no row locks, so it goes without the lock
    clause. The literal ``'pending'`` (not a parameter) lets PostgreSQL's planner match the
    partial index ``message_due_idx``.

    The mailing must still be sending when the statement runs (not only when the caller
    listed the running mailings): one paused, cancelled or deleted in between gets nothing
    claimed.
    """
    table = Message._meta.db_table
    sending = Mailing.objects.filter(pk=mailing_id, status__in=SENDING_STATUSES).values("pk")
    sending_sql, sending_params = sending.query.sql_with_params()
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    claim_sql = (
        f"UPDATE {table} SET claimed_by = %s, next_attempt_at = %s WHERE id IN ("  # noqa: S608
        f"SELECT id FROM {table} WHERE mailing_id = %s AND status = 'pending' "
        f"AND next_attempt_at <= %s AND EXISTS ({sending_sql}) "
        f"ORDER BY next_attempt_at LIMIT %s{lock}) "
        "RETURNING id, client_id, phone, timezone, attempts"
    )
    adapt = connection.ops.adapt_datetimefield_value
    params = [worker_id, adapt(lease_until), mailing_id, adapt(now), *sending_params, limit]
    with connection.cursor() as cursor:
        cursor.execute(claim_sql, params)
        return cursor.fetchall()


def settle_messages_logging_events(
    messages: QuerySet[Message],
    to_status: str,
    reason: str,
    event_kind: str,
    at: datetime,
    event_data: dict[str, object],
) -> int:
    """``messages.update(status=to_status, claimed_by=None, last_error=reason)`` that also
    inserts one ``event_kind`` event per message it changed; returns how many it changed.

    Hand-written because the events must be of exactly the rows the UPDATE changed (a
    message taken by a worker between a SELECT and the UPDATE must get none), which needs
    ``UPDATE ... RETURNING``, and the ORM's ``update()`` returns only a count.
    PostgreSQL: one statement, ``WITH changed AS (UPDATE ... RETURNING) INSERT ... SELECT``.
    SQLite (no data-modifying CTE): ``UPDATE ... RETURNING`` and a multi-row INSERT, in the
    caller's transaction (SQLite has one writer at a time).
    """
    table = Message._meta.db_table
    compiler = messages.query.get_compiler(connection=connection)
    where_sql, where_params = compiler.compile(messages.query.where)
    update_sql = (
        f"UPDATE {table} SET status = %s, claimed_by = NULL, last_error = %s "  # noqa: S608
        f"WHERE {where_sql} RETURNING id, mailing_id, client_id"
    )
    update_params: list[Any] = [to_status, reason, *where_params]
    data = json.dumps(event_data, ensure_ascii=False, sort_keys=True)
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH changed AS ({update_sql}), logged AS ("  # noqa: S608
                f"INSERT INTO {Event._meta.db_table} "
                "(kind, mailing_id, message_id, client_id, at, data) "
                "SELECT %s, mailing_id, id, client_id, %s, %s::jsonb FROM changed) "
                "SELECT count(*) FROM changed",
                [*update_params, event_kind, adapt(at), data],
            )
            return cursor.fetchone()[0]
        cursor.execute(update_sql, update_params)
        changed = cursor.fetchall()
    Event.objects.bulk_create(
        Event(
            kind=event_kind,
            mailing_id=mailing_id,
            message_id=message_id,
            client_id=client_id,
            at=at,
            data=dict(event_data),
        )
        for message_id, mailing_id, client_id in changed
    )
    return len(changed)
