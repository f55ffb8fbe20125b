"""Structured logging: every line about a mailing, message or client carries their ids.

Code logs with ``extra={"mailing_id": ..., "message_id": ..., "client_id": ...}``; a request
id bound by ops.request_ids (or around any unit of work, with ``bind``) is added to every
line through a context variable, so one grep finds everything about one id.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

ID_FIELDS = ("request_id", "mailing_id", "message_id", "client_id")
_bound: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "log_context", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add fields to every log line emitted inside the block (this thread or task only)."""
    merged = {**(_bound.get() or {}), **fields}
    token = _bound.set(merged)
    try:
        yield
    finally:
        _bound.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record, never overwriting an explicit extra."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_bound.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_extra_fields(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable, with the id fields appended as key=value so grep still works."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _extra_fields(record)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line
