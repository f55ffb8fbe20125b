"""Who may sign in: staff identities of the company's OpenID Connect provider, nobody else.

There is no open sign-up and no local password sign-in. An identity is staff when its
verified e-mail is in one of ``OIDC_ALLOWED_EMAIL_DOMAINS`` or its ``groups`` claim holds
``OIDC_STAFF_GROUP``. Anyone else gets a clear refusal page (HTTP 403), not an error.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url

logger = logging.getLogger("dashboard.auth")

# The one identity provider of the staff UI (SOCIALACCOUNT_PROVIDERS' provider_id).
OIDC_PROVIDER_ID = "sso"


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
            # Made inactive or non-staff in the app: the identity provider does not undo it.
            logger.warning(
                "sign-in refused: the user is not active staff here",
                extra={"identity": who, "user_id": user.pk},
            )
            raise ImmediateHttpResponse(refusal(request, who))
        if sociallogin.account.pk is None and sociallogin.is_existing and user.is_superuser:
            # A new identity that allauth matched by e-mail to a local account, which it
            # would connect: never to a superuser's (an identity is easier to get).
            logger.warning("sign-in refused: would connect to a superuser", extra={"identity": who})
            raise ImmediateHttpResponse(refusal(request, who))

    def is_open_for_signup(self, request, sociallogin) -> bool:
        # Only identities that passed pre_social_login reach this point.
        return is_staff_identity(identity_claims(sociallogin.account.extra_data or {}))

    def save_user(self, request, sociallogin, form=None):
        sociallogin.user.is_staff = True
        user = super().save_user(request, sociallogin, form)
        logger.info("staff user created from sign-in", extra={"user_id": user.pk})
        return user


# The provider's end_session_endpoint, from its discovery document, for an hour.
END_SESSION_CACHE_KEY = "dashboard.auth.end_session_endpoint"
END_SESSION_CACHE_SECONDS = 3600


def end_session_endpoint(request: HttpRequest) -> str:
    """Where the identity provider ends its own session ("" when it has no such endpoint
    or cannot be asked right now: the sign-out then ends our session only)."""
    cached = cache.get(END_SESSION_CACHE_KEY)
    if cached is not None:
        return cached
    from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter

    try:
        config = OpenIDConnectOAuth2Adapter(request, OIDC_PROVIDER_ID).openid_config
    except Exception:  # the provider is down or misconfigured: sign out locally anyway
        logger.warning("identity provider discovery failed; local sign-out only", exc_info=True)
        return ""
    endpoint = str(config.get("end_session_endpoint") or "")
    cache.set(END_SESSION_CACHE_KEY, endpoint, END_SESSION_CACHE_SECONDS)
    return endpoint


class NoLocalAccountAdapter(DefaultAccountAdapter):
    """No local sign-up: accounts only come from the identity provider."""

    def is_open_for_signup(self, request) -> bool:
        return False

    def get_logout_redirect_url(self, request: HttpRequest) -> str:
        """Sign-out ends the identity provider's session too (OpenID Connect RP-Initiated
        Logout), so the next "Continue" asks for the password instead of signing straight
        back in; the provider then sends the browser back to our sign-in page."""
        local = super().get_logout_redirect_url(request)
        endpoint = end_session_endpoint(request)
        if not endpoint:
            return local
        app = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]
        query = urlencode(
            {
                "client_id": app["client_id"],
                "post_logout_redirect_uri": request.build_absolute_uri(resolve_url(local)),
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
