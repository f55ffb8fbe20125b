"""Shapes of the timelines (``/{mailings,messages,clients}/{id}/events``)."""

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from mailing.models import Event


class ActorOut(Schema):
    user_id: int | None
    name: str = Field(description="The staff member (e-mail address or user name).")
    token: str = Field(description="The name of the API token used; empty for the web UI.")


class EventOut(Schema):
    id: int
    kind: str
    at: datetime
    mailing_id: int | None
    message_id: int | None
    client_id: int | None
    data: dict[str, Any]
    actor: ActorOut | None = Field(
        description="Who did it, for what staff do; null for what the service did by itself."
    )

    @staticmethod
    def resolve_actor(obj: Event) -> dict[str, object] | None:
        if obj.actor_id is None and not obj.actor_name:
            return None
        return {"user_id": obj.actor_id, "name": obj.actor_name, "token": obj.actor_token}
