"""The message table as a queue: claim due messages under a lease, record what happened.

Claim and record are short transactions; the HTTP calls happen between them, outside any
transaction. A claim sets ``claimed_by`` and pushes ``next_attempt_at`` forward by the lease,
so the claim query is one indexed range scan per running mailing and a claim abandoned by a
dead worker becomes due again by itself when the lease runs out.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import transaction
from django.db.models import Case, DateTimeField, F, Value, When

from mailing import events, services, sql
from mailing.engine import rate
from mailing.engine.backoff import retry_delay, throttle_delay
from mailing.engine.provider import Outcome, OutgoingMessage, SendResult
from mailing.models import Mailing, MailingStatus, Message, MessageStatus
from mailing.rules import ATTEMPT_FAILED, ATTEMPT_SENT, ERROR_MAX_LENGTH, Reason
from mailing.transitions import lock_mailings, shift_counters
from mailing.windows import is_inside_window, next_window_opening

logger = logging.getLogger("mailing.engine")

_rotation = itertools.count()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message in this worker's hands, with what the recorder needs to know about it."""

    message: OutgoingMessage
    attempts: int
    end_at: datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float
    cap: float


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _settle_claimed(
    mailing_id: int, ids: list[int], worker_id: str, status: str, reason: str, now: datetime
) -> None:
    if not ids:
        return
    ours = Message.objects.filter(id__in=ids, status=MessageStatus.PENDING, claimed_by=worker_id)
    # The same mechanism as settle_pending: events for exactly the rows changed.
    changed = events.settle_with_events(ours, status, reason, events.SETTLED_KIND[status], now)
    shift_counters(mailing_id, MessageStatus.PENDING, status, changed)


@dataclass
class _Unsendable:
    """Claimed messages that must not be sent now, by what happens to them instead."""

    cancelled: list[int]
    failed: list[int]
    expired: list[int]
    deferred: dict[datetime, list[int]]

    def __bool__(self) -> bool:
        return bool(self.cancelled or self.failed or self.expired or self.deferred)


def _sort_claimed_rows(rows, mailing_row, now: datetime) -> tuple[list[Claimed], _Unsendable]:
    mailing_id, end_at, text, window_start, window_end = mailing_row
    sendable: list[Claimed] = []
    unsendable = _Unsendable([], [], [], defaultdict(list))
    for message_id, client_id, phone, zone_name, attempts in rows:
        if client_id is None:
            unsendable.cancelled.append(message_id)
            continue
        if window_start is not None:
            zone = _zone(zone_name)
            if zone is None:
                unsendable.failed.append(message_id)
                continue
            if not is_inside_window(now, zone, window_start, window_end):
                opening = next_window_opening(now, zone, window_start, window_end)
                if opening >= end_at:
                    unsendable.expired.append(message_id)
                else:
                    unsendable.deferred[opening].append(message_id)
                continue
        message = OutgoingMessage(message_id, phone, text, mailing_id, client_id)
        sendable.append(Claimed(message, attempts, end_at))
    return sendable, unsendable


def _settle_unsendable(
    mailing_id: int, worker_id: str, unsendable: _Unsendable, now: datetime
) -> None:
    with transaction.atomic():
        lock_mailings([mailing_id])
        _settle_claimed(
            mailing_id,
            unsendable.cancelled,
            worker_id,
            MessageStatus.CANCELLED,
            Reason.CLIENT_DELETED,
            now,
        )
        _settle_claimed(
            mailing_id,
            unsendable.failed,
            worker_id,
            MessageStatus.FAILED,
            Reason.UNKNOWN_TIMEZONE,
            now,
        )
        _settle_claimed(
            mailing_id,
            unsendable.expired,
            worker_id,
            MessageStatus.EXPIRED,
            Reason.WINDOW_NEVER_OPENS,
            now,
        )
        for opening, ids in unsendable.deferred.items():
            Message.objects.filter(id__in=ids, claimed_by=worker_id).update(
                claimed_by=None, next_attempt_at=opening
            )


def claim_due(worker_id: str, limit: int, now: datetime, lease: timedelta) -> list[Claimed]:
    """Claim up to ``limit`` due messages of running mailings, shared fairly between them.

    Claimed messages that may not be sent now are dealt with at once: a deleted client's
    message is cancelled, and one outside its client's window waits for the window (or
    expires when the window only opens after the mailing's end).
    """
    if limit <= 0:
        return []
    rows_of_mailings = list(
        Mailing.objects.filter(status=MailingStatus.RUNNING, end_at__gt=now, pending__gt=0)
        .order_by("id")
        .values_list("id", "end_at", "text", "window_start", "window_end", "rate_limit")
    )
    if not rows_of_mailings:
        return []
    shift = next(_rotation) % len(rows_of_mailings)
    rows_of_mailings = rows_of_mailings[shift:] + rows_of_mailings[:shift]
    mailings = [row[:5] for row in rows_of_mailings]
    # A mailing with a send rate of its own gets no more than its bucket grants (taken in a
    # short transaction first, so the claim below still locks message rows only).
    limits = {row[0]: row[5] for row in rows_of_mailings if row[5]}
    permits = rate.acquire_mailing_permits(limits, limit, now)
    used: dict[int, int] = {}
    claimed: list[Claimed] = []
    to_settle: list[tuple[int, _Unsendable]] = []
    # The claim touches message rows only; settling the unsendable ones takes the mailing
    # lock in a transaction of its own, so lock order stays "mailing, then messages".
    with transaction.atomic():
        for position, mailing_row in enumerate(mailings):
            remaining = limit - len(claimed)
            if remaining <= 0:
                break
            mailing_id = mailing_row[0]
            quota = -(-remaining // (len(mailings) - position))
            quota = min(quota, permits.get(mailing_id, quota))
            if quota <= 0:
                continue
            rows = sql.claim_due_messages(mailing_id, worker_id, quota, now, now + lease)
            sendable, unsendable = _sort_claimed_rows(rows, mailing_row, now)
            used[mailing_id] = len(sendable)
            claimed.extend(sendable)
            if unsendable:
                to_settle.append((mailing_id, unsendable))
    rate.give_back_mailing_permits(
        {mailing_id: granted - used.get(mailing_id, 0) for mailing_id, granted in permits.items()},
        limits,
    )
    for mailing_id, unsendable in sorted(to_settle, key=lambda item: item[0]):
        _settle_unsendable(mailing_id, worker_id, unsendable, now)
    return claimed


# --- Recording ----------------------------------------------------------------------


def _record_accepted(mailing_id: int, ids: list[int], now: datetime) -> None:
    values = {"sent_at": now, "claimed_by": None, "last_error": "", "attempts": F("attempts") + 1}
    # Whatever happened meanwhile, an accepted message is sent: the provider delivers it.
    sent = Message.objects.filter(id__in=ids, status=MessageStatus.PENDING).update(
        status=MessageStatus.SENT, **values
    )
    shift_counters(mailing_id, MessageStatus.PENDING, MessageStatus.SENT, sent)
    if sent < len(ids):
        for status in (MessageStatus.EXPIRED, MessageStatus.CANCELLED):
            late = Message.objects.filter(id__in=ids, status=status).update(
                status=MessageStatus.SENT, **values
            )
            shift_counters(mailing_id, status, MessageStatus.SENT, late)


def _record_failed(mailing_id: int, results: list[SendResult], worker_id: str) -> None:
    by_reason: dict[str, list[int]] = defaultdict(list)
    for result in results:
        by_reason[result.detail[:ERROR_MAX_LENGTH]].append(result.message_id)
    for reason, ids in by_reason.items():
        failed = Message.objects.filter(
            id__in=ids, status=MessageStatus.PENDING, claimed_by=worker_id
        ).update(
            status=MessageStatus.FAILED,
            claimed_by=None,
            last_error=reason,
            attempts=F("attempts") + 1,
        )
        shift_counters(mailing_id, MessageStatus.PENDING, MessageStatus.FAILED, failed)


def _next_attempt(claim: Claimed, result: SendResult, policy: RetryPolicy, now: datetime, rng):
    attempts = claim.attempts + 1
    if result.outcome == Outcome.THROTTLED:
        delay = throttle_delay(result.retry_after, attempts, policy.base, policy.cap, rng)
    else:
        delay = retry_delay(attempts, policy.base, policy.cap, rng)
    return now + timedelta(seconds=delay)


def _record_retries(
    pairs: list[tuple[Claimed, SendResult]],
    worker_id: str,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
) -> None:
    by_reason: dict[str, list[tuple[Claimed, SendResult]]] = defaultdict(list)
    for claim, result in pairs:
        by_reason[result.detail[:ERROR_MAX_LENGTH]].append((claim, result))
    for reason, group in by_reason.items():
        when = Case(
            *(
                When(
                    pk=claim.message.message_id,
                    then=Value(_next_attempt(claim, result, policy, now, rng)),
                )
                for claim, result in group
            ),
            output_field=DateTimeField(),
        )
        Message.objects.filter(
            id__in=[claim.message.message_id for claim, _ in group],
            status=MessageStatus.PENDING,
            claimed_by=worker_id,
        ).update(
            next_attempt_at=when, last_error=reason, attempts=F("attempts") + 1, claimed_by=None
        )


def release(ids: list[int], worker_id: str, now: datetime, reason: str | None = None) -> None:
    """Hand messages back unsent and unburned (no attempt counted): due again at once."""
    values: dict[str, object] = {"claimed_by": None, "next_attempt_at": now}
    if reason is not None:
        values["last_error"] = reason
    Message.objects.filter(id__in=ids, status=MessageStatus.PENDING, claimed_by=worker_id).update(
        **values
    )


def record_results(
    worker_id: str,
    outcomes: list[tuple[Claimed, SendResult | None]],
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> None:
    """Write a batch of results back in one transaction, a few statements per mailing.

    ``None`` as a result means the message was not sent (the mailing's end came, or the
    worker is stopping): it is released, not counted as an attempt.
    """
    rng = rng or random.Random()
    by_mailing: dict[int, list[tuple[Claimed, SendResult | None]]] = defaultdict(list)
    for claim, result in outcomes:
        by_mailing[claim.message.mailing_id].append((claim, result))
    with transaction.atomic():
        lock_mailings(by_mailing)
        for mailing_id in sorted(by_mailing):
            group = by_mailing[mailing_id]
            accepted = [
                c.message.message_id for c, r in group if r and r.outcome == Outcome.ACCEPTED
            ]
            rejected = [r for _, r in group if r and r.outcome == Outcome.REJECTED]
            retries = [
                (c, r) for c, r in group if r and r.outcome in (Outcome.RETRY, Outcome.THROTTLED)
            ]
            unauthorized = [
                c.message.message_id for c, r in group if r and r.outcome == Outcome.UNAUTHORIZED
            ]
            unsent = [c.message.message_id for c, r in group if r is None]
            if accepted:
                _record_accepted(mailing_id, accepted, now)
            if rejected:
                _record_failed(mailing_id, rejected, worker_id)
            if retries:
                _record_retries(retries, worker_id, policy, now, rng)
            if unauthorized:
                release(unauthorized, worker_id, now, Reason.CREDENTIALS_REFUSED)
            if unsent:
                release(unsent, worker_id, now)
            # The guard rail: what the provider decided about each message, in order.
            services.note_attempts(
                mailing_id,
                "".join(
                    ATTEMPT_SENT if r.outcome == Outcome.ACCEPTED else ATTEMPT_FAILED
                    for _, r in group
                    if r and r.outcome in (Outcome.ACCEPTED, Outcome.REJECTED)
                ),
                now,
            )
        # One event per attempt, one multi-row INSERT for the whole batch.
        events.record_attempts(
            (
                (claim.message.mailing_id, claim.message.message_id, claim.message.client_id, r)
                for claim, r in outcomes
                if r is not None
            ),
            now,
        )
