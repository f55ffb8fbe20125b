"""Domain operations on clients and mailings: the only writers, shared by UI and API.

Services validate the domain's rules and raise ``django.core.exceptions.ValidationError``
(a dict of field -> messages) for bad input and ``StateConflict`` when the mailing's state
forbids the operation. State changes use conditional UPDATEs (optimistic locking): an
operation that raced with another sees zero rows changed and reports a conflict.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, time
from functools import lru_cache
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from mailing import events
from mailing.models import (
    OPERATOR_CODE_REGEX,
    PHONE_REGEX,
    Client,
    Mailing,
    MailingStatus,
    Message,
    MessageStatus,
)
from mailing.transitions import cancel_messages_of_client, settle_pending, unleased

logger = logging.getLogger("mailing.services")

TAG_MAX_LENGTH = 64
TEXT_MAX_LENGTH = 1000
ACTIVE_STATUSES = (MailingStatus.SCHEDULED, MailingStatus.RUNNING, MailingStatus.PAUSED)


class StateConflict(Exception):
    """The operation is not allowed in the object's current state (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class SendWindow:
    start: time
    end: time


@lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


# --- Validation -------------------------------------------------------------------


class _Errors:
    """Collects field errors so one response names every field at fault."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.by_field.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(self.by_field)


def _check_phone(phone: object, errors: _Errors) -> None:
    if not isinstance(phone, str) or not re.fullmatch(PHONE_REGEX, phone):
        errors.add("phone", "Phone must be 11 digits starting with 7, like 79161234567.")


def _check_operator_code(code: object, errors: _Errors, field: str = "operator_code") -> None:
    if not isinstance(code, str) or not re.fullmatch(OPERATOR_CODE_REGEX, code):
        errors.add(field, "Operator code must be exactly 3 digits.")


def _check_tag(tag: object, errors: _Errors, field: str = "tag") -> None:
    if not isinstance(tag, str) or len(tag) > TAG_MAX_LENGTH:
        errors.add(field, f"Tag must be text of at most {TAG_MAX_LENGTH} characters.")
    elif tag != tag.strip() or any(not ch.isprintable() for ch in tag):
        errors.add(field, "Tag must not have leading/trailing spaces or control characters.")


def _check_timezone(name: object, errors: _Errors) -> None:
    if not isinstance(name, str) or name not in known_timezones():
        errors.add("timezone", "Unknown time zone; use an IANA name such as Europe/Moscow.")


def operator_code_of(phone: str) -> str:
    """The operator code implied by a phone number: digits 2 to 4 (79161234567 -> 916)."""
    return phone[1:4]


# --- Clients ------------------------------------------------------------------------


def client_errors(fields: dict[str, object]) -> dict[str, list[str]]:
    """What is wrong with a client's fields, by field (empty when valid); no database access,
    so bulk imports can check many rows quickly with the same rules."""
    errors = _Errors()
    _check_phone(fields["phone"], errors)
    _check_operator_code(fields["operator_code"], errors)
    _check_tag(fields["tag"], errors)
    _check_timezone(fields["timezone"], errors)
    return errors.by_field


def _validate_client(fields: dict[str, object]) -> None:
    errors = client_errors(fields)
    if errors:
        raise ValidationError(errors)


def _save_client(client: Client) -> Client:
    try:
        with transaction.atomic():
            client.save()
    except IntegrityError as exc:
        # The unique index decides races between two requests with the same phone.
        raise ValidationError({"phone": ["A client with this phone already exists."]}) from exc
    return client


def create_client(
    *, phone: str, timezone: str, operator_code: str | None = None, tag: str = ""
) -> Client:
    fields: dict[str, object] = {
        "phone": phone,
        "operator_code": operator_code
        or (operator_code_of(phone) if isinstance(phone, str) else ""),
        "tag": tag,
        "timezone": timezone,
    }
    _validate_client(fields)
    if Client.objects.filter(phone=phone).exists():
        raise ValidationError({"phone": ["A client with this phone already exists."]})
    with transaction.atomic():
        client = _save_client(Client(**fields))
        events.record(events.CLIENT_CREATED, client_id=client.pk, **fields)
    logger.info("client created", extra={"client_id": client.pk})
    return client


CLIENT_FIELDS = ("phone", "operator_code", "tag", "timezone")


def update_client(client: Client, **changes: object) -> Client:
    unknown = set(changes) - set(CLIENT_FIELDS)
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
    fields = {name: getattr(client, name) for name in CLIENT_FIELDS} | changes
    if "phone" in changes and "operator_code" not in changes and isinstance(fields["phone"], str):
        # A new number implies its own operator unless the caller says otherwise.
        fields["operator_code"] = operator_code_of(fields["phone"])
    _validate_client(fields)
    if Client.objects.filter(phone=fields["phone"]).exclude(pk=client.pk).exists():
        raise ValidationError({"phone": ["A client with this phone already exists."]})
    for name, value in fields.items():
        setattr(client, name, value)
    with transaction.atomic():
        _save_client(client)
        # Waiting messages go to the number and zone the client has now.
        Message.objects.filter(
            unleased(timezone_now()), client=client, status=MessageStatus.PENDING
        ).update(phone=client.phone, timezone=client.timezone)
        events.record(
            events.CLIENT_UPDATED,
            client_id=client.pk,
            changes={name: fields[name] for name in sorted(changes)},
        )
    logger.info(
        "client updated",
        extra={"client_id": client.pk, "changed": ",".join(sorted(changes))},
    )
    return client


def delete_client(client: Client) -> None:
    client_id = client.pk
    with transaction.atomic():
        cancelled = cancel_messages_of_client(client_id, timezone_now())
        client.delete()
        events.record(
            events.CLIENT_DELETED,
            client_id=client_id,
            phone=client.phone,
            cancelled_messages=cancelled,
        )
    logger.info(
        "client deleted; %d pending messages cancelled",
        cancelled,
        extra={"client_id": client_id, "cancelled_messages": cancelled},
    )


def timezone_now() -> datetime:
    return timezone.now()


# --- Mailings -----------------------------------------------------------------------


def _normalise_list(values: object) -> list[str] | None:
    if values is None:
        return []
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        return None
    return sorted(set(values))


def _is_aware(value: object) -> bool:
    return isinstance(value, datetime) and timezone.is_aware(value)


def _validate_mailing(fields: dict[str, object], errors: _Errors, now: datetime) -> None:
    start_at, end_at, text = fields["start_at"], fields["end_at"], fields["text"]
    for name, value in (("start_at", start_at), ("end_at", end_at)):
        if not isinstance(value, datetime) or timezone.is_naive(value):
            errors.add(name, "Must be a date-time with a time zone offset.")
    if _is_aware(start_at) and _is_aware(end_at) and end_at <= start_at:
        errors.add("end_at", "The end must be after the start.")
    if not isinstance(text, str) or not text.strip():
        errors.add("text", "Text must not be empty.")
    elif len(text) > TEXT_MAX_LENGTH:
        errors.add("text", f"Text must be at most {TEXT_MAX_LENGTH} characters.")
    elif "\x00" in text:
        # PostgreSQL cannot store it, and no phone can display it.
        errors.add("text", "Text must not contain NUL characters.")
    codes, tags = fields["operator_codes"], fields["tags"]
    if codes is None:
        errors.add("filter.operator_codes", "Must be a list of 3-digit operator codes.")
    else:
        for code in codes:
            _check_operator_code(code, errors, "filter.operator_codes")
    if tags is None:
        errors.add("filter.tags", "Must be a list of tags.")
    else:
        for tag in tags:
            _check_tag(tag, errors, "filter.tags")
    window = fields["send_window"]
    if window is not None:
        if not isinstance(window, SendWindow):
            errors.add("send_window", "Must have a start and an end time.")
        elif window.start == window.end:
            errors.add("send_window", "The window's start and end must differ.")


def _window_fields(window: SendWindow | None) -> dict[str, time | None]:
    if window is None:
        return {"window_start": None, "window_end": None}
    return {
        "window_start": window.start.replace(second=0, microsecond=0),
        "window_end": window.end.replace(second=0, microsecond=0),
    }


def window_of(mailing: Mailing) -> SendWindow | None:
    if mailing.window_start is None or mailing.window_end is None:
        return None
    return SendWindow(mailing.window_start, mailing.window_end)


def create_mailing(
    *,
    start_at: datetime,
    end_at: datetime,
    text: str,
    operator_codes: list[str] | tuple[str, ...] = (),
    tags: list[str] | tuple[str, ...] = (),
    send_window: SendWindow | None = None,
    now: datetime | None = None,
) -> Mailing:
    """Create a mailing; one inside its period is running at once (the engine fans it out)."""
    now = now or timezone_now()
    fields: dict[str, object] = {
        "start_at": start_at,
        "end_at": end_at,
        "text": text,
        "operator_codes": _normalise_list(operator_codes),
        "tags": _normalise_list(tags),
        "send_window": send_window,
    }
    errors = _Errors()
    _validate_mailing(fields, errors, now)
    if _is_aware(end_at) and end_at <= now:
        errors.add("end_at", "The end must be in the future.")
    errors.raise_if_any()
    status = MailingStatus.RUNNING if start_at <= now else MailingStatus.SCHEDULED
    with transaction.atomic():
        mailing = Mailing.objects.create(
            start_at=start_at,
            end_at=end_at,
            text=text,
            operator_codes=fields["operator_codes"],
            tags=fields["tags"],
            status=status,
            **_window_fields(send_window),
        )
        events.record(events.MAILING_CREATED, mailing_id=mailing.pk, at=now, status=status)
    logger.info(
        "mailing created (%s)",
        status,
        extra={"mailing_id": mailing.pk, "status": status},
    )
    return mailing


MAILING_FIELDS = ("start_at", "end_at", "text", "operator_codes", "tags", "send_window")
# What may still change once a mailing has started: its end (extend or shorten it).
FIELDS_EDITABLE_AFTER_START = frozenset({"end_at"})


def update_mailing(mailing: Mailing, *, now: datetime | None = None, **changes: object) -> Mailing:
    now = now or timezone_now()
    unknown = set(changes) - set(MAILING_FIELDS)
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
    current: dict[str, object] = {
        "start_at": mailing.start_at,
        "end_at": mailing.end_at,
        "text": mailing.text,
        "operator_codes": list(mailing.operator_codes),
        "tags": list(mailing.tags),
        "send_window": window_of(mailing),
    }
    fields = current | changes
    for name in ("operator_codes", "tags"):
        fields[name] = _normalise_list(fields[name])
    really_changed = {name for name in changes if fields[name] != current[name]}
    if mailing.status in (MailingStatus.FINISHED, MailingStatus.CANCELLED) and really_changed:
        raise StateConflict(f"A {mailing.status} mailing cannot be edited.")
    if mailing.status != MailingStatus.SCHEDULED:
        frozen = sorted(really_changed - FIELDS_EDITABLE_AFTER_START)
        if frozen:
            raise StateConflict(
                f"The mailing has started; {', '.join(frozen)} can no longer be changed."
            )
    errors = _Errors()
    _validate_mailing(fields, errors, now)
    new_end = fields["end_at"]
    if "end_at" in really_changed and _is_aware(new_end) and new_end <= now:
        errors.add("end_at", "The end must be in the future.")
    errors.raise_if_any()
    if not really_changed:
        return mailing
    values: dict[str, object] = {
        name: fields[name] for name in really_changed if name != "send_window"
    }
    if "send_window" in really_changed:
        values |= _window_fields(fields["send_window"])  # type: ignore[arg-type]
    if mailing.status == MailingStatus.SCHEDULED and fields["start_at"] <= now:  # type: ignore[operator]
        values["status"] = MailingStatus.RUNNING
    values["updated_at"] = now
    # Optimistic lock: the update only applies if nobody changed the status meanwhile.
    updated = Mailing.objects.filter(pk=mailing.pk, status=mailing.status).update(**values)
    if not updated:
        raise StateConflict("The mailing changed meanwhile; reload and try again.")
    mailing.refresh_from_db()
    events.record(
        events.MAILING_UPDATED,
        mailing_id=mailing.pk,
        at=now,
        changed=sorted(really_changed),
        status=mailing.status,
    )
    logger.info(
        "mailing updated",
        extra={"mailing_id": mailing.pk, "changed": ",".join(sorted(really_changed))},
    )
    return mailing


def _transition(mailing: Mailing, allowed_from: tuple[str, ...], to_status: str, verb: str) -> None:
    updated = Mailing.objects.filter(pk=mailing.pk, status__in=allowed_from).update(
        status=to_status, updated_at=timezone_now()
    )
    if not updated:
        mailing.refresh_from_db(fields=["status"])
        raise StateConflict(f"A {mailing.status} mailing cannot be {verb}.")


def pause_mailing(mailing: Mailing) -> Mailing:
    _transition(mailing, (MailingStatus.RUNNING,), MailingStatus.PAUSED, "paused")
    events.record(events.MAILING_PAUSED, mailing_id=mailing.pk)
    logger.info("mailing paused", extra={"mailing_id": mailing.pk})
    mailing.refresh_from_db()
    return mailing


def resume_mailing(mailing: Mailing) -> Mailing:
    _transition(mailing, (MailingStatus.PAUSED,), MailingStatus.RUNNING, "resumed")
    events.record(events.MAILING_RESUMED, mailing_id=mailing.pk)
    logger.info("mailing resumed", extra={"mailing_id": mailing.pk})
    mailing.refresh_from_db()
    return mailing


def cancel_mailing(mailing: Mailing) -> Mailing:
    now = timezone_now()
    with transaction.atomic():
        _transition(mailing, ACTIVE_STATUSES, MailingStatus.CANCELLED, "cancelled")
        cancelled = settle_pending(
            mailing.pk, MessageStatus.CANCELLED, now, reason="mailing cancelled"
        )
        events.record(
            events.MAILING_CANCELLED, mailing_id=mailing.pk, at=now, cancelled_messages=cancelled
        )
    logger.info(
        "mailing cancelled; %d pending messages cancelled",
        cancelled,
        extra={"mailing_id": mailing.pk, "cancelled_messages": cancelled},
    )
    mailing.refresh_from_db()
    return mailing


def delete_mailing(mailing: Mailing) -> None:
    """Stop the mailing (no further sends), then delete it with its messages."""
    mailing_id = mailing.pk
    with transaction.atomic():
        if mailing.status in ACTIVE_STATUSES:
            Mailing.objects.filter(pk=mailing_id).update(status=MailingStatus.CANCELLED)
        mailing.delete()
        events.record(events.MAILING_DELETED, mailing_id=mailing_id, status=mailing.status)
    logger.info("mailing deleted", extra={"mailing_id": mailing_id})
