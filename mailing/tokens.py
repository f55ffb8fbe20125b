"""API tokens: issue, revoke, authenticate. Only a SHA-256 of each key is ever stored.

A key looks like ``mls_<43 url-safe characters>``; it is shown once, when issued. The first
characters are kept as ``prefix`` so staff can tell their tokens apart in lists.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from mailing import events, selectors
from mailing.actors import Actor
from mailing.models import ApiToken
from mailing.rules import TOKEN_MAX_DAYS, TOKEN_NAME_MAX_LENGTH

logger = logging.getLogger("mailing.tokens")

KEY_PREFIX = "mls_"
PREFIX_LENGTH = 12
# Keys we issue are 47 characters; anything much longer is not worth hashing.
KEY_MAX_LENGTH = 128
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(
    user: User, name: str, *, days: int | None = None, actor: Actor | None = None
) -> tuple[ApiToken, str]:
    """Create a token for ``user`` that lives ``days`` (default API_TOKEN_DAYS); returns the
    row and the raw key (shown once, never stored)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > TOKEN_NAME_MAX_LENGTH or not name.isprintable():
        raise ValidationError(
            {"name": [f"A token name is 1 to {TOKEN_NAME_MAX_LENGTH} printable characters."]}
        )
    days = settings.API_TOKEN_DAYS if days is None else days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= TOKEN_MAX_DAYS:
        raise ValidationError({"days": [f"A token lives 1 to {TOKEN_MAX_DAYS} days."]})
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name,
            prefix=key[:PREFIX_LENGTH],
            key_hash=hash_key(key),
            expires_at=timezone.now() + timedelta(days=days),
        )
        events.record(events.TOKEN_ISSUED, actor=actor, **_token_data(token))
    logger.info(
        "API token issued",
        extra={"token_id": token.pk, "token_prefix": token.prefix, "user_id": user.pk},
    )
    return token, key


def _token_data(token: ApiToken) -> dict[str, Any]:
    return {"token_id": token.pk, "name": token.name, "prefix": token.prefix}


def revoke_token(token: ApiToken, *, actor: Actor | None = None) -> ApiToken:
    """Revoke a token (idempotent: a second revoke keeps the first time)."""
    now = timezone.now()
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        if revoked:
            events.record(events.TOKEN_REVOKED, at=now, actor=actor, **_token_data(token))
    if revoked:
        logger.info("API token revoked", extra={"token_id": token.pk, "token_prefix": token.prefix})
    token.refresh_from_db(fields=["revoked_at"])
    return token


def reissue_token(user: User, name: str) -> str:
    """Revoke ``user``'s live tokens labelled ``name`` and issue a fresh one; its raw key."""
    for old in selectors.live_tokens_named(user.pk, name):
        revoke_token(old)
    _, key = issue_token(user, name)
    return key


def authenticate_key(key: str) -> User | None:
    """The active staff user owning this live key, or None."""
    token = authenticate_token(key)
    return token.user if token is not None else None


def authenticate_token(key: str) -> ApiToken | None:
    """The live (not revoked, not expired) token of this key, owned by an active staff user
    (``token.user``), or None.

    Marks the token used, at most once a minute (a conditional UPDATE, so busy clients do
    not write on every request).
    """
    if not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) > KEY_MAX_LENGTH:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(
            key_hash=hash_key(key),
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
            user__is_active=True,
            user__is_staff=True,
        )
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return token
