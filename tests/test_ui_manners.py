"""Manners of a product: production error pages in the site's design, a favicon, and a
sign-out that ends the identity provider's session too."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client as HttpClient
from django.test import RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

from dashboard.auth import END_SESSION_CACHE_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(db) -> HttpClient:
    user = get_user_model().objects.create_user("erin", email="erin@example.com", is_staff=True)
    client = HttpClient(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_404_is_the_sites_page(web):
    response = web.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and 'class="site-header"' in page
    assert "favicon.svg" in page and "Go to the dashboard" in page


def test_500_renders_without_a_request_context():
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "something went wrong on our side" in page and "app.css" in page


def test_a_form_posted_without_its_token_gets_the_expired_form_page(web):
    response = web.post(reverse("dashboard:tokens"), {"name": "x"})
    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()


def test_favicon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")


def _logout(web: HttpClient):
    page = web.get(reverse("dashboard:home")).content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    return web.post(reverse("account_logout"), {"csrfmiddlewaretoken": token})


def test_sign_out_ends_the_providers_session_too(web):
    cache.set(END_SESSION_CACHE_KEY, "http://idp.test/session/end")
    response = _logout(web)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("http://idp.test/session/end?client_id=")
    assert "post_logout_redirect_uri=http%3A%2F%2Ftestserver%2Fsign-in%2F" in location
    assert web.get(reverse("dashboard:home")).status_code == 302  # signed out here too


def test_sign_out_without_a_reachable_provider_still_signs_out(web, settings):
    apps = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"]
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            **settings.SOCIALACCOUNT_PROVIDERS["openid_connect"],
            # Port 9 (discard) has nothing listening here: discovery fails at once.
            "APPS": [{**apps[0], "settings": {"server_url": "http://127.0.0.1:9"}}],
        }
    }
    response = _logout(web)
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:sign_in")
    assert web.get(reverse("dashboard:home")).status_code == 302
