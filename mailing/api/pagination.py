"""``limit``/``offset`` pagination answering ``{"items": [...], "count": n}``."""

from __future__ import annotations

from typing import Any

from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination

from mailing.rules import API_MAX_OFFSET, API_PAGE_MAX, API_PAGE_SIZE


class ApiPagination(LimitOffsetPagination):
    class Input(Schema):
        limit: int = Field(API_PAGE_SIZE, ge=1, le=API_PAGE_MAX)
        offset: int = Field(0, ge=0, le=API_MAX_OFFSET)

    def __init__(self, max_limit: int = API_PAGE_MAX, **kwargs: Any) -> None:
        super().__init__(max_limit=max_limit, **kwargs)
