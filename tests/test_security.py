"""HTTP protections: a Content-Security-Policy without inline script, a sign-in rate limit."""

from __future__ import annotations

import pytest
from django.test import Client as HttpClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/sign-in/", "/docs/", "/api/v1/openapi.json", "/"])
def test_every_page_has_a_policy_that_allows_no_inline_script(path):
    response = HttpClient().get(path)
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy["script-src"] and "unsafe-eval" not in policy["script-src"]


def test_no_template_has_an_inline_script_or_event_handler():
    from pathlib import Path

    from django.conf import settings

    for template in Path(settings.BASE_DIR, "templates").rglob("*.html"):
        source = template.read_text()
        for line in source.splitlines():
            if "<script" in line:
                assert "src=" in line or 'type="application/json"' in line, (template, line)
            assert " onclick=" not in line and " onload=" not in line, (template, line)


def test_sign_in_attempts_are_rate_limited_per_address(settings):
    settings.LOGIN_RATE_LIMIT = 3
    start_sign_in = "/accounts/oidc/sso/login/"
    client = HttpClient(REMOTE_ADDR="203.0.113.7")
    statuses = [client.post(start_sign_in).status_code for _ in range(5)]
    assert 429 not in statuses[:3]
    assert statuses[3:] == [429, 429]
    limited = client.post(start_sign_in)
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert b"Too many sign-in attempts" in limited.content
    # Reading the sign-in page is not an attempt; other addresses are not affected.
    assert client.get("/sign-in/").status_code == 200
    assert HttpClient(REMOTE_ADDR="203.0.113.8").post(start_sign_in).status_code != 429


def test_an_unreachable_identity_provider_is_a_clear_503_not_an_error(settings):
    app = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]
    # Nothing listens on port 9 of loopback (discard), so the discovery fetch fails.
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            **settings.SOCIALACCOUNT_PROVIDERS["openid_connect"],
            "APPS": [{**app, "settings": {"server_url": "http://127.0.0.1:9"}}],
        }
    }
    response = HttpClient().post("/accounts/oidc/sso/login/")
    assert response.status_code == 503
    assert b"Sign-in is unavailable right now" in response.content
