"""Shapes of the timelines (``/{mailings,messages,clients}/{id}/events``)."""

from datetime import datetime
from typing import Any

from ninja import Schema


class EventOut(Schema):
    id: int
    kind: str
    at: datetime
    mailing_id: int | None
    message_id: int | None
    client_id: int | None
    data: dict[str, Any]
