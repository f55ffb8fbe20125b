"""Shapes of a mailing's messages."""

from __future__ import annotations

from ninja import Schema

from mailing.api.schemas.fields import (
    UtcDatetime,
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


class MessageFilters(Schema):
    status: MessageStatus = None
