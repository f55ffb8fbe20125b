"""Cross-cutting HTTP protections: a Content-Security-Policy and a sign-in rate limit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlparse

import requests
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

logger = logging.getLogger("ops.security")


def _origin(url: str) -> str:
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _identity_provider_origins() -> list[str]:
    """Origins of the configured OpenID Connect providers (allauth's own configuration)."""
    apps = settings.SOCIALACCOUNT_PROVIDERS.get("openid_connect", {}).get("APPS", [])
    origins = {_origin(app.get("settings", {}).get("server_url", "")) for app in apps}
    return sorted(origin for origin in origins if origin)


def content_security_policy() -> str:
    """No inline or third-party script anywhere. Sign-in forms may lead to the identity
    provider (form-action covers the redirect after the POST that starts the OIDC flow)."""
    form_targets = " ".join(["'self'", *_identity_provider_origins()])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            # Inline style attributes (progress bars) are harmless; inline script is not.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            f"form-action {form_targets}",
            "frame-ancestors 'none'",
            "base-uri 'self'",
            "object-src 'none'",
        ]
    )


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", content_security_policy())
        return response


def client_address(request: HttpRequest) -> str:
    """The address of the client, as far as the configured proxies vouch for it.

    Each of the TRUSTED_PROXY_COUNT proxies in front of the app appends the address it got
    the request from to ``X-Forwarded-For``; whatever stands left of those entries was
    written by the client and proves nothing. So the client is the entry the outermost
    trusted proxy added: the N-th from the right. With no trusted proxy (the default), or
    fewer entries than proxies, it is the peer address itself.
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies > 0:
        entries = [e.strip() for e in request.headers.get("X-Forwarded-For", "").split(",")]
        entries = [entry for entry in entries if entry]
        if len(entries) >= proxies:
            return entries[-proxies]
    return request.META.get("REMOTE_ADDR", "")


class SignInRateLimitMiddleware:
    """At most LOGIN_RATE_LIMIT sign-in attempts per client address per window.

    An attempt is a POST to a sign-in path (starting an OIDC sign-in is a POST; allauth
    does not start one on GET), so a script hammering sign-in gets 429 instead of loading
    the identity provider, while reading the sign-in page costs nothing. The counter lives
    in the cache (Redis when REDIS_URL is set, so it holds across web processes).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit, window = settings.LOGIN_RATE_LIMIT, settings.LOGIN_RATE_WINDOW_SECONDS
        if (
            limit > 0
            and request.method == "POST"
            and request.path.startswith(settings.LOGIN_RATE_LIMIT_PATHS)
        ):
            bucket = int(time.time() // window)
            key = f"signin-rate:{client_address(request)}:{bucket}"
            cache.add(key, 0, timeout=window * 2)
            try:
                attempts = cache.incr(key)
            except ValueError:  # evicted between add and incr: count this one as the first
                cache.set(key, 1, timeout=window * 2)
                attempts = 1
            if attempts > limit:
                body = render_to_string("errors/rate_limited.html", request=request)
                response = HttpResponse(body, status=429)
                response["Retry-After"] = str(window - int(time.time()) % window)
                return response
        return self.get_response(request)


class IdentityProviderUnavailableMiddleware:
    """Starting a sign-in while the identity provider is unreachable: a clear 503 page,
    not a server error (allauth fetches the provider's discovery document then)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, requests.RequestException):
            return None
        if not request.path.startswith(settings.LOGIN_RATE_LIMIT_PATHS):
            return None
        logger.warning("identity provider unreachable during sign-in: %s", exception)
        body = render_to_string("errors/sign_in_unavailable.html", request=request)
        return HttpResponse(body, status=503)
