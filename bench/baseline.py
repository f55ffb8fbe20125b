"""The naive design the dispatch benchmark compares against: one q2 task per message, each
sending synchronously with ``requests`` and marking its message sent (run by real q2
workers, imported by them as ``bench.baseline``)."""

from __future__ import annotations

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from mailing.models import Mailing, Message, MessageStatus


def send_one(message_id: int) -> str:
    """Send one message and record the answer: the whole naive pipeline for one message."""
    message = Message.objects.select_related("mailing").get(pk=message_id)
    response = requests.post(
        f"{settings.PROBE_URL}/send/{message.pk}",
        json={"id": message.pk, "phone": int(message.phone), "text": message.mailing.text},
        headers={"Authorization": f"Bearer {settings.PROBE_TOKEN}"},
        timeout=settings.PROBE_TOTAL_TIMEOUT,
    )
    accepted = response.status_code == 200 and response.json().get("code") == 0
    if not accepted:
        return f"not accepted: {response.status_code}"
    with transaction.atomic():
        changed = Message.objects.filter(pk=message.pk, status=MessageStatus.PENDING).update(
            status=MessageStatus.SENT, sent_at=timezone.now(), attempts=F("attempts") + 1
        )
        if changed:
            Mailing.objects.filter(pk=message.mailing_id).update(
                pending=F("pending") - 1, sent=F("sent") + 1
            )
    return "sent"
