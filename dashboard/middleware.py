"""Times in the staff member's own time zone (a session preference, default TIME_ZONE), and
the staff session's lifetime (absolute and idle, docs/security.md)."""

from __future__ import annotations

import logging
import time
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import logout
from django.utils import timezone

from mailing.rules import known_timezones

logger = logging.getLogger("dashboard.sessions")

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


# When the session's user signed in and was last seen (seconds since the epoch).
SIGNED_IN_KEY = "ui_signed_in_at"
SEEN_KEY = "ui_seen_at"
# The last-seen time is written at most this often (a session save per request is not).
SEEN_RESOLUTION_SECONDS = 60


def start_session_clock(sender, request, user, **kwargs) -> None:
    """``user_logged_in``: a new sign-in starts both clocks."""
    now = time.time()
    request.session[SIGNED_IN_KEY] = now
    request.session[SEEN_KEY] = now


def session_expired(session, now: float) -> bool:
    signed_in = session.get(SIGNED_IN_KEY)
    seen = session.get(SEEN_KEY, signed_in)
    if not isinstance(signed_in, int | float) or not isinstance(seen, int | float):
        return True  # a session from before the clocks, or tampered with: sign in again
    return (
        now - signed_in > settings.SESSION_MAX_AGE_SECONDS
        or now - seen > settings.SESSION_IDLE_SECONDS
    )


class SessionLifetimeMiddleware:
    """Ends a signed-in session past its absolute age or its idle time: the request goes on
    as anonymous (the views send it to sign-in, the identity provider decides again)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = time.time()
            if session_expired(request.session, now):
                logger.info("session ended: too old or idle", extra={"user_id": user.pk})
                logout(request)
            elif now - request.session[SEEN_KEY] >= SEEN_RESOLUTION_SECONDS:
                request.session[SEEN_KEY] = now
        return self.get_response(request)
