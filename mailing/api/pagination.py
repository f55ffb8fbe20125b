"""``limit``/``offset`` pagination answering ``{"items": [...], "count": n}``."""

from __future__ import annotations

from django.conf import settings
from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination

# Any offset past the end just gives an empty page; the bound keeps it inside int64.
MAX_OFFSET = 10**12


class ApiPagination(LimitOffsetPagination):
    class Input(Schema):
        limit: int = Field(
            settings.NINJA_PAGINATION_PER_PAGE, ge=1, le=settings.NINJA_PAGINATION_MAX_LIMIT
        )
        offset: int = Field(0, ge=0, le=MAX_OFFSET)
