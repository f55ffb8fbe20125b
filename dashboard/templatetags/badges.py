"""One status vocabulary for the whole UI: ``{% status_badge value %}`` renders every badge.

The words come from the models' status choices (``MailingStatus``, ``MessageStatus``), so a
status reads the same on every page; the tone picks the colour, and the word is always
written out, so a badge is readable without colour.
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from mailing.models import MailingStatus, MessageStatus

register = template.Library()

# Tone of each state: the badge's colour class (static/css/app.css ``.badge-<tone>``).
TONES: dict[str, str] = {
    MailingStatus.DRAFT: "neutral",
    MailingStatus.SCHEDULED: "info",
    MailingStatus.RUNNING: "active",
    MailingStatus.PAUSED: "warning",
    MailingStatus.FINISHED: "done",
    MailingStatus.CANCELLED: "neutral",
    MessageStatus.PENDING: "info",
    MessageStatus.SENT: "success",
    MessageStatus.FAILED: "danger",
    MessageStatus.EXPIRED: "warning",
}

# States that are not a mailing's or a message's, shown with the same badge.
OTHER_STATES: dict[str, tuple[str, str]] = {
    "circuit-closed": ("Circuit closed", "success"),
    "circuit-half_open": ("Circuit half-open", "warning"),
    "circuit-open": ("Circuit open", "danger"),
    "alive": ("Alive", "success"),
    "not-running": ("Not running", "danger"),
    "token-active": ("Active", "success"),
    "token-revoked": ("Revoked", "neutral"),
    "token-expired": ("Expired", "neutral"),
}

_LABELS = {choice.value: choice.label for choice in (*MailingStatus, *MessageStatus)}


def badge_parts(value: object) -> tuple[str, str]:
    """The word and the tone of a state (unknown states: their value, neutral)."""
    key = str(value or "")
    if key in OTHER_STATES:
        return OTHER_STATES[key]
    label = _LABELS.get(key) or key.replace("_", " ").capitalize()
    return label, TONES.get(key, "neutral")


@register.simple_tag
def status_badge(value: object, suffix: str = "", testid: str = "") -> SafeString:
    """``<span class="badge badge-<tone>" data-status="<value>">Word</span>``; ``suffix``
    follows the word (a count, a time)."""
    label, tone = badge_parts(value)
    text = f"{label} {suffix}".strip() if suffix != "" else label
    if testid:
        return format_html(
            '<span class="badge badge-{}" data-status="{}" data-testid="{}">{}</span>',
            tone,
            value,
            testid,
            text,
        )
    return format_html('<span class="badge badge-{}" data-status="{}">{}</span>', tone, value, text)
