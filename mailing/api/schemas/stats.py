"""Shapes of ``/stats`` and ``/provider``."""

from __future__ import annotations

from ninja import Schema
from pydantic import (
    BaseModel,
    Field,
)

from mailing.api.schemas.fields import (
    UtcDatetime,
)
from mailing.api.schemas.mailings import Counters
from mailing.models import MailingStatus


class MailingCounters(BaseModel):
    id: int
    status: MailingStatus
    stats: Counters


class OverallStatsOut(Schema):
    mailings: list[MailingCounters]
    totals: Counters
    mailings_by_status: dict[MailingStatus, int]


class DispatcherOut(Schema):
    slot: int
    circuit_state: str
    window: int | None = Field(
        None, description="Calls the dispatcher may keep in flight now (its concurrency window)."
    )
    heartbeat_at: UtcDatetime | None
    alive: bool


class ProviderHealthOut(Schema):
    paused_for_credentials: bool
    auth_error: str
    auth_failed_at: UtcDatetime | None
    dispatchers: list[DispatcherOut]
