"""Shapes of a mailing's messages."""

from __future__ import annotations

from ninja import Schema
from pydantic import MISSING

from mailing.api.schemas.fields import (
    UtcDatetime,
    absent,
)
from mailing.models import MessageStatus


class MessageOut(Schema):
    id: int
    mailing_id: int
    client_id: int | None
    phone: str
    status: MessageStatus
    created_at: UtcDatetime
    sent_at: UtcDatetime | None
    attempts: int
    last_error: str


# Absent means "any" (there is no null in a query string).
class MessageFilters(Schema):
    status: MessageStatus | MISSING = absent()
