"""Facts about the send API shared by every worker: the send-rate budget and whether the
provider has refused our credentials. Both live in one database row (id=1)."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction

from mailing.engine import rate as rate_bucket
from mailing.models import ProviderState
from mailing.rules import ERROR_MAX_LENGTH

logger = logging.getLogger("mailing.engine")


def _locked_state() -> ProviderState:
    ProviderState.objects.get_or_create(pk=1)
    return ProviderState.objects.select_for_update().get(pk=1)


def acquire_send_permits(wanted: int, rate: float, now: datetime) -> int:
    """Take up to ``wanted`` permits from the shared token bucket refilled at ``rate``/s.

    Every worker draws from the same bucket, so the limit holds across workers and hosts.
    A rate of 0 (or less) means no limit.
    """
    if rate <= 0 or wanted <= 0:
        return max(wanted, 0)
    with transaction.atomic():
        state = _locked_state()
        granted, state.rate_tokens = rate_bucket.take(
            state.rate_tokens, state.rate_refreshed_at, rate, now, wanted
        )
        state.rate_refreshed_at = now
        state.save(update_fields=["rate_tokens", "rate_refreshed_at", "updated_at"])
    return granted


def mark_unauthorized(detail: str, now: datetime) -> None:
    with transaction.atomic():
        state = _locked_state()
        first = state.auth_failed_at is None
        state.auth_failed_at = now
        state.auth_error = detail[:ERROR_MAX_LENGTH]
        state.save(update_fields=["auth_failed_at", "auth_error", "updated_at"])
    if first:
        logger.error(
            "the send API refused our credentials (%s): sending is paused until PROBE_TOKEN "
            "works again; messages are kept pending",
            detail,
            extra={"provider_auth": "refused"},
        )


def clear_unauthorized() -> None:
    if ProviderState.objects.filter(pk=1, auth_failed_at__isnull=False).update(
        auth_failed_at=None, auth_error=""
    ):
        logger.warning("the send API accepts our credentials again: sending resumes")


def unauthorized_since() -> datetime | None:
    return ProviderState.objects.filter(pk=1).values_list("auth_failed_at", flat=True).first()
