"""Shapes of ``/clients``."""

from __future__ import annotations

from typing import Annotated

from ninja import Field, Schema
from pydantic import (
    StringConstraints,
)

from mailing.api.schemas.fields import (
    InputSchema,
    OperatorCode,
    Phone,
    Tag,
    Timezone,
    optional,
)
from mailing.rules import OPERATOR_CODE_REGEX


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
