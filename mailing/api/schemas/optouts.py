"""Shapes of ``/opt-outs``: phones that are never texted."""

from __future__ import annotations

from typing import Annotated

from ninja import Schema
from pydantic import MISSING, StringConstraints

from mailing.api.schemas.fields import InputSchema, Phone, UtcDatetime, absent
from mailing.rules import PHONE_LENGTH


class OptOutIn(InputSchema):
    phone: Phone


class OptOutOut(Schema):
    phone: str
    created_at: UtcDatetime


class OptOutFilters(Schema):
    search: (
        Annotated[str, StringConstraints(max_length=PHONE_LENGTH, pattern=r"^[0-9]*$")] | MISSING
    ) = absent("Digits anywhere in the phone.")
