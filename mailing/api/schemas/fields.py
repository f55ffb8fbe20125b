"""The building blocks of the request and response shapes: typed, bounded fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import (
    MISSING,
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from mailing.rules import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    NAME_MAX_LENGTH,
    OPERATOR_CODE_LENGTH,
    OPERATOR_CODE_REGEX,
    PHONE_LENGTH,
    PHONE_REGEX,
    TAG_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    TIMEZONE_MAX_LENGTH,
)

# --- Input building blocks ----------------------------------------------------------
# (The phone's documented pattern is enforced by the services; the operator-code pattern
# is enforced here too because the preview and the list filter reach no service.)

HHMM_REGEX = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
# The phones as numbers: 7 followed by PHONE_LENGTH - 1 digits.
PHONE_MIN = 7 * 10 ** (PHONE_LENGTH - 1)
PHONE_MAX = 8 * 10 ** (PHONE_LENGTH - 1) - 1


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
Timezone = _text(TIMEZONE_MAX_LENGTH, 1, examples=["Europe/Moscow"])
OperatorCode = _text(
    OPERATOR_CODE_LENGTH, OPERATOR_CODE_LENGTH, pattern=OPERATOR_CODE_REGEX, examples=["916"]
)
MessageText = _text(TEXT_MAX_LENGTH, 1)
MailingName = _text(NAME_MAX_LENGTH, 1, examples=["Spring sale, Moscow"])
Phone = Annotated[
    str,
    BeforeValidator(_phone_to_text),
    StringConstraints(max_length=PHONE_LENGTH),
    AfterValidator(_no_nul),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PHONE_REGEX},
                {"type": "integer", "minimum": PHONE_MIN, "maximum": PHONE_MAX},
            ],
            "description": f"{PHONE_LENGTH} digits starting with 7, as text or as a number.",
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


def absent(description: str | None = None) -> Any:
    """The default of a field that may be left out, typed ``X | MISSING``: absent, it is
    ``MISSING`` (left out of ``model_dump``); an explicit null fails the type check (422).

    Given by a factory: django-ninja's schema generator cannot encode the sentinel as a
    default (and a field that may be absent has no default to document).
    """
    return Field(default_factory=lambda: MISSING, description=description)


class InputSchema(Schema):
    model_config = ConfigDict(extra="forbid")
