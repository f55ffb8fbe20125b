"""Bearer-token authentication of the JSON API (tokens belong to active staff users)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from ninja.security import HttpBearer

from mailing.actors import API_TOKEN_ATTR
from mailing.tokens import authenticate_token


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer mls_...``; answers 401 for a missing, unknown or revoked key.

    The token used is kept on the request, so what the call does is recorded as done by its
    owner through that token (``mailing.actors.Actor.of_request``)."""

    def authenticate(self, request: HttpRequest, token: str) -> AbstractBaseUser | None:
        api_token = authenticate_token(token.strip())
        if api_token is None:
            return None
        setattr(request, API_TOKEN_ATTR, api_token)
        return api_token.user
