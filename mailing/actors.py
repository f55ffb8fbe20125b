"""Who did it: the staff member behind an action, and the API token when it came that way.

Every service that acts for staff takes ``actor: Actor | None``; ``events.record`` stores it
on the event (columns, so the Activity page filters by person with an index). ``None`` is
the service itself: the engine's ticks, fan-out, sending.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from mailing.rules import ACTOR_NAME_MAX_LENGTH

# Set on an API request by the token authentication: the ApiToken row used.
API_TOKEN_ATTR = "api_token"  # noqa: S105 (an attribute name)


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: int | None
    name: str
    # The name of the API token used; empty for the web UI.
    token: str = ""

    @classmethod
    def of_user(cls, user: AbstractBaseUser, token: str = "") -> Actor:
        name = getattr(user, "email", "") or user.get_username()
        return cls(user_id=user.pk, name=name[:ACTOR_NAME_MAX_LENGTH], token=token)

    @classmethod
    def of_request(cls, request: HttpRequest) -> Actor | None:
        """The signed-in staff member of a UI request, or the token owner of an API call."""
        api_token = getattr(request, API_TOKEN_ATTR, None)
        if api_token is not None:
            return cls.of_user(api_token.user, token=api_token.name)
        user = getattr(request, "user", None)
        if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
            return None
        return cls.of_user(user)

    def __str__(self) -> str:
        return f"{self.name} (API token “{self.token}”)" if self.token else self.name
