"""The event table: the timelines of mailings, messages and clients.

Services record what staff and API callers did (client created, mailing paused, ...); the
engine records what happened to mailings (started, fanned out, finished) and to messages.
Message events are written in bulk, in the transaction that changes the messages:

- one row per send attempt, from ``record_attempts`` (called by ``queue.record_results``
  with the whole batch: one multi-row INSERT, not one per message);
- one row per message expired or cancelled, from ``settle_with_events``: a single
  ``UPDATE ... RETURNING`` feeding an ``INSERT ... SELECT`` on PostgreSQL (``mailing.sql``).

A fan-out writes ONE mailing event ("fan-out created N messages"), never one per message:
a message's timeline starts with its mailing's fan-out event (see ``selectors.events_for``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.utils import timezone

from mailing import sql
from mailing.actors import Actor
from mailing.models import Event, Message, MessageStatus
from mailing.rules import ERROR_MAX_LENGTH

if TYPE_CHECKING:  # (the engine records through this module; only its type is needed here)
    from mailing.engine.provider import SendResult

# Kinds, by subject.
CLIENT_CREATED = "client.created"
CLIENT_UPDATED = "client.updated"
CLIENT_DELETED = "client.deleted"
MAILING_CREATED = "mailing.created"
MAILING_UPDATED = "mailing.updated"
MAILING_LAUNCHED = "mailing.launched"
MAILING_TEST_SENT = "mailing.test_sent"
MAILING_CLONED = "mailing.cloned"
MAILING_RESENT = "mailing.resent"
MAILING_PAUSED = "mailing.paused"
MAILING_RESUMED = "mailing.resumed"
MAILING_CANCELLED = "mailing.cancelled"
MAILING_DELETED = "mailing.deleted"
MAILING_STARTED = "mailing.started"
MAILING_FANNED_OUT = "mailing.fanned_out"
MAILING_MESSAGES_EXPIRED = "mailing.messages_expired"
MAILING_FINISHED = "mailing.finished"
OPT_OUT_ADDED = "opt_out.added"
OPT_OUT_REMOVED = "opt_out.removed"
TOKEN_ISSUED = "token.issued"  # noqa: S105 (an event kind)
TOKEN_REVOKED = "token.revoked"  # noqa: S105
# Message kinds: one per attempt outcome, then the final statuses set without an attempt.
MESSAGE_SEND_PREFIX = "message.send_"  # + accepted / rejected / retry / throttled / unauthorized
MESSAGE_EXPIRED = "message.expired"
MESSAGE_CANCELLED = "message.cancelled"
MESSAGE_FAILED = "message.failed"
# The event of a message given a final status without a send attempt.
SETTLED_KIND: dict[str, str] = {
    MessageStatus.EXPIRED: MESSAGE_EXPIRED,
    MessageStatus.CANCELLED: MESSAGE_CANCELLED,
    MessageStatus.FAILED: MESSAGE_FAILED,
}

# The mailing events that also begin each of its messages' timelines.
MESSAGE_TIMELINE_MAILING_KINDS = (MAILING_FANNED_OUT,)


def record(
    kind: str,
    *,
    mailing_id: int | None = None,
    message_id: int | None = None,
    client_id: int | None = None,
    at: datetime | None = None,
    actor: Actor | None = None,
    **data: object,
) -> Event:
    """One event (services and lifecycle steps: a handful per user action or tick).

    ``actor`` is who did it, for what staff do; None for what the service does by itself.
    """
    return Event.objects.create(
        kind=kind,
        mailing_id=mailing_id,
        message_id=message_id,
        client_id=client_id,
        at=at or timezone.now(),
        data=data,
        **actor_columns(actor),
    )


def actor_columns(actor: Actor | None) -> dict[str, object]:
    """An actor as the event's columns (also for bulk-built events)."""
    if actor is None:
        return {}
    return {"actor_id": actor.user_id, "actor_name": actor.name, "actor_token": actor.token}


def record_attempts(rows: Iterable[tuple[int, int, int | None, SendResult]], at: datetime) -> None:
    """One event per send attempt, in one multi-row INSERT.

    ``rows`` are ``(mailing_id, message_id, client_id, SendResult)``; attempts counts the
    one just made. Called inside the transaction that records the results.
    """
    events = []
    for mailing_id, message_id, client_id, result in rows:
        data: dict[str, object] = {"latency_ms": round(result.latency * 1000, 1)}
        if result.status_code is not None:
            data["status_code"] = result.status_code
        if result.detail:
            data["detail"] = result.detail[:ERROR_MAX_LENGTH]
        if result.retry_after is not None:
            data["retry_after"] = result.retry_after
        events.append(
            Event(
                kind=MESSAGE_SEND_PREFIX + result.outcome.value,
                mailing_id=mailing_id,
                message_id=message_id,
                client_id=client_id,
                at=at,
                data=data,
            )
        )
    if events:
        Event.objects.bulk_create(events)


def settle_with_events(
    messages: QuerySet[Message], to_status: str, reason: str, kind: str, at: datetime
) -> int:
    """``messages.update(status=to_status, claimed_by=None, last_error=reason)`` that also
    writes one ``kind`` event per message it changed; returns how many it changed.

    The statement is in ``mailing.sql`` (one statement on PostgreSQL).
    """
    return sql.settle_messages_logging_events(
        messages, to_status, reason, kind, at, {"reason": reason} if reason else {}
    )
