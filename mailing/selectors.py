"""Reads: audience matching, lists and statistics. Statistics read the mailing counters,
so their cost grows with the number of mailings, never with the number of messages."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.shortcuts import get_object_or_404
from django.utils import timezone

from mailing import audience, phones, rules
from mailing.events import MAILING_TEST_SENT, MESSAGE_TIMELINE_MAILING_KINDS
from mailing.models import (
    COUNTER_FIELDS,
    ApiToken,
    Client,
    ClientImport,
    ClientImportError,
    DispatcherSlot,
    Event,
    Mailing,
    MailingStatus,
    Message,
    MessageStatus,
    OptOut,
    ProviderState,
)
from mailing.rules import (
    DELETED_STATUSES,
    FAILURE_REASONS_SHOWN,
    FAILURE_SAMPLE,
    IMPORT_ERRORS_SHOWN,
    OPERATOR_CODE_REGEX,
    RECENT_MAILINGS,
    SEND_HEALTH_WINDOW_SECONDS,
    TIMELINE_LENGTH,
    SendWindow,
)
from mailing.segments import Segments
from mailing.segments import count as count_segments
from mailing.windows import next_window_opening


def audience_filter(operator_codes: list[str], tags: list[str]) -> Q:
    """A client matches when its code is listed (or none is) AND its tag is (or none is)."""
    condition = Q()
    if operator_codes:
        condition &= Q(operator_code__in=operator_codes)
    if tags:
        condition &= Q(tag__in=tags)
    return condition


def matching_clients(operator_codes: list[str], tags: list[str]) -> QuerySet[Client]:
    """The clients a mailing with this filter texts: matching it, and not opted out."""
    return Client.objects.filter(audience_filter(operator_codes, tags)).filter(
        audience.not_opted_out()
    )


def audience_of(mailing: Mailing, *, with_opted_out: bool = False) -> QuerySet[Client]:
    """The clients a mailing texts: its filter's, or for a resend the clients whose messages
    in its source ended in the chosen statuses (a subquery: set-based at any size); never
    an opted-out phone unless asked (to count them)."""
    if mailing.resend_of is None:
        clients = Client.objects.filter(audience_filter(mailing.operator_codes, mailing.tags))
    else:
        unreached = Message.objects.filter(
            mailing_id=mailing.resend_of,
            status__in=mailing.resend_statuses,
            client_id__isnull=False,
        ).values("client_id")
        clients = Client.objects.filter(pk__in=unreached)
    return clients if with_opted_out else clients.filter(audience.not_opted_out())


def resends_of(mailing: Mailing) -> QuerySet[Mailing]:
    return Mailing.objects.filter(resend_of=mailing.pk).order_by("id")


def list_clients(*, tag: str | None = None, operator_code: str | None = None) -> QuerySet[Client]:
    clients = Client.objects.order_by("id")
    if tag is not None:
        clients = clients.filter(tag=tag)
    if operator_code is not None:
        clients = clients.filter(operator_code=operator_code)
    return clients


def client_search(text: str) -> Q:
    """The clients a search box's text finds: by any part of the phone in any common
    notation (``mailing.phones.search_query``), by tag (any part, any case), by operator
    code (exactly) or by time zone (any part)."""
    text = text.strip()
    if not text:
        return Q()
    condition = Q(tag__icontains=text) | Q(timezone__icontains=text)
    phone = phones.search_query(text)
    if phone is not None:
        condition |= Q(**{f"phone__{phone.lookup}": phone.digits})
    if re.fullmatch(OPERATOR_CODE_REGEX, text):
        condition |= Q(operator_code=text)
    return condition


def count_and_last_id(clients: QuerySet[Client]) -> tuple[int, int | None]:
    """How many clients a set holds and its highest id (what a bulk action confirms)."""
    found = clients.order_by().aggregate(count=Count("pk"), last=Max("pk"))
    return found["count"], found["last"]


def existing_phones(phones: list[str]) -> set[str]:
    """Which of these phones some client already has."""
    return set(Client.objects.filter(phone__in=phones).values_list("phone", flat=True))


def client_count() -> int:
    return Client.objects.count()


def mailing_ids() -> list[int]:
    """Every mailing's id, deleted ones included, in order (what a counter check walks)."""
    return list(Mailing.objects.order_by("id").values_list("id", flat=True))


def visible_mailings() -> QuerySet[Mailing]:
    """Every mailing staff can see: a deleted one is gone at once from every list, lookup
    and statistic, while the background purge still removes its rows."""
    return Mailing.objects.exclude(status__in=DELETED_STATUSES)


def get_mailing(mailing_id: int) -> Mailing:
    """The mailing of a URL; Http404 when there is none, or it was deleted."""
    return get_object_or_404(visible_mailings(), pk=mailing_id)


def get_client(client_id: int) -> Client:
    """The client of a URL; Http404 when there is none."""
    return get_object_or_404(Client, pk=client_id)


def get_token(token_id: int, user_id: int) -> ApiToken:
    """One of a staff member's API tokens; Http404 when it is not theirs or not there."""
    return get_object_or_404(ApiToken, pk=token_id, user_id=user_id)


def deleted_mailing_ids() -> list[int]:
    """Mailings deleted whose rows the purge has still to remove, oldest first."""
    return list(
        Mailing.objects.filter(status__in=DELETED_STATUSES)
        .order_by("id")
        .values_list("id", flat=True)
    )


def recent_client_imports(limit: int = RECENT_MAILINGS) -> QuerySet[ClientImport]:
    """The latest CSV imports, for the import page (each links to its own)."""
    return ClientImport.objects.defer("data").order_by("-id")[:limit]


def get_client_import(import_id: int) -> ClientImport:
    """The import of a URL (without its file's bytes); Http404 when there is none."""
    return get_object_or_404(ClientImport.objects.defer("data"), pk=import_id)


def client_import_errors(record: ClientImport) -> QuerySet[ClientImportError]:
    return ClientImportError.objects.filter(client_import=record).order_by("line", "id")


def client_import_errors_shown(record: ClientImport) -> list[ClientImportError]:
    """The first invalid rows, for the import's page (the download has them all)."""
    return list(client_import_errors(record)[:IMPORT_ERRORS_SHOWN])


def list_opt_outs(*, search: str | None = None) -> QuerySet[OptOut]:
    """Opted-out phones, newest first; ``search``: digits anywhere in the phone."""
    entries = OptOut.objects.order_by("-id")
    if search:
        entries = entries.filter(phone__contains=search)
    return entries


def opt_out_of(phone: str) -> OptOut | None:
    return OptOut.objects.filter(phone=phone).first()


def list_mailings(*, status: str | None = None) -> QuerySet[Mailing]:
    mailings = visible_mailings().order_by("-id")
    if status is not None:
        mailings = mailings.filter(status=status)
    return mailings


def list_messages(mailing: Mailing, *, status: str | None = None) -> QuerySet[Message]:
    messages = Message.objects.filter(mailing=mailing).order_by("id")
    if status is not None:
        messages = messages.filter(status=status)
    return messages


def preview_audience(
    *,
    operator_codes: list[str],
    tags: list[str],
    window: SendWindow | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    clients: QuerySet[Client] | None = None,
) -> dict[str, int]:
    """How many clients a filter (or ``clients``) matches and how many of them opted out; of
    the rest, with a window and a period, how many have their window open inside it."""
    if clients is None:
        clients = Client.objects.filter(audience_filter(operator_codes, tags))
    rows = (
        clients.order_by()
        .values_list("timezone")
        .annotate(n=Count("id"), out=Count("id", filter=Q(audience.opted_out())))
        .values_list("timezone", "n", "out")
    )
    per_zone: dict[str, int] = {}
    matching = opted_out = 0
    for zone, n, out in rows:
        matching, opted_out = matching + n, opted_out + out
        if n > out:
            per_zone[zone] = n - out
    reachable = matching - opted_out
    if window is not None and start_at is not None and end_at is not None:
        reachable = sum(
            count
            for zone, count in per_zone.items()
            if next_window_opening(start_at, ZoneInfo(zone), window.start, window.end) < end_at
        )
    return {
        "matching": matching,
        "opted_out": opted_out,
        "reachable": reachable,
        "timezones": len(per_zone),
    }


def failure_reasons(
    mailing: Mailing, limit: int = FAILURE_REASONS_SHOWN
) -> list[dict[str, object]]:
    """The most common reasons among the latest failures (a bounded sample, so this stays
    cheap on a mailing with millions of messages)."""
    latest_failed = (
        Message.objects.filter(mailing=mailing, status=MessageStatus.FAILED)
        .order_by("-id")
        .values("id")[:FAILURE_SAMPLE]
    )
    rows = (
        Message.objects.filter(id__in=latest_failed)
        .values("last_error")
        .annotate(count=Count("id"))
        .order_by("-count", "last_error")[:limit]
    )
    return [{"reason": row["last_error"], "count": row["count"]} for row in rows]


class MailingStats(TypedDict):
    mailing_id: int
    status: str
    stats: dict[str, int]
    progress: float
    fanned_out: bool
    failure_reasons: list[dict[str, object]]


def mailing_stats(mailing: Mailing) -> MailingStats:
    counters = mailing.counters()
    return {
        "mailing_id": mailing.pk,
        "status": mailing.status,
        "stats": counters,
        "progress": mailing.progress,
        "fanned_out": mailing.fanned_out_at is not None,
        "failure_reasons": failure_reasons(mailing) if counters["failed"] else [],
    }


def overall_stats() -> dict[str, object]:
    """Every mailing's counters, their totals and the mailings per status: one query, one
    row per mailing (the totals are summed here rather than by two more queries)."""
    names = ("total", *COUNTER_FIELDS)
    rows = visible_mailings().order_by("-id").values_list("id", "status", *names)
    mailings = []
    totals = dict.fromkeys(names, 0)
    by_status: dict[str, int] = {}
    for mailing_id, status, *counts in rows:
        stats = dict(zip(names, counts, strict=True))
        for name, value in stats.items():
            totals[name] += value
        by_status[status] = by_status.get(status, 0) + 1
        mailings.append({"id": mailing_id, "status": status, "stats": stats})
    return {"mailings": mailings, "totals": totals, "mailings_by_status": by_status}


# A dispatcher renews its heartbeat every tick; one silent for longer than this is not alive.
DISPATCHER_ALIVE_WITHIN = timedelta(seconds=10)


class DispatcherHealth(TypedDict):
    slot: int
    circuit_state: str
    window: int | None
    heartbeat_at: datetime | None
    alive: bool


class ProviderHealth(TypedDict):
    paused_for_credentials: bool
    auth_error: str
    auth_failed_at: datetime | None
    dispatchers: list[DispatcherHealth]


def provider_health(now: datetime | None = None) -> ProviderHealth:
    """The send API as the workers see it: refused credentials, and each dispatcher's
    circuit and concurrency window."""
    now = now or timezone.now()
    state = ProviderState.objects.filter(pk=1).values("auth_failed_at", "auth_error").first()
    state = state or {"auth_failed_at": None, "auth_error": ""}
    dispatchers: list[DispatcherHealth] = [
        {
            "slot": slot.slot,
            "circuit_state": slot.circuit_state,
            "window": slot.send_window,
            "heartbeat_at": slot.heartbeat_at,
            "alive": slot.heartbeat_at is not None
            and slot.heartbeat_at >= now - DISPATCHER_ALIVE_WITHIN,
        }
        for slot in DispatcherSlot.objects.order_by("slot")
    ]
    return {
        "paused_for_credentials": state["auth_failed_at"] is not None,
        "auth_error": state["auth_error"],
        "auth_failed_at": state["auth_failed_at"],
        "dispatchers": dispatchers,
    }


# --- Staff UI -------------------------------------------------------------------------


def find_user(username: str, *, staff_only: bool = False) -> User | None:
    """The user with this username (only if staff, with ``staff_only``), or None."""
    user_model = get_user_model()
    users = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username})
    if staff_only:
        users = users.filter(is_staff=True)
    return users.first()


def live_tokens_named(user_id: int, name: str) -> QuerySet[ApiToken]:
    """A staff member's unrevoked tokens with this label."""
    return ApiToken.objects.filter(user_id=user_id, name=name, revoked_at__isnull=True)


def tokens_of(user_id: int) -> QuerySet[ApiToken]:
    """A staff member's API tokens, newest first."""
    return ApiToken.objects.filter(user_id=user_id).order_by("-id")


def messages_with_mailing() -> QuerySet[Message]:
    """Messages, each with its mailing (a message's page shows both)."""
    return Message.objects.select_related("mailing")


def message_rows(mailing: Mailing, columns: tuple[str, ...]) -> QuerySet[Message, tuple]:
    """A mailing's messages as plain rows of ``columns``, by id (the CSV export)."""
    return Message.objects.filter(mailing=mailing).order_by("id").values_list(*columns)


def clients_by_ids(ids: list[int]) -> QuerySet[Client]:
    return Client.objects.filter(pk__in=ids)


def operator_code_choices() -> list[str]:
    """Every operator code some client has (the choices of a mailing's filter)."""
    return list(
        Client.objects.order_by("operator_code").values_list("operator_code", flat=True).distinct()
    )


def tag_choices() -> list[str]:
    """Every non-empty tag some client has."""
    return list(
        Client.objects.exclude(tag="").order_by("tag").values_list("tag", flat=True).distinct()
    )


def recent_overview(limit: int = RECENT_MAILINGS) -> dict[str, object]:
    """Totals over every mailing (counters, so no message scan) and the latest mailings."""
    totals = visible_mailings().aggregate(
        total=Sum("total"), **{name: Sum(name) for name in COUNTER_FIELDS}
    )
    by_status = dict(
        visible_mailings()
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return {
        "totals": {name: value or 0 for name, value in totals.items()},
        "mailings_by_status": by_status,
        "recent": list(visible_mailings().order_by("-id")[:limit]),
    }


def send_api_health(now: datetime | None = None) -> dict[str, object]:
    """Latency p50/p95, error rate and calls of the last minute, over live dispatchers.

    Each dispatcher stores its own last minute on its slot; the percentiles shown are the
    request-weighted mean of theirs (exact with one dispatcher, close enough with a few)."""
    now = now or timezone.now()
    rows = list(
        DispatcherSlot.objects.filter(
            send_health_at__gte=now - timedelta(seconds=30), send_requests__gt=0
        ).values("send_requests", "send_p50_ms", "send_p95_ms", "send_error_rate")
    )
    requests = sum(row["send_requests"] for row in rows)
    if not requests:
        return {"requests": 0, "p50_ms": None, "p95_ms": None, "error_rate": None}

    def weighted(name: Literal["send_p50_ms", "send_p95_ms", "send_error_rate"]) -> float:
        # (A slot that counted requests stored their figures too: `or` only satisfies the type.)
        return sum((row[name] or 0.0) * row["send_requests"] for row in rows) / requests

    return {
        "requests": requests,
        "p50_ms": round(weighted("send_p50_ms"), 1),
        "p95_ms": round(weighted("send_p95_ms"), 1),
        "error_rate": weighted("send_error_rate"),
    }


def measured_send_rate(now: datetime | None = None) -> float | None:
    """Send API calls per second over the live dispatchers' last minute (None: none)."""
    requests = send_api_health(now)["requests"]
    assert isinstance(requests, int)
    return requests / SEND_HEALTH_WINDOW_SECONDS if requests else None


def launch_review(mailing: Mailing, now: datetime | None = None) -> dict[str, Any]:
    """What "Check and send" shows before a draft is launched: who it reaches and why the
    rest cannot be, what one message is billed as and the total, when it starts and how long
    it should take at the measured send rate (else the configured limit)."""
    now = now or timezone.now()
    starts_at = max(mailing.start_at, now)
    audience = preview_audience(
        operator_codes=list(mailing.operator_codes),
        tags=list(mailing.tags),
        window=mailing.send_window,
        start_at=starts_at,
        end_at=mailing.end_at,
        clients=audience_of(mailing, with_opted_out=True),
    )
    counted: Segments = count_segments(mailing.text)
    reachable = audience["reachable"]
    rate, rate_source = measured_send_rate(now), "measured"
    if rate is None and settings.SEND_RATE_LIMIT > 0:
        rate, rate_source = float(settings.SEND_RATE_LIMIT), "limit"
    return {
        "matching": audience["matching"],
        "reachable": reachable,
        "opted_out": audience["opted_out"],
        "outside_window": audience["matching"] - audience["opted_out"] - reachable,
        "segments": counted,
        "total_parts": reachable * counted.parts,
        "starts_now": mailing.start_at <= now,
        "starts_in_seconds": max((mailing.start_at - now).total_seconds(), 0.0),
        "starts_at": starts_at,
        "ended": mailing.end_at <= now,
        "send_rate": rate,
        "rate_source": rate_source if rate is not None else "",
        "duration_seconds": reachable / rate if rate else None,
        "typed_confirmation": rules.needs_typed_confirmation(
            reachable, settings.LAUNCH_CONFIRM_THRESHOLD
        ),
    }


# --- Timelines (the event table) -----------------------------------------------------


def events_for(
    *,
    mailing_id: int | None = None,
    message_id: int | None = None,
    client_id: int | None = None,
) -> QuerySet[Event]:
    """The timeline of exactly one mailing, message or client, oldest first.

    - a mailing: its own events (created, started, fan-out, paused, ..., finished), not its
      messages' (a mailing may have millions);
    - a message: its mailing's fan-out (where every message's life begins) and its own
      events (each send attempt, expiry, cancellation);
    - a client: its own events and those of its messages in every mailing.
    Each reads one partial index (see ``Event.Meta``).
    """
    given = [value is not None for value in (mailing_id, message_id, client_id)]
    if sum(given) != 1:
        raise ValueError("give exactly one of mailing_id, message_id, client_id")
    events = Event.objects.order_by("id")
    if mailing_id is not None:
        return events.filter(mailing_id=mailing_id, message_id__isnull=True)
    if client_id is not None:
        return events.filter(client_id=client_id)
    assert message_id is not None  # (exactly one was given)
    mailing_of_message = (
        Message.objects.filter(pk=message_id).values_list("mailing_id", flat=True).first()
    )
    if mailing_of_message is None:  # the message is gone: its events still know the mailing
        mailing_of_message = (
            Event.objects.filter(message_id=message_id).values_list("mailing_id", flat=True).first()
        )
    condition = Q(message_id=message_id)
    if mailing_of_message is not None:
        condition |= Q(
            mailing_id=mailing_of_message,
            message_id__isnull=True,
            kind__in=MESSAGE_TIMELINE_MAILING_KINDS,
        )
    return events.filter(condition)


def timeline_of(
    model: type[Client] | type[Mailing] | type[Message], object_id: int, **selector: int
) -> QuerySet[Event] | None:
    """The events of one object (``events_for``), or None when neither the object nor any
    event of it exists (the events of a deleted client or mailing stay readable)."""
    events = events_for(**selector)
    if not model.objects.filter(pk=object_id).exists() and not events.exists():
        return None
    return events


def test_sends_since(user_id: int, since: datetime) -> int:
    """How many test sends a staff member made since then (the actor index)."""
    return Event.objects.filter(actor_id=user_id, kind=MAILING_TEST_SENT, at__gte=since).count()


def last_test_phone(user_id: int | None) -> str:
    """The phone a staff member last sent a test to ("" if none)."""
    if user_id is None:
        return ""
    data = (
        Event.objects.filter(actor_id=user_id, kind=MAILING_TEST_SENT)
        .order_by("-id")
        .values_list("data", flat=True)
        .first()
    )
    return str((data or {}).get("phone", ""))


def latest_events(events: QuerySet[Event], limit: int = TIMELINE_LENGTH) -> list[Event]:
    """The last ``limit`` events of a timeline, oldest first (a page shows the recent past)."""
    return list(reversed(events.order_by("-id")[:limit]))


# --- Operations (the database gauges of /metrics) --------------------------------------


def message_counter_totals() -> dict[str, int]:
    """Messages by status, summed over every mailing's counters (one aggregate)."""
    totals = Mailing.objects.aggregate(**{name: Sum(name) for name in COUNTER_FIELDS})
    return {name: totals[name] or 0 for name in COUNTER_FIELDS}


def mailing_counts_by_status() -> dict[str, int]:
    """How many mailings are in each status (statuses with none are absent)."""
    return dict(
        Mailing.objects.order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )


def due_message_count(now: datetime, cap: int) -> int:
    """Pending messages of running mailings that are due at ``now``, counted up to ``cap``:
    one bounded range scan of the partial due index per running mailing, never a full count."""
    due = 0
    running = Mailing.objects.filter(
        status=MailingStatus.RUNNING, end_at__gt=now, pending__gt=0
    ).values_list("id", flat=True)
    for mailing_id in running:
        if due >= cap:
            break
        due += (
            Message.objects.filter(
                mailing_id=mailing_id, status=MessageStatus.PENDING, next_attempt_at__lte=now
            )
            .order_by()
            .values("id")[: cap - due]
            .count()
        )
    return min(due, cap)
