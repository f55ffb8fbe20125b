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


def forged_attempts(client: HttpClient, settings, forwarded: list[str]) -> list[int]:
    settings.LOGIN_RATE_LIMIT = 3
    return [
        client.post("/accounts/oidc/sso/login/", HTTP_X_FORWARDED_FOR=value).status_code
        for value in forwarded
    ]


def test_a_forged_forwarded_for_is_ignored_without_trusted_proxies(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    client = HttpClient(REMOTE_ADDR="203.0.113.20")
    statuses = forged_attempts(client, settings, [f"198.51.100.{n}" for n in range(6)])
    assert statuses[3:] == [429, 429, 429]


def test_behind_one_proxy_the_client_written_entries_do_not_count(settings):
    """The ingress appends the real peer; rotating what stands left of it changes nothing."""
    settings.TRUSTED_PROXY_COUNT = 1
    client = HttpClient(REMOTE_ADDR="10.1.0.5")  # the ingress pod
    forged = [f"198.51.100.{n}, 192.0.2.44" for n in range(6)]
    assert forged_attempts(client, settings, forged)[3:] == [429, 429, 429]
    # Another real client behind the same ingress is counted apart.
    assert forged_attempts(client, settings, ["192.0.2.45"]) != [429]


def test_behind_two_proxies_the_outer_ones_entry_is_the_client(settings):
    settings.TRUSTED_PROXY_COUNT = 2
    client = HttpClient(REMOTE_ADDR="10.1.0.5")
    forged = [f"198.51.100.{n}, 192.0.2.50, 10.2.0.1" for n in range(6)]
    assert forged_attempts(client, settings, forged)[3:] == [429, 429, 429]
    # Fewer entries than proxies: the header is not believed, the peer is counted.
    assert forged_attempts(HttpClient(REMOTE_ADDR="10.1.0.6"), settings, ["1.2.3.4"] * 4)[3] == 429


def test_the_running_app_reaches_429_whatever_forwarded_for_says(live_server, settings):
    import requests

    settings.LOGIN_RATE_LIMIT = 3
    url = f"{live_server.url}/accounts/oidc/sso/login/"
    statuses = [
        requests.post(
            url, headers={"X-Forwarded-For": f"198.51.100.{n}"}, allow_redirects=False, timeout=10
        ).status_code
        for n in range(5)
    ]
    # The first attempts fail CSRF (403): counted all the same, as any flood would be.
    assert statuses[3:] == [429, 429], statuses


def test_gunicorn_believes_forwarded_headers_only_from_its_setting(monkeypatch):
    import runpy

    from django.conf import settings as django_settings

    conf = str(django_settings.BASE_DIR / "deploy" / "gunicorn.conf.py")
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert runpy.run_path(conf)["forwarded_allow_ips"] == "127.0.0.1,::1"
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8")
    assert runpy.run_path(conf)["forwarded_allow_ips"] == "10.0.0.0/8"


def test_hsts_preload_only_when_asked(settings):
    from django.test import override_settings

    settings.SECURE_HSTS_SECONDS = 600
    secure = {"wsgi.url_scheme": "https", "SERVER_PORT": "443"}
    with override_settings(SECURE_HSTS_PRELOAD=False):
        header = HttpClient().get("/sign-in/", secure=True, **secure)["Strict-Transport-Security"]
        assert "preload" not in header and "max-age=600" in header
    with override_settings(SECURE_HSTS_PRELOAD=True):
        header = HttpClient().get("/sign-in/", secure=True, **secure)["Strict-Transport-Security"]
        assert "preload" in header


@pytest.mark.parametrize(
    ("next_url", "kept"),
    [
        ("/clients/", True),
        ("https://testserver/clients/", True),
        ("http://testserver/clients/", False),  # DEBUG is off: no plain-HTTP redirect target
        ("https://evil.example/", False),
    ],
)
def test_sign_in_keeps_only_safe_next_urls(next_url, kept):
    page = HttpClient().get("/sign-in/", {"next": next_url}).content.decode()
    assert (f'value="{next_url}"' in page) == kept, page[:2000]
