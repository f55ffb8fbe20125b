"""The error answers every operation declares in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from mailing.api.schemas.errors import ErrorOut, ValidationErrorOut


def responses(
    ok: dict[int, Any], *, not_found: bool = False, conflict: bool = False, body: bool = False
) -> dict[int, Any]:
    """``ok`` plus 401 and 422 always, 404 for an id in the path, 409, 413 for a body."""
    declared: dict[int, Any] = {**ok, 401: ErrorOut, 422: ValidationErrorOut}
    if not_found:
        declared[404] = ErrorOut
    if conflict:
        declared[409] = ErrorOut
    if body:
        declared[413] = ErrorOut
    return declared
