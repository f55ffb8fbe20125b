"""Domain operations on clients and mailings: the only writers, shared by UI and API.

Services validate the domain's rules and raise ``django.core.exceptions.ValidationError``
(a dict of field -> messages) for bad input and ``StateConflict`` when the mailing's state
forbids the operation. State changes use conditional UPDATEs (optimistic locking): an
operation that raced with another sees zero rows changed and reports a conflict.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, time
from typing import Any, TypeGuard

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from mailing import cleanup, events, rules
from mailing.actors import Actor
from mailing.models import Client, Event, Mailing, MailingStatus, Message, MessageStatus, OptOut
from mailing.rules import (
    NAME_MAX_LENGTH,
    OPERATOR_CODE_LENGTH,
    OPERATOR_CODE_REGEX,
    PHONE_LENGTH,
    PHONE_REGEX,
    TAG_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    Action,
    Reason,
    SendWindow,
    StateConflict,
    known_timezones,
    operator_code_of,
)
from mailing.transitions import (
    cancel_messages_of_client,
    cancel_messages_of_phone,
    settle_pending,
    start_if_due,
    unleased,
)

logger = logging.getLogger("mailing.services")


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
        errors.add(
            "phone", f"Phone must be {PHONE_LENGTH} digits starting with 7, like 79161234567."
        )


def _check_operator_code(code: object, errors: _Errors, field: str = "operator_code") -> None:
    if not isinstance(code, str) or not re.fullmatch(OPERATOR_CODE_REGEX, code):
        errors.add(field, f"Operator code must be exactly {OPERATOR_CODE_LENGTH} digits.")


def check_phone(phone: object) -> None:
    """A ValidationError on ``phone`` unless it is a phone number the service can text."""
    errors = _Errors()
    _check_phone(phone, errors)
    errors.raise_if_any()


def _check_tag(tag: object, errors: _Errors, field: str = "tag") -> None:
    if not isinstance(tag, str) or len(tag) > TAG_MAX_LENGTH:
        errors.add(field, f"Tag must be text of at most {TAG_MAX_LENGTH} characters.")
    elif tag != tag.strip() or any(not ch.isprintable() for ch in tag):
        errors.add(field, "Tag must not have leading/trailing spaces or control characters.")


def _check_timezone(name: object, errors: _Errors) -> None:
    if not isinstance(name, str) or name not in known_timezones():
        errors.add("timezone", "Unknown time zone; use an IANA name such as Europe/Moscow.")


# --- Clients ------------------------------------------------------------------------


def client_errors(fields: Mapping[str, object]) -> dict[str, list[str]]:
    """What is wrong with a client's fields, by field (empty when valid); no database access,
    so bulk imports can check many rows quickly with the same rules."""
    errors = _Errors()
    _check_phone(fields["phone"], errors)
    _check_operator_code(fields["operator_code"], errors)
    _check_tag(fields["tag"], errors)
    _check_timezone(fields["timezone"], errors)
    return errors.by_field


def check_tag(tag: object) -> None:
    """Raise ValidationError({"tag": [...]}) unless ``tag`` is a valid client tag."""
    errors = _Errors()
    _check_tag(tag, errors)
    errors.raise_if_any()


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
    *,
    phone: str,
    timezone: str,
    operator_code: str | None = None,
    tag: str = "",
    actor: Actor | None = None,
) -> Client:
    fields: dict[str, Any] = {
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
        events.record(
            events.CLIENT_CREATED, client_id=client.pk, actor=actor, **_created_data(client)
        )
    logger.info("client created", extra={"client_id": client.pk})
    return client


CLIENT_FIELDS = ("phone", "operator_code", "tag", "timezone")


def _created_data(client: Client) -> dict[str, Any]:
    """The one payload of a ``client.created`` event, however the client came."""
    return {name: getattr(client, name) for name in CLIENT_FIELDS}


def create_clients(rows: Sequence[Mapping[str, str]], *, actor: Actor | None = None) -> int:
    """Many clients at once (CSV import, demo data): rows of ``CLIENT_FIELDS`` that
    ``client_errors`` found valid, each phone new. One multi-row INSERT and one
    ``client.created`` event per client, as ``create_client`` records it; a phone someone
    added meanwhile is skipped, not an error. Returns how many rows were given."""
    clients = [Client(**{name: row[name] for name in CLIENT_FIELDS}) for row in rows]
    with transaction.atomic():
        Client.objects.bulk_create(clients, batch_size=1000, ignore_conflicts=True)
        created = Client.objects.filter(phone__in=[client.phone for client in clients])
        now = timezone.now()
        columns = events.actor_columns(actor)
        Event.objects.bulk_create(
            [
                Event(
                    kind=events.CLIENT_CREATED,
                    client_id=client.pk,
                    at=now,
                    data=_created_data(client),
                    **columns,
                )
                for client in created.only("id", *CLIENT_FIELDS)
            ],
            batch_size=1000,
        )
    return len(clients)


CLIENT_FIELDS = ("phone", "operator_code", "tag", "timezone")


def update_client(client: Client, *, actor: Actor | None = None, **changes: object) -> Client:
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
            actor=actor,
            changes={name: fields[name] for name in sorted(changes)},
        )
    logger.info(
        "client updated",
        extra={"client_id": client.pk, "changed": ",".join(sorted(changes))},
    )
    return client


def delete_client(client: Client, *, actor: Actor | None = None) -> None:
    client_id = client.pk
    with transaction.atomic():
        cancelled = cancel_messages_of_client(client_id, timezone_now())
        client.delete()
        events.record(
            events.CLIENT_DELETED,
            client_id=client_id,
            actor=actor,
            phone=client.phone,
            cancelled_messages=cancelled,
        )
    logger.info(
        "client deleted; %d pending messages cancelled",
        cancelled,
        extra={"client_id": client_id, "cancelled_messages": cancelled},
    )


# --- Opt-outs (do not contact) -----------------------------------------------------


def opt_out(phone: str, *, actor: Actor | None = None) -> tuple[OptOut, bool]:
    """Never text this phone again: idempotent (an opted-out phone stays as it was);
    its pending messages in running mailings are cancelled with the reason. Returns the
    opt-out and whether it is new."""
    check_phone(phone)
    now = timezone_now()
    with transaction.atomic():
        entry, created = OptOut.objects.get_or_create(phone=phone)
        if not created:
            return entry, False
        cancelled = cancel_messages_of_phone(phone, now)
        events.record(
            events.OPT_OUT_ADDED, at=now, actor=actor, phone=phone, cancelled_messages=cancelled
        )
    logger.info("phone opted out; %d pending messages cancelled", cancelled)
    return entry, True


def remove_opt_out(phone: str, *, actor: Actor | None = None) -> None:
    """The phone may be texted again; Http404-like ``OptOut.DoesNotExist`` if it was not out."""
    with transaction.atomic():
        entry = OptOut.objects.select_for_update().get(phone=phone)
        entry.delete()
        events.record(events.OPT_OUT_REMOVED, actor=actor, phone=phone)
    logger.info("opt-out removed")


# --- Staff ----------------------------------------------------------------------------


def create_staff_user(username: str, *, email: str = "") -> User:
    """A staff user with no usable password (create_user without one makes it unusable):
    they sign in through OIDC or use API tokens."""
    user_model = get_user_model()
    return user_model._default_manager.create_user(
        **{user_model.USERNAME_FIELD: username}, email=email, is_staff=True
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


def _is_aware(value: object) -> TypeGuard[datetime]:
    return isinstance(value, datetime) and timezone.is_aware(value)


def _normalise_name(name: object, text: object) -> object:
    """A name without surrounding spaces; none given: a default from the text."""
    if name is None:
        return rules.default_name(text) if isinstance(text, str) else None
    return name.strip() if isinstance(name, str) else name


def _validate_mailing(fields: dict[str, object], errors: _Errors, now: datetime) -> None:
    start_at, end_at, text = fields["start_at"], fields["end_at"], fields["text"]
    name = fields["name"]
    if not isinstance(name, str) or not name:
        errors.add("name", "Name must not be empty.")
    elif len(name) > NAME_MAX_LENGTH:
        errors.add("name", f"Name must be at most {NAME_MAX_LENGTH} characters.")
    elif any(not ch.isprintable() for ch in name):
        errors.add("name", "Name must not contain control characters or line breaks.")
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
    # Both went through _normalise_list: a list of text, or None when they were not one.
    if not isinstance(codes, list):
        errors.add(
            "filter.operator_codes",
            f"Must be a list of {OPERATOR_CODE_LENGTH}-digit operator codes.",
        )
    else:
        for code in codes:
            _check_operator_code(code, errors, "filter.operator_codes")
    if not isinstance(tags, list):
        errors.add("filter.tags", "Must be a list of tags.")
    else:
        for tag in tags:
            _check_tag(tag, errors, "filter.tags")
    window = fields["send_window"]
    # (A SendWindow cannot be empty: its constructor refuses it.)
    if window is not None and not isinstance(window, SendWindow):
        errors.add("send_window", "Must have a start and an end time.")
    rate_error = rules.rate_limit_error(fields["rate_limit"])
    if rate_error is not None:
        errors.add("rate_limit", rate_error)


def _window_fields(window: SendWindow | None) -> dict[str, time | None]:
    if window is None:
        return {"window_start": None, "window_end": None}
    return {
        "window_start": window.start.replace(second=0, microsecond=0),
        "window_end": window.end.replace(second=0, microsecond=0),
    }


def _reloaded_and_logged(mailing: Mailing, what: str) -> Mailing:
    """The mailing as the database has it now, its new status logged."""
    mailing.refresh_from_db()
    logger.info(
        "mailing %s (%s)",
        what,
        mailing.status,
        extra={"mailing_id": mailing.pk, "status": mailing.status},
    )
    return mailing


def create_mailing(
    *,
    start_at: datetime,
    end_at: datetime,
    text: str,
    name: str | None = None,
    operator_codes: list[str] | tuple[str, ...] = (),
    tags: list[str] | tuple[str, ...] = (),
    send_window: SendWindow | None = None,
    rate_limit: float | None = None,
    draft: bool = False,
    now: datetime | None = None,
    actor: Actor | None = None,
) -> Mailing:
    """Create a mailing; one inside its period starts at once (the engine fans it out).

    A draft (``draft=True``) is only written: nothing happens to it until it is launched.
    ``rate_limit``: its own send rate in messages per second (None: only the global one).
    """
    now = now or timezone_now()
    fields: dict[str, object] = {
        "name": _normalise_name(name, text),
        "start_at": start_at,
        "end_at": end_at,
        "text": text,
        "operator_codes": _normalise_list(operator_codes),
        "tags": _normalise_list(tags),
        "send_window": send_window,
        "rate_limit": rate_limit,
    }
    errors = _Errors()
    _validate_mailing(fields, errors, now)
    if _is_aware(end_at) and end_at <= now:
        errors.add("end_at", "The end must be in the future.")
    errors.raise_if_any()
    with transaction.atomic():
        mailing = Mailing.objects.create(
            name=str(fields["name"]),
            start_at=start_at,
            end_at=end_at,
            text=text,
            operator_codes=fields["operator_codes"],
            tags=fields["tags"],
            status=MailingStatus.DRAFT if draft else MailingStatus.SCHEDULED,
            rate_limit=rate_limit,
            **_window_fields(send_window),
        )
        events.record(
            events.MAILING_CREATED,
            mailing_id=mailing.pk,
            at=now,
            actor=actor,
            status=mailing.status,
            name=mailing.name,
        )
        start_if_due(mailing.pk, now)
    return _reloaded_and_logged(mailing, "created")


def update_mailing(
    mailing: Mailing,
    *,
    now: datetime | None = None,
    actor: Actor | None = None,
    **changes: object,
) -> Mailing:
    now = now or timezone_now()
    unknown = set(changes) - set(rules.MAILING_FIELDS)
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
    current: dict[str, object] = {
        "name": mailing.name,
        "start_at": mailing.start_at,
        "end_at": mailing.end_at,
        "text": mailing.text,
        "operator_codes": list(mailing.operator_codes),
        "tags": list(mailing.tags),
        "send_window": mailing.send_window,
        "rate_limit": mailing.rate_limit,
    }
    fields = current | changes
    for name in ("operator_codes", "tags"):
        fields[name] = _normalise_list(fields[name])
    if "name" in changes:
        # Given, it must be a name: null does not mean "make one up" here.
        fields["name"] = changes["name"].strip() if isinstance(changes["name"], str) else ""
    really_changed = {name for name in changes if fields[name] != current[name]}
    if really_changed:
        rules.check_allowed(mailing.status, Action.EDIT)
    frozen = rules.frozen_fields(mailing.status, really_changed)
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
    values["updated_at"] = now
    with transaction.atomic():
        # Optimistic lock: the update only applies if nobody changed the status meanwhile.
        updated = Mailing.objects.filter(pk=mailing.pk, status=mailing.status).update(**values)
        if not updated:
            raise StateConflict("The mailing changed meanwhile; reload and try again.")
        events.record(
            events.MAILING_UPDATED,
            mailing_id=mailing.pk,
            at=now,
            actor=actor,
            changed=sorted(really_changed),
            status=mailing.status,
        )
        # A start moved to now or earlier starts it, by the one path that does.
        start_if_due(mailing.pk, now)
    mailing.refresh_from_db()
    logger.info(
        "mailing updated",
        extra={"mailing_id": mailing.pk, "changed": ",".join(sorted(really_changed))},
    )
    return mailing


def _transition(mailing: Mailing, action: Action, **values: object) -> None:
    """Apply a state-changing action by a conditional UPDATE from the states allowing it
    (with ``values``, in the same UPDATE)."""
    updated = Mailing.objects.filter(
        pk=mailing.pk, status__in=rules.statuses_allowing(action)
    ).update(status=rules.ACTION_RESULT[action], updated_at=timezone_now(), **values)
    if not updated:
        mailing.refresh_from_db(fields=["status"])
        raise StateConflict(rules.refusal(mailing.status, action))


def clone_mailing(
    mailing: Mailing, *, now: datetime | None = None, actor: Actor | None = None
) -> Mailing:
    """A new draft with the same text, filter and window, named as a copy. Its period is
    the source's, or (when that has ended) as long, from now."""
    now = now or timezone_now()
    with transaction.atomic():
        copy = _draft_like(mailing, rules.copy_name(mailing.name), now, actor)
        events.record(
            events.MAILING_CLONED, mailing_id=mailing.pk, at=now, actor=actor, copy_id=copy.pk
        )
    return copy


def resend_mailing(
    mailing: Mailing,
    *,
    statuses: list[str],
    now: datetime | None = None,
    actor: Actor | None = None,
) -> Mailing:
    """A new draft to exactly the clients whose messages in this finished or cancelled
    mailing ended in ``statuses`` (a subset of the unreached ones), less opted-out phones;
    fanned out from the source's messages when it is launched."""
    now = now or timezone_now()
    chosen = sorted(set(statuses)) if isinstance(statuses, list | tuple) else []
    if not chosen or not set(chosen) <= rules.UNREACHED_MESSAGE_STATUSES:
        allowed = ", ".join(sorted(rules.UNREACHED_MESSAGE_STATUSES))
        raise ValidationError({"statuses": [f"Choose one or more of: {allowed}."]})
    if not mailing.is_final:
        raise StateConflict(f"A {mailing.status} mailing cannot be resent; wait for its end.")
    with transaction.atomic():
        copy = _draft_like(mailing, rules.copy_name(mailing.name, rules.RESEND_SUFFIX), now, actor)
        Mailing.objects.filter(pk=copy.pk).update(resend_of=mailing.pk, resend_statuses=chosen)
        events.record(
            events.MAILING_RESENT,
            mailing_id=mailing.pk,
            at=now,
            actor=actor,
            copy_id=copy.pk,
            statuses=chosen,
        )
    copy.refresh_from_db()
    return copy


def _draft_like(mailing: Mailing, name: str, now: datetime, actor: Actor | None) -> Mailing:
    start_at, end_at = mailing.start_at, mailing.end_at
    if end_at <= now:
        start_at, end_at = now, now + (mailing.end_at - mailing.start_at)
    return create_mailing(
        name=name,
        start_at=start_at,
        end_at=end_at,
        text=mailing.text,
        operator_codes=list(mailing.operator_codes),
        tags=list(mailing.tags),
        send_window=mailing.send_window,
        draft=True,
        now=now,
        actor=actor,
    )


def launch_mailing(
    mailing: Mailing, *, now: datetime | None = None, actor: Actor | None = None
) -> Mailing:
    """A draft becomes a mailing: from now on the sending rules apply as if it had been
    created at this moment (inside its period it starts at once, else at its start).

    409 (StateConflict) for anything but a draft, and for a draft whose end has passed.
    """
    now = now or timezone_now()
    with transaction.atomic():
        launched = Mailing.objects.filter(
            pk=mailing.pk, status__in=rules.statuses_allowing(Action.LAUNCH), end_at__gt=now
        ).update(status=rules.ACTION_RESULT[Action.LAUNCH], updated_at=now)
        if not launched:
            mailing.refresh_from_db(fields=["status", "end_at"])
            rules.check_allowed(mailing.status, Action.LAUNCH)
            raise StateConflict(rules.DRAFT_ENDED)
        events.record(events.MAILING_LAUNCHED, mailing_id=mailing.pk, at=now, actor=actor)
        start_if_due(mailing.pk, now)
    return _reloaded_and_logged(mailing, "launched")


def pause_mailing(mailing: Mailing, *, actor: Actor | None = None) -> Mailing:
    _transition(mailing, Action.PAUSE)
    events.record(events.MAILING_PAUSED, mailing_id=mailing.pk, actor=actor)
    logger.info("mailing paused", extra={"mailing_id": mailing.pk})
    mailing.refresh_from_db()
    return mailing


def resume_mailing(mailing: Mailing, *, actor: Actor | None = None) -> Mailing:
    """Send again; a pause of its own (too many failures) is forgotten with its count, so
    the mailing is judged afresh on its next attempts."""
    _transition(mailing, Action.RESUME, pause_reason="", recent_attempts="")
    events.record(events.MAILING_RESUMED, mailing_id=mailing.pk, actor=actor)
    logger.info("mailing resumed", extra={"mailing_id": mailing.pk})
    mailing.refresh_from_db()
    return mailing


def note_attempts(mailing_id: int, outcomes: str, now: datetime) -> bool:
    """Remember a mailing's latest attempts (``rules.ATTEMPT_SENT`` / ``ATTEMPT_FAILED``,
    oldest first) and pause it, with the reason, once too many of its last
    ``MAILING_FAILURE_PAUSE_ATTEMPTS`` failed for good; True when it was paused now.

    Runs in the engine's transaction that records the results, with the mailing's row
    locked (``lock_mailings``), so workers recording at once count every attempt.
    """
    attempts = min(settings.MAILING_FAILURE_PAUSE_ATTEMPTS, rules.RECENT_ATTEMPTS_MAX)
    if attempts <= 0 or not outcomes:
        return False
    row = Mailing.objects.filter(pk=mailing_id).values_list("recent_attempts", "status").first()
    if row is None:
        return False
    recent = rules.recent_attempts(row[0], outcomes, attempts)
    reason = None
    if row[1] in rules.SENDING_STATUSES:
        reason = rules.failure_pause_reason(recent, attempts, settings.MAILING_FAILURE_PAUSE_RATE)
    if reason is None:
        Mailing.objects.filter(pk=mailing_id).update(recent_attempts=recent)
        return False
    paused = Mailing.objects.filter(
        pk=mailing_id, status__in=rules.statuses_allowing(Action.PAUSE)
    ).update(
        status=rules.ACTION_RESULT[Action.PAUSE],
        pause_reason=reason,
        recent_attempts=recent,
        updated_at=now,
    )
    if paused:
        events.record(events.MAILING_PAUSED, mailing_id=mailing_id, at=now, reason=reason)
        logger.warning("mailing paused by itself: %s", reason, extra={"mailing_id": mailing_id})
    return bool(paused)


def cancel_mailing(mailing: Mailing, *, actor: Actor | None = None) -> Mailing:
    now = timezone_now()
    with transaction.atomic():
        _transition(mailing, Action.CANCEL)
        cancelled = settle_pending(
            mailing.pk, MessageStatus.CANCELLED, now, reason=Reason.MAILING_CANCELLED
        )
        events.record(
            events.MAILING_CANCELLED,
            mailing_id=mailing.pk,
            at=now,
            actor=actor,
            cancelled_messages=cancelled,
        )
    logger.info(
        "mailing cancelled; %d pending messages cancelled",
        cancelled,
        extra={"mailing_id": mailing.pk, "cancelled_messages": cancelled},
    )
    mailing.refresh_from_db()
    return mailing


def delete_mailing(mailing: Mailing, *, actor: Actor | None = None) -> Mailing:
    """Delete the mailing at once for everyone; its rows go in the background.

    One conditional UPDATE of the mailing's row (whatever its number of messages) makes it
    ``deleting``: gone from every list and lookup, never claimed or sent for again. After the
    commit the purge task removes its messages in batches, then the mailing; its events stay.
    """
    former = mailing.status
    with transaction.atomic():
        _transition(mailing, Action.DELETE)
        events.record(events.MAILING_DELETED, mailing_id=mailing.pk, actor=actor, status=former)
        transaction.on_commit(cleanup.enqueue_purge)
    logger.info(
        "mailing deleted; its messages go in the background", extra={"mailing_id": mailing.pk}
    )
    mailing.refresh_from_db()
    return mailing
