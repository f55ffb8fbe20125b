"""Bearer-token authentication of the JSON API (tokens belong to active staff users)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from ninja.security import HttpBearer

from mailing.tokens import authenticate_key


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer mls_...``; answers 401 for a missing, unknown or revoked key."""

    def authenticate(self, request: HttpRequest, token: str) -> AbstractBaseUser | None:
        return authenticate_key(token.strip())
