from __future__ import annotations

from dashboard.middleware import zone_of
from mailing.rules import known_timezones


def ui(request) -> dict:
    if not request.path.startswith(("/api/", "/admin/")):
        return {
            "ui_timezone": zone_of(request),
            "ui_timezones": sorted(known_timezones()),
        }
    return {}
