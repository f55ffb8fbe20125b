"""Writes on many clients at once: set a tag on, or delete, a chosen set of clients;
update the clients a CSV import names by phone.

The UI's bulk actions call these with the clients the staff member selected or every
client their filter matches. Work is done in chunks of ids, each chunk in its own
transaction, so a large set never holds locks for long; each client's timeline gets its
event, written in bulk. ``upto`` is the highest client id the staff member saw counted:
clients added after the confirmation are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from mailing import events
from mailing.actors import Actor
from mailing.events import actor_columns
from mailing.models import Client, Event, Message, MessageStatus
from mailing.services import check_tag
from mailing.transitions import cancel_messages_of_clients, unleased

logger = logging.getLogger("mailing.clients")

CHUNK = 2000


def _id_chunks(clients: QuerySet[Client], upto: int | None) -> Iterator[list[int]]:
    if upto is not None:
        clients = clients.filter(pk__lte=upto)
    ids = list(clients.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _events(kind: str, rows: list[tuple[int, dict]], actor: Actor | None) -> None:
    now = timezone.now()
    columns = actor_columns(actor)
    Event.objects.bulk_create(
        [Event(kind=kind, client_id=pk, at=now, data=data, **columns) for pk, data in rows],
        batch_size=1000,
    )


def set_tag(
    clients: QuerySet[Client], tag: str, *, actor: Actor | None = None, upto: int | None = None
) -> int:
    """Give every client of the set the tag (empty: no tag); returns how many changed."""
    check_tag(tag)
    changed = 0
    for ids in _id_chunks(clients.exclude(tag=tag), upto):
        with transaction.atomic():
            updated = list(
                Client.objects.filter(pk__in=ids)
                .exclude(tag=tag)
                .select_for_update()
                .values_list("pk", flat=True)
            )
            Client.objects.filter(pk__in=updated).update(tag=tag, updated_at=timezone.now())
            _events(
                events.CLIENT_UPDATED, [(pk, {"changes": {"tag": tag}}) for pk in updated], actor
            )
        changed += len(updated)
    logger.info("tag set on %d clients", changed, extra={"clients_changed": changed})
    return changed


def delete(
    clients: QuerySet[Client], *, actor: Actor | None = None, upto: int | None = None
) -> int:
    """Delete every client of the set, cancelling their pending messages first (as
    ``services.delete_client`` does for one); returns how many were deleted."""
    deleted = 0
    cancelled = 0
    for ids in _id_chunks(clients, upto):
        now = timezone.now()
        with transaction.atomic():
            cancelled += cancel_messages_of_clients(ids, now)
            phones = dict(Client.objects.filter(pk__in=ids).values_list("pk", "phone"))
            Client.objects.filter(pk__in=list(phones)).delete()
            _events(
                events.CLIENT_DELETED,
                [(pk, {"phone": phone, "bulk": True}) for pk, phone in phones.items()],
                actor,
            )
        deleted += len(phones)
    logger.info(
        "%d clients deleted; %d pending messages cancelled",
        deleted,
        cancelled,
        extra={"clients_deleted": deleted, "cancelled_messages": cancelled},
    )
    return deleted


def update_by_phone(rows: Sequence[Mapping[str, str]], *, actor: Actor | None = None) -> int:
    """Bring existing clients (found by phone) to these rows' fields, as ``update_client``
    does for one: only what differs is written, waiting messages follow the new zone, each
    changed client gets its ``client.updated`` event. Rows hold ``phone`` and any of
    ``operator_code``, ``tag``, ``timezone``, already found valid. Returns how many changed."""
    by_phone = {row["phone"]: row for row in rows}
    now = timezone.now()
    with transaction.atomic():
        clients = list(
            Client.objects.filter(phone__in=list(by_phone)).select_for_update().order_by("pk")
        )
        changed: list[tuple[Client, dict[str, str]]] = []
        for client in clients:
            row = by_phone[client.phone]
            changes = {
                name: row[name]
                for name in UPDATABLE_FIELDS
                if name in row and getattr(client, name) != row[name]
            }
            if changes:
                for name, value in changes.items():
                    setattr(client, name, value)
                client.updated_at = now
                changed.append((client, changes))
        Client.objects.bulk_update(
            [client for client, _ in changed], [*UPDATABLE_FIELDS, "updated_at"], batch_size=1000
        )
        moved: dict[str, list[int]] = {}
        for client, changes in changed:
            if "timezone" in changes:
                moved.setdefault(client.timezone, []).append(client.pk)
        for zone, ids in moved.items():
            Message.objects.filter(
                unleased(now), client_id__in=ids, status=MessageStatus.PENDING
            ).update(timezone=zone)
        _events(
            events.CLIENT_UPDATED,
            [
                (client.pk, {"changes": dict(sorted(changes.items()))})
                for client, changes in changed
            ],
            actor,
        )
    return len(changed)


UPDATABLE_FIELDS = ("operator_code", "tag", "timezone")
