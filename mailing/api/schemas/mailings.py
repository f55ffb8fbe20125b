"""Shapes of ``/mailings``: the mailing, its statistics and the audience preview."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal

from ninja import Field, Schema
from pydantic import MISSING, BaseModel

from mailing import segments
from mailing.api.schemas.fields import (
    ClockTime,
    InputSchema,
    MailingName,
    MessageText,
    Moment,
    OperatorCode,
    Phone,
    Tag,
    UtcDatetime,
    absent,
)
from mailing.models import Mailing, MailingStatus
from mailing.rules import FILTER_MAX_ITEMS, MAILING_RATE_LIMIT_MAX, SendWindow


def _hhmm(value: time) -> str:
    return value.strftime("%H:%M")


class FilterIn(InputSchema):
    operator_codes: list[OperatorCode] = Field(default_factory=list, max_length=FILTER_MAX_ITEMS)
    tags: list[Tag] = Field(default_factory=list, max_length=FILTER_MAX_ITEMS)


# PATCH fields may be absent (MISSING: left out of model_dump); null is refused (422).
class FilterPatch(InputSchema):
    operator_codes: Annotated[list[OperatorCode], Field(max_length=FILTER_MAX_ITEMS)] | MISSING = (
        absent()
    )
    tags: Annotated[list[Tag], Field(max_length=FILTER_MAX_ITEMS)] | MISSING = absent()


class SendWindowIn(InputSchema):
    start: ClockTime
    end: ClockTime

    def to_domain(self) -> SendWindow:
        """The window as the services take it (an empty one is refused there: a 422)."""
        return SendWindow(time.fromisoformat(self.start), time.fromisoformat(self.end))


RATE_LIMIT_DESCRIPTION = (
    f"This mailing's own send rate, messages per second (0 < rate <= {MAILING_RATE_LIMIT_MAX}), "
    "honoured across workers beside the service-wide SEND_RATE_LIMIT; null: none of its own."
)


class MailingIn(InputSchema):
    name: MailingName | None = Field(
        None, description="Omitted: the start of the text's first line."
    )
    draft: bool = Field(
        False,
        description="true: only write it (status draft); nothing is sent until "
        "POST /mailings/{id}/launch.",
    )
    start_at: Moment
    end_at: Moment
    text: MessageText
    filter: FilterIn = Field(default_factory=FilterIn)
    send_window: SendWindowIn | None = None
    rate_limit: float | None = Field(None, description=RATE_LIMIT_DESCRIPTION)


class MailingPatch(InputSchema):
    name: MailingName | MISSING = absent()
    start_at: Moment | MISSING = absent()
    end_at: Moment | MISSING = absent()
    text: MessageText | MISSING = absent()
    filter: FilterPatch | MISSING = absent("Only the lists given change.")
    send_window: SendWindowIn | None = Field(None, description="null removes the window.")
    rate_limit: float | None = Field(
        None, description=RATE_LIMIT_DESCRIPTION + " null removes it. May change while it runs."
    )


# Plain pydantic models, not ninja Schemas: these are always built from dicts, and ninja's
# per-object attribute resolver made GET /stats spend 70% of its time validating its
# 1,000-mailing answer (docs/benchmarks.md, statistics).
class Counters(BaseModel):
    total: int
    pending: int
    sent: int
    failed: int
    expired: int
    cancelled: int


class SegmentsOut(BaseModel):
    encoding: Literal["GSM-7", "UCS-2"] = Field(
        description="GSM-7 when the GSM 03.38 alphabet (basic and extension tables) holds "
        "every character, else UCS-2."
    )
    characters: int = Field(
        description="Length in the encoding's units: septets (an extension character "
        "takes two) or UTF-16 code units (an emoji takes two)."
    )
    parts: int = Field(
        description="SMS parts one message is billed as: 160 septets or 70 units in one, "
        "else parts of 153 or 67."
    )


class FilterOut(Schema):
    operator_codes: list[str]
    tags: list[str]


class SendWindowOut(Schema):
    start: str = Field(examples=["09:00"])
    end: str = Field(examples=["21:00"])


class MailingOut(Schema):
    id: int
    name: str
    start_at: UtcDatetime
    end_at: UtcDatetime
    text: str
    filter: FilterOut
    send_window: SendWindowOut | None
    status: MailingStatus
    rate_limit: float | None = Field(description=RATE_LIMIT_DESCRIPTION)
    pause_reason: str | None = Field(
        description="Why the mailing paused by itself (too many of its last attempts failed "
        "for good); null unless it did. Resuming it clears the reason."
    )
    stats: Counters
    segments: SegmentsOut
    resend_of: int | None = Field(
        description="The mailing this one resends to the unreached of (null: none)."
    )

    @staticmethod
    def resolve_segments(obj: Mailing) -> dict[str, object]:
        return segments.count(obj.text).as_dict()

    @staticmethod
    def resolve_filter(obj: Mailing) -> dict[str, list[str]]:
        return {"operator_codes": list(obj.operator_codes), "tags": list(obj.tags)}

    @staticmethod
    def resolve_send_window(obj: Mailing) -> dict[str, str] | None:
        window = obj.send_window
        if window is None:
            return None
        return {"start": _hhmm(window.start), "end": _hhmm(window.end)}

    @staticmethod
    def resolve_pause_reason(obj: Mailing) -> str | None:
        return obj.pause_reason or None

    @staticmethod
    def resolve_stats(obj: Mailing) -> dict[str, int]:
        return obj.counters()


# Absent means "any" (there is no null in a query string).
class MailingFilters(Schema):
    status: MailingStatus | MISSING = absent()


class FailureReason(Schema):
    reason: str
    count: int


class MailingStatsOut(Schema):
    mailing_id: int
    status: MailingStatus
    stats: Counters
    progress: float = Field(ge=0, le=1, description="Share of messages no longer pending.")
    fanned_out: bool
    failure_reasons: list[FailureReason]


class ResendIn(InputSchema):
    statuses: list[Literal["failed", "expired", "cancelled"]] = Field(
        min_length=1, max_length=3, description="The final statuses (not sent) to resend to."
    )


class TestSendIn(InputSchema):
    phone: Phone


class TestSendOut(Schema):
    msg_id: int = Field(description="The msgId of this test: no real message gets it.")
    phone: str
    outcome: Literal["accepted", "rejected", "retry", "throttled", "unauthorized"]
    detail: str


class PreviewIn(InputSchema):
    text: MessageText | None = Field(None, description="Given: its SMS segments are counted.")
    filter: FilterIn = Field(default_factory=FilterIn)
    send_window: SendWindowIn | None = None
    start_at: Moment | None = None
    end_at: Moment | None = None


class PreviewOut(Schema):
    matching: int = Field(description="Clients the filter matches.")
    opted_out: int = Field(description="Of those, clients whose phone opted out.")
    reachable: int = Field(
        description="Of those not opted out, clients whose window opens inside "
        "[start_at, end_at) (all of them without a window or a period)."
    )
    timezones: int
    segments: SegmentsOut | None = Field(None, description="Of the `text` given, if any.")
