"""``/{mailings,messages,clients}/{id}/events``: the timelines of the event table."""

from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from ninja import Router
from ninja.pagination import paginate

from mailing import selectors
from mailing.api.pagination import ApiPagination
from mailing.api.responses import responses
from mailing.api.schemas.events import EventOut
from mailing.api.schemas.fields import ObjectId
from mailing.models import Client, Event, Mailing, Message

router = Router(tags=["events"])


def _timeline(
    model: type[Client] | type[Mailing] | type[Message], object_id: int, **selector: int
) -> QuerySet[Event]:
    """The events of one object; 404 when neither the object nor any event of it exists
    (the events of a deleted client or mailing stay readable)."""
    events = selectors.timeline_of(model, object_id, **selector)
    if events is None:
        raise Http404
    return events


@router.get(
    "/mailings/{mailing_id}/events",
    response=responses({200: list[EventOut]}, not_found=True),
)
@paginate(ApiPagination)
def mailing_events(request: HttpRequest, mailing_id: ObjectId) -> QuerySet[Event]:
    """What happened to the mailing, oldest first: created, started, fan-out, edits,
    pause/resume/cancel, expiries, finished (its messages' events are under each message)."""
    return _timeline(Mailing, mailing_id, mailing_id=mailing_id)


@router.get(
    "/messages/{message_id}/events",
    response=responses({200: list[EventOut]}, not_found=True),
)
@paginate(ApiPagination)
def message_events(request: HttpRequest, message_id: ObjectId) -> QuerySet[Event]:
    """The message's life, oldest first: its mailing's fan-out, every send attempt with its
    outcome (status code, reason, latency), and expiry or cancellation."""
    return _timeline(Message, message_id, message_id=message_id)


@router.get(
    "/clients/{client_id}/events",
    response=responses({200: list[EventOut]}, not_found=True),
)
@paginate(ApiPagination)
def client_events(request: HttpRequest, client_id: ObjectId) -> QuerySet[Event]:
    """The client's history, oldest first: created, edited, deleted, and every send attempt,
    expiry or cancellation of its messages in any mailing."""
    return _timeline(Client, client_id, client_id=client_id)
