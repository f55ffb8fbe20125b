"""``/opt-outs``: the phones that asked not to be texted (kept by phone, not by client)."""

from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from ninja import Query, Router
from ninja.pagination import paginate
from ninja.responses import Status
from pydantic import MISSING

from mailing import selectors, services
from mailing.actors import Actor
from mailing.api.pagination import ApiPagination
from mailing.api.responses import responses
from mailing.api.schemas.fields import Phone
from mailing.api.schemas.optouts import OptOutFilters, OptOutIn, OptOutOut
from mailing.models import OptOut

router = Router(tags=["opt-outs"])


@router.get("/opt-outs", response=responses({200: list[OptOutOut]}))
@paginate(ApiPagination)
def list_opt_outs(request: HttpRequest, filters: Query[OptOutFilters]) -> QuerySet[OptOut]:
    """Newest first; `search` finds digits anywhere in the phone."""
    search = None if filters.search is MISSING else filters.search
    return selectors.list_opt_outs(search=search)


@router.post("/opt-outs", response=responses({200: OptOutOut, 201: OptOutOut}, body=True))
def add_opt_out(request: HttpRequest, payload: OptOutIn) -> Status:
    """Never text this phone again (201; 200 if it already was out). Its pending messages
    in running mailings are cancelled; it outlives its client."""
    entry, created = services.opt_out(payload.phone, actor=Actor.of_request(request))
    return Status(201 if created else 200, entry)


@router.get("/opt-outs/{phone}", response=responses({200: OptOutOut}, not_found=True))
def get_opt_out(request: HttpRequest, phone: Phone) -> OptOut:
    """Whether this phone opted out (404 if it may be texted)."""
    entry = selectors.opt_out_of(phone)
    if entry is None:
        raise Http404
    return entry


@router.delete("/opt-outs/{phone}", response=responses({204: None}, not_found=True))
def remove_opt_out(request: HttpRequest, phone: Phone) -> Status:
    """The phone may be texted again (404 if it was not opted out)."""
    try:
        services.remove_opt_out(phone, actor=Actor.of_request(request))
    except OptOut.DoesNotExist as missing:
        raise Http404 from missing
    return Status(204, None)
