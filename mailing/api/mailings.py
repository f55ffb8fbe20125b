"""``/mailings``: CRUD, pause/resume/cancel, statistics, messages and the audience preview."""

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Query, Router
from ninja.pagination import paginate
from ninja.responses import Status
from pydantic import MISSING

from mailing import segments, selectors, services
from mailing.actors import Actor
from mailing.api.calllog import note
from mailing.api.pagination import ApiPagination
from mailing.api.responses import responses
from mailing.api.schemas.errors import ErrorOut
from mailing.api.schemas.fields import ObjectId
from mailing.api.schemas.mailings import (
    MailingFilters,
    MailingIn,
    MailingOut,
    MailingPatch,
    MailingStatsOut,
    PreviewIn,
    PreviewOut,
    ResendIn,
    TestSendIn,
    TestSendOut,
)
from mailing.api.schemas.messages import MessageFilters, MessageOut
from mailing.engine import test_send
from mailing.models import Mailing, Message

router = Router(tags=["mailings"])


def _changes(payload: MailingPatch) -> dict[str, Any]:
    """The PATCH body as services keyword arguments (only what the caller sent)."""
    given = payload.model_dump(exclude_unset=True)
    changes: dict[str, Any] = {
        name: given[name]
        for name in ("name", "start_at", "end_at", "text", "rate_limit")
        if name in given
    }
    if payload.filter is not MISSING:
        changes |= payload.filter.model_dump(exclude_unset=True)
    if "send_window" in given:
        window = payload.send_window
        changes["send_window"] = window.to_domain() if window is not None else None
    return changes


@router.get("/mailings", response=responses({200: list[MailingOut]}))
@paginate(ApiPagination)
def list_mailings(request: HttpRequest, filters: Query[MailingFilters]) -> QuerySet[Mailing]:
    """Newest first, each with its message counts by status; filter by `status`."""
    return selectors.list_mailings(**filters.model_dump())


@router.post("/mailings", response=responses({201: MailingOut}, body=True))
def create_mailing(request: HttpRequest, payload: MailingIn) -> Status:
    """Create a mailing. One whose period has begun starts at once; a later one starts by
    itself at `start_at`. With `"draft": true` it is only written (status `draft`): nothing
    is sent until it is launched."""
    mailing = services.create_mailing(
        actor=Actor.of_request(request),
        name=payload.name,
        draft=payload.draft,
        start_at=payload.start_at,
        end_at=payload.end_at,
        text=payload.text,
        operator_codes=payload.filter.operator_codes,
        tags=payload.filter.tags,
        send_window=payload.send_window.to_domain() if payload.send_window else None,
        rate_limit=payload.rate_limit,
    )
    note(request, mailing_id=mailing.pk)
    return Status(201, mailing)


@router.post("/mailings/preview", response=responses({200: PreviewOut}, body=True))
def preview_audience(request: HttpRequest, payload: PreviewIn) -> dict[str, object]:
    """How many clients a filter reaches; with a window and a period, how many of them have
    their local window open at some time inside the period; with a `text`, its segments."""
    preview: dict[str, object] = {}
    preview |= selectors.preview_audience(
        operator_codes=payload.filter.operator_codes,
        tags=payload.filter.tags,
        window=payload.send_window.to_domain() if payload.send_window else None,
        start_at=payload.start_at,
        end_at=payload.end_at,
    )
    if payload.text is not None:
        preview["segments"] = segments.count(payload.text).as_dict()
    return preview


@router.get("/mailings/{mailing_id}", response=responses({200: MailingOut}, not_found=True))
def get_mailing(request: HttpRequest, mailing_id: ObjectId) -> Mailing:
    return selectors.get_mailing(mailing_id)


@router.patch(
    "/mailings/{mailing_id}",
    response=responses({200: MailingOut}, not_found=True, conflict=True, body=True),
)
def update_mailing(request: HttpRequest, mailing_id: ObjectId, payload: MailingPatch) -> Mailing:
    """Change only the fields given. Once a mailing has started only `end_at` may change
    (409 otherwise); a finished or cancelled one cannot change."""
    mailing = selectors.get_mailing(mailing_id)
    return services.update_mailing(mailing, actor=Actor.of_request(request), **_changes(payload))


@router.delete("/mailings/{mailing_id}", response=responses({202: None}, not_found=True))
def delete_mailing(request: HttpRequest, mailing_id: ObjectId) -> Status:
    """Delete the mailing: 202 at once, however many messages it has. From then on it is
    404 here and absent from every list, and nothing more is sent for it; its messages are
    removed in the background (a q2 task, in batches), then the mailing. Its events stay."""
    services.delete_mailing(selectors.get_mailing(mailing_id), actor=Actor.of_request(request))
    return Status(202, None)


@router.post(
    "/mailings/{mailing_id}/launch",
    response=responses({200: MailingOut}, not_found=True, conflict=True),
)
def launch_mailing(request: HttpRequest, mailing_id: ObjectId) -> Mailing:
    """Launch a draft: from now on it is sent as if created at this moment (inside its
    period it starts at once). 409 for a mailing that is not a draft, or a draft whose end
    has passed."""
    return services.launch_mailing(
        selectors.get_mailing(mailing_id), actor=Actor.of_request(request)
    )


@router.post(
    "/mailings/{mailing_id}/test",
    response=responses({200: TestSendOut, 429: ErrorOut}, not_found=True, conflict=True, body=True),
)
def send_test(request: HttpRequest, mailing_id: ObjectId, payload: TestSendIn) -> dict[str, object]:
    """Send the mailing's text to one phone now (any state, drafts too), with a msgId of its
    own, outside the statistics, recorded on the timeline; 429 past 10 an hour per person."""
    return test_send.send_test(
        selectors.get_mailing(mailing_id),
        phone=payload.phone,
        actor=Actor.of_request(request),
    )


@router.post(
    "/mailings/{mailing_id}/clone",
    response=responses({201: MailingOut}, not_found=True),
)
def clone_mailing(request: HttpRequest, mailing_id: ObjectId) -> Status:
    """A new draft with the same text, filter and window, its name marked as a copy; the
    period is the source's, or as long from now when that has ended."""
    copy = services.clone_mailing(
        selectors.get_mailing(mailing_id), actor=Actor.of_request(request)
    )
    return Status(201, copy)


@router.post(
    "/mailings/{mailing_id}/resend",
    response=responses({201: MailingOut}, not_found=True, conflict=True, body=True),
)
def resend_mailing(request: HttpRequest, mailing_id: ObjectId, payload: ResendIn) -> Status:
    """A new draft to exactly the clients whose messages here ended in `statuses` (less
    opted-out phones), fanned out from this mailing's messages when launched. 409 unless
    this mailing is finished or cancelled."""
    copy = services.resend_mailing(
        selectors.get_mailing(mailing_id),
        statuses=list(payload.statuses),
        actor=Actor.of_request(request),
    )
    return Status(201, copy)


@router.post(
    "/mailings/{mailing_id}/pause",
    response=responses({200: MailingOut}, not_found=True, conflict=True),
)
def pause_mailing(request: HttpRequest, mailing_id: ObjectId) -> Mailing:
    """Stop new sends of a running mailing (409 in any other state)."""
    return services.pause_mailing(
        selectors.get_mailing(mailing_id), actor=Actor.of_request(request)
    )


@router.post(
    "/mailings/{mailing_id}/resume",
    response=responses({200: MailingOut}, not_found=True, conflict=True),
)
def resume_mailing(request: HttpRequest, mailing_id: ObjectId) -> Mailing:
    """Continue a paused mailing (409 in any other state)."""
    return services.resume_mailing(
        selectors.get_mailing(mailing_id), actor=Actor.of_request(request)
    )


@router.post(
    "/mailings/{mailing_id}/cancel",
    response=responses({200: MailingOut}, not_found=True, conflict=True),
)
def cancel_mailing(request: HttpRequest, mailing_id: ObjectId) -> Mailing:
    """Cancel a scheduled, running or paused mailing and its pending messages."""
    return services.cancel_mailing(
        selectors.get_mailing(mailing_id), actor=Actor.of_request(request)
    )


@router.get(
    "/mailings/{mailing_id}/stats", response=responses({200: MailingStatsOut}, not_found=True)
)
def mailing_stats(request: HttpRequest, mailing_id: ObjectId) -> selectors.MailingStats:
    """Counts by status, progress and the most common failure reasons."""
    return selectors.mailing_stats(selectors.get_mailing(mailing_id))


@router.get(
    "/mailings/{mailing_id}/messages",
    response=responses({200: list[MessageOut]}, not_found=True),
)
@paginate(ApiPagination)
def list_messages(
    request: HttpRequest, mailing_id: ObjectId, filters: Query[MessageFilters]
) -> QuerySet[Message]:
    """The mailing's messages by id; filter by `status`."""
    return selectors.list_messages(selectors.get_mailing(mailing_id), **filters.model_dump())
