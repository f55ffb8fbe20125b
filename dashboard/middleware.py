"""Times in the staff member's own time zone (a session preference, default TIME_ZONE)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from mailing.rules import known_timezones

SESSION_KEY = "ui_timezone"


def zone_of(request) -> str:
    name = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    return name if name in known_timezones() else settings.TIME_ZONE


class StaffTimezoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        timezone.activate(ZoneInfo(zone_of(request)))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
