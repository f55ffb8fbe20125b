"""Request and response shapes of the JSON API v1.

Input schemas check shapes only: types, lengths, simple patterns (HH:MM, 3-digit codes),
aware date-times in a sane range, no NUL bytes, no unknown fields. The domain's rules
(phone format, unique phone, known time zone, end after start, what a mailing's state
allows) live in ``mailing.services``, which answer with the same 422 shape.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mailing.models import OPERATOR_CODE_REGEX, PHONE_REGEX, Mailing, MailingStatus, MessageStatus
from mailing.services import TAG_MAX_LENGTH, TEXT_MAX_LENGTH, SendWindow, window_of

# --- Input building blocks ----------------------------------------------------------
# (The phone's documented pattern is enforced by the services; the operator-code pattern
# is enforced here too because the preview and the list filter reach no service.)

# Dates far from now are refused before they reach the database or the window arithmetic
# (9999-12-31 with a negative offset does not even fit a datetime once converted to UTC).
EARLIEST_YEAR = 2000
LATEST_YEAR = 2999
HHMM_REGEX = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
LIST_MAX_ITEMS = 1000
PHONE_MIN, PHONE_MAX = 70_000_000_000, 79_999_999_999


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text: refuse it up front for every string field.
    if "\x00" in value:
        raise PydanticCustomError("string_nul", "Must not contain NUL (\\u0000) characters.")
    return value


def _iso_text_only(value: object) -> object:
    # pydantic would also take a number as a Unix time; the contract is ISO 8601 text.
    if not isinstance(value, str | datetime):
        raise PydanticCustomError("datetime_type", "Must be an ISO 8601 date-time string.")
    return value


def _in_range(value: datetime) -> datetime:
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise PydanticCustomError(
            "datetime_out_of_range",
            "Must be between the years {earliest} and {latest}.",
            {"earliest": EARLIEST_YEAR, "latest": LATEST_YEAR},
        )
    return value


def _phone_to_text(value: object) -> object:
    # The provider itself uses integer phones, so 79161234567 is accepted as well.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if PHONE_MIN <= value <= PHONE_MAX else "invalid"
    return value


def _text(
    max_length: int, min_length: int = 0, pattern: str | None = None, **json_schema_extra: Any
) -> Any:
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern),
        AfterValidator(_no_nul),
        Field(json_schema_extra=json_schema_extra or None),
    ]


Tag = _text(TAG_MAX_LENGTH)
Timezone = _text(64, 1, examples=["Europe/Moscow"])
OperatorCode = _text(3, 3, pattern=OPERATOR_CODE_REGEX, examples=["916"])
MessageText = _text(TEXT_MAX_LENGTH, 1)
Phone = Annotated[
    str,
    BeforeValidator(_phone_to_text),
    StringConstraints(max_length=11),
    AfterValidator(_no_nul),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PHONE_REGEX},
                {"type": "integer", "minimum": PHONE_MIN, "maximum": PHONE_MAX},
            ],
            "description": "11 digits starting with 7, as text or as a number.",
            "examples": ["79161234567"],
        }
    ),
]
ClockTime = Annotated[
    str,
    StringConstraints(pattern=HHMM_REGEX),
    WithJsonSchema({"type": "string", "pattern": HHMM_REGEX, "examples": ["09:00"]}),
]
Moment = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_text_only),
    AfterValidator(_in_range),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 with a UTC offset (a naive time is refused).",
        }
    ),
]
ObjectId = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value


# Every time the API answers with is in UTC, whatever offset it was given in.
UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]


def optional(description: str | None = None) -> Any:
    """A PATCH field: may be absent; an explicit null fails its type check (422).

    (The OpenAPI document drops the resulting ``"default": null``: see ``MailingAPI``.)
    """
    return Field(None, description=description)


class InputSchema(Schema):
    model_config = ConfigDict(extra="forbid")


def _hhmm(value: time) -> str:
    return value.strftime("%H:%M")


# --- Clients ------------------------------------------------------------------------


class ClientIn(InputSchema):
    phone: Phone
    timezone: Timezone
    operator_code: OperatorCode | None = Field(
        None, description="3 digits; taken from the phone (digits 2 to 4) when omitted."
    )
    tag: Tag = ""


class ClientPatch(InputSchema):
    phone: Phone = optional()
    timezone: Timezone = optional()
    operator_code: OperatorCode = optional()
    tag: Tag = optional()


class ClientOut(Schema):
    id: int
    phone: str
    operator_code: str
    tag: str
    timezone: str


# Query filters: absent means "any"; there is no null in a query string.
class ClientFilters(Schema):
    tag: Tag = None
    operator_code: Annotated[str, StringConstraints(pattern=OPERATOR_CODE_REGEX)] = None


# --- Mailings -----------------------------------------------------------------------


class FilterIn(InputSchema):
    operator_codes: list[OperatorCode] = Field(default_factory=list, max_length=LIST_MAX_ITEMS)
    tags: list[Tag] = Field(default_factory=list, max_length=LIST_MAX_ITEMS)


class FilterPatch(InputSchema):
    operator_codes: list[OperatorCode] = Field(None, max_length=LIST_MAX_ITEMS)
    tags: list[Tag] = Field(None, max_length=LIST_MAX_ITEMS)


class SendWindowIn(InputSchema):
    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindowIn:
        if self.start == self.end:
            raise ValueError("The window's start and end must differ.")
        return self

    def to_domain(self) -> SendWindow:
        return SendWindow(time.fromisoformat(self.start), time.fromisoformat(self.end))


class MailingIn(InputSchema):
    start_at: Moment
    end_at: Moment
    text: MessageText
    filter: FilterIn = Field(default_factory=FilterIn)
    send_window: SendWindowIn | None = None


class MailingPatch(InputSchema):
    start_at: Moment = optional()
    end_at: Moment = optional()
    text: MessageText = optional()
    filter: FilterPatch = optional("Only the lists given change.")
    send_window: SendWindowIn | None = Field(None, description="null removes the window.")


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


class FilterOut(Schema):
    operator_codes: list[str]
    tags: list[str]


class SendWindowOut(Schema):
    start: str = Field(examples=["09:00"])
    end: str = Field(examples=["21:00"])


class MailingOut(Schema):
    id: int
    start_at: UtcDatetime
    end_at: UtcDatetime
    text: str
    filter: FilterOut
    send_window: SendWindowOut | None
    status: MailingStatus
    stats: Counters

    @staticmethod
    def resolve_filter(obj: Mailing) -> dict[str, list[str]]:
        return {"operator_codes": list(obj.operator_codes), "tags": list(obj.tags)}

    @staticmethod
    def resolve_send_window(obj: Mailing) -> dict[str, str] | None:
        window = window_of(obj)
        if window is None:
            return None
        return {"start": _hhmm(window.start), "end": _hhmm(window.end)}

    @staticmethod
    def resolve_stats(obj: Mailing) -> dict[str, int]:
        return obj.counters()


class MailingFilters(Schema):
    status: MailingStatus = None


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


class PreviewIn(InputSchema):
    filter: FilterIn = Field(default_factory=FilterIn)
    send_window: SendWindowIn | None = None
    start_at: Moment | None = None
    end_at: Moment | None = None


class PreviewOut(Schema):
    matching: int = Field(description="Clients the filter matches.")
    reachable: int = Field(
        description="Of those, clients whose window opens inside [start_at, end_at) "
        "(all matching ones without a window or a period)."
    )
    timezones: int


# --- Statistics and health ------------------------------------------------------------


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
    heartbeat_at: UtcDatetime | None
    alive: bool


class ProviderHealthOut(Schema):
    paused_for_credentials: bool
    auth_error: str
    auth_failed_at: UtcDatetime | None
    dispatchers: list[DispatcherOut]


# --- Errors -------------------------------------------------------------------------


class ErrorOut(Schema):
    detail: str


class ErrorItem(Schema):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(Schema):
    detail: list[ErrorItem]
