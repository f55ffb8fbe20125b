"""Shapes of ``/clients``."""

from __future__ import annotations

from typing import Annotated

from ninja import Field, Schema
from pydantic import MISSING, StringConstraints

from mailing.api.schemas.fields import (
    InputSchema,
    OperatorCode,
    Phone,
    Tag,
    Timezone,
    absent,
)
from mailing.rules import OPERATOR_CODE_REGEX


class ClientIn(InputSchema):
    phone: Phone
    timezone: Timezone
    operator_code: OperatorCode | None = Field(
        None, description="3 digits; taken from the phone (digits 2 to 4) when omitted."
    )
    tag: Tag = ""


# PATCH fields may be absent (MISSING: left out of model_dump); null is refused (422).
class ClientPatch(InputSchema):
    phone: Phone | MISSING = absent()
    timezone: Timezone | MISSING = absent()
    operator_code: OperatorCode | MISSING = absent()
    tag: Tag | MISSING = absent()


class ClientOut(Schema):
    id: int
    phone: str
    operator_code: str
    tag: str
    timezone: str


# Query filters: absent means "any"; there is no null in a query string.
class ClientFilters(Schema):
    tag: Tag | MISSING = absent()
    operator_code: Annotated[str, StringConstraints(pattern=OPERATOR_CODE_REGEX)] | MISSING = (
        absent()
    )
