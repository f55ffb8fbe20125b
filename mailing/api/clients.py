"""``/clients``: list, create, read, update, delete."""

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Query, Router
from ninja.pagination import paginate
from ninja.responses import Status

from mailing import selectors, services
from mailing.actors import Actor
from mailing.api.calllog import note
from mailing.api.pagination import ApiPagination
from mailing.api.responses import responses
from mailing.api.schemas.clients import ClientFilters, ClientIn, ClientOut, ClientPatch
from mailing.api.schemas.fields import ObjectId
from mailing.models import Client

router = Router(tags=["clients"])


@router.get("/clients", response=responses({200: list[ClientOut]}))
@paginate(ApiPagination)
def list_clients(request: HttpRequest, filters: Query[ClientFilters]) -> QuerySet[Client]:
    """Clients by id; filter by exact `tag` and `operator_code`."""
    return selectors.list_clients(**filters.model_dump())


@router.post("/clients", response=responses({201: ClientOut}, body=True))
def create_client(request: HttpRequest, payload: ClientIn) -> Status:
    """Add a client; `operator_code` defaults to digits 2-4 of the phone."""
    client = services.create_client(actor=Actor.of_request(request), **payload.model_dump())
    note(request, client_id=client.pk)
    return Status(201, client)


@router.get("/clients/{client_id}", response=responses({200: ClientOut}, not_found=True))
def get_client(request: HttpRequest, client_id: ObjectId) -> Client:
    return selectors.get_client(client_id)


@router.patch(
    "/clients/{client_id}", response=responses({200: ClientOut}, not_found=True, body=True)
)
def update_client(request: HttpRequest, client_id: ObjectId, payload: ClientPatch) -> Client:
    """Change only the fields given. A new phone implies its operator code unless one is given;
    pending messages follow the client's new phone and time zone."""
    client = selectors.get_client(client_id)
    return services.update_client(
        client, actor=Actor.of_request(request), **payload.model_dump(exclude_unset=True)
    )


@router.delete("/clients/{client_id}", response=responses({204: None}, not_found=True))
def delete_client(request: HttpRequest, client_id: ObjectId) -> Status:
    """Delete the client; its pending messages in every mailing are cancelled."""
    services.delete_client(selectors.get_client(client_id), actor=Actor.of_request(request))
    return Status(204, None)
