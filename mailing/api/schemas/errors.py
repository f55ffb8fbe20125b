"""Shapes of the error answers (401, 404, 409, 413, 422)."""

from __future__ import annotations

from ninja import Schema
from pydantic import (
    ConfigDict,
)


class ErrorOut(Schema):
    detail: str


class ErrorItem(Schema):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(Schema):
    detail: list[ErrorItem]
