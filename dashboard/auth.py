"""Who may sign in: staff identities of the company's OpenID Connect provider, nobody else.

There is no open sign-up and no local password sign-in. An identity is staff when its
verified e-mail is in one of ``OIDC_ALLOWED_EMAIL_DOMAINS`` or its ``groups`` claim holds
``OIDC_STAFF_GROUP``. Anyone else gets a clear refusal page (HTTP 403), not an error.
"""

from __future__ import annotations

import logging

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

logger = logging.getLogger("dashboard.auth")


def identity_claims(extra_data: dict) -> dict:
    """The claims of an OIDC identity: the ID token's, completed by the userinfo response."""
    claims: dict = {}
    for part in ("id_token", "userinfo"):
        value = extra_data.get(part)
        if isinstance(value, dict):
            claims.update(value)
    if not claims:  # data stored by older allauth versions: the claims themselves
        claims = dict(extra_data)
    return claims


def is_staff_identity(claims: dict) -> bool:
    email = claims.get("email")
    verified = claims.get("email_verified") in (True, "true", "True")
    domains = settings.OIDC_ALLOWED_EMAIL_DOMAINS
    if (
        isinstance(email, str)
        and verified
        and "@" in email
        and email.rsplit("@", 1)[1].lower() in domains
    ):
        return True
    group = settings.OIDC_STAFF_GROUP
    groups = claims.get("groups")
    return bool(group and isinstance(groups, list | tuple) and group in groups)


def refusal(request: HttpRequest, who: str = "") -> HttpResponse:
    return render(request, "dashboard/refused.html", {"who": who}, status=403)


class StaffOnlySocialAccountAdapter(DefaultSocialAccountAdapter):
    def pre_social_login(self, request, sociallogin) -> None:
        claims = identity_claims(sociallogin.account.extra_data or {})
        who = str(claims.get("email") or claims.get("preferred_username") or claims.get("sub"))
        if not is_staff_identity(claims):
            logger.warning("sign-in refused: not a staff identity", extra={"identity": who})
            raise ImmediateHttpResponse(refusal(request, who))
        user = sociallogin.user
        if sociallogin.is_existing and user.pk and not (user.is_staff and user.is_active):
            if not user.is_active:
                raise ImmediateHttpResponse(refusal(request, who))
            user.is_staff = True
            user.save(update_fields=["is_staff"])

    def is_open_for_signup(self, request, sociallogin) -> bool:
        # Only identities that passed pre_social_login reach this point.
        return is_staff_identity(identity_claims(sociallogin.account.extra_data or {}))

    def save_user(self, request, sociallogin, form=None):
        sociallogin.user.is_staff = True
        user = super().save_user(request, sociallogin, form)
        logger.info("staff user created from sign-in", extra={"user_id": user.pk})
        return user


class NoLocalAccountAdapter(DefaultAccountAdapter):
    """No local sign-up: accounts only come from the identity provider."""

    def is_open_for_signup(self, request) -> bool:
        return False
