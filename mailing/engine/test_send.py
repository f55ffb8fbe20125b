"""A test send: one mailing's text to one phone, now, through the provider client the
dispatchers use, outside the mailing's statistics (its msgId is of its own kind)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from mailing import events, rules, selectors, services
from mailing.actors import Actor
from mailing.engine.provider import HttpSendClient, OutgoingMessage, SendResult
from mailing.models import Event, Mailing
from mailing.rules import StateConflict

logger = logging.getLogger("mailing.engine")


def send_test(
    mailing: Mailing, *, phone: str, actor: Actor | None, now: datetime | None = None
) -> dict[str, object]:
    """Send the mailing's text to one phone now, through the same provider client, with a
    msgId of its own (``TEST_MSG_ID_BASE`` + its event's id), outside the statistics; the
    outcome goes on the mailing's timeline. Any state, drafts included; at most
    ``TEST_SENDS_PER_HOUR`` per staff member."""
    now = now or timezone.now()
    services.check_phone(phone)
    if actor is None or actor.user_id is None:
        raise StateConflict("A test send needs a staff member.")
    used = selectors.test_sends_since(actor.user_id, now - timedelta(hours=1))
    if used >= rules.TEST_SENDS_PER_HOUR:
        raise rules.TooManyRequests(
            f"At most {rules.TEST_SENDS_PER_HOUR} test sends an hour; try again later."
        )
    event = events.record(
        events.MAILING_TEST_SENT, mailing_id=mailing.pk, at=now, actor=actor, phone=phone
    )
    msg_id = rules.TEST_MSG_ID_BASE + event.pk
    result = asyncio.run(
        _send_one(OutgoingMessage(msg_id, phone, mailing.text, mailing.pk, client_id=None))
    )
    answer: dict[str, object] = {
        "msg_id": msg_id,
        "phone": phone,
        "outcome": result.outcome.value,
        "detail": result.detail,
    }
    Event.objects.filter(pk=event.pk).update(data=answer)
    logger.info(
        "test send %s",
        result.outcome.value,
        extra={"mailing_id": mailing.pk, "msg_id": msg_id, "outcome": result.outcome.value},
    )
    return answer


async def _send_one(message: OutgoingMessage) -> SendResult:
    bound = min(settings.PROBE_TOTAL_TIMEOUT, rules.TEST_SEND_SECONDS)
    async with HttpSendClient(
        settings.PROBE_URL,
        settings.PROBE_TOKEN,
        connect_timeout=min(settings.PROBE_CONNECT_TIMEOUT, bound),
        total_timeout=bound,
        max_connections=1,
    ) as client:
        return await client.send(message)
