"""Off-boarding (docs/security.md): a user made non-staff or inactive is out at once in the UI
and the API; sessions end after their age or idle time; API tokens expire."""

from __future__ import annotations

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client as HttpClient
from django.utils import timezone

from dashboard.middleware import SEEN_KEY, SIGNED_IN_KEY
from mailing.models import ApiToken
from mailing.tokens import issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("olga", email="olga@example.com", is_staff=True)


@pytest.fixture
def web(staff) -> HttpClient:
    client = HttpClient()
    client.force_login(staff)
    return client


def api_get(key: str):
    return HttpClient().get("/api/v1/clients", HTTP_AUTHORIZATION=f"Bearer {key}")


def signed_out(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/sign-in/")


def test_a_demoted_user_is_refused_at_the_next_request_in_the_ui_and_the_api(web, staff):
    _, key = issue_token(staff, "crm")
    assert web.get("/mailings/").status_code == 200
    assert api_get(key).status_code == 200
    staff.is_staff = False
    staff.save(update_fields=["is_staff"])
    assert web.get("/mailings/").status_code == 403
    assert api_get(key).status_code == 401


def test_a_deactivated_user_is_signed_out_at_the_next_request_in_the_ui_and_the_api(web, staff):
    _, key = issue_token(staff, "crm")
    assert web.get("/mailings/").status_code == 200
    staff.is_active = False
    staff.save(update_fields=["is_active"])
    assert signed_out(web.get("/mailings/"))
    assert api_get(key).status_code == 401


def age_session(web: HttpClient, signed_in_ago: float, seen_ago: float) -> None:
    session = web.session
    now = time.time()
    session[SIGNED_IN_KEY] = now - signed_in_ago
    session[SEEN_KEY] = now - seen_ago
    session.save()


def test_a_session_ends_after_its_age_even_when_in_use(web, settings):
    settings.SESSION_MAX_AGE_SECONDS = 36_000
    age_session(web, signed_in_ago=36_000 - 60, seen_ago=1)
    assert web.get("/mailings/").status_code == 200
    age_session(web, signed_in_ago=36_000 + 1, seen_ago=1)
    assert signed_out(web.get("/mailings/"))
    assert signed_out(web.get("/mailings/"))  # the session is gone, not only this request


def test_a_session_ends_after_its_idle_time(web, settings):
    settings.SESSION_IDLE_SECONDS = 3_600
    age_session(web, signed_in_ago=3_000, seen_ago=3_000)
    assert web.get("/mailings/").status_code == 200
    # That request counted as activity: the idle clock started again.
    assert time.time() - web.session[SEEN_KEY] < 60
    age_session(web, signed_in_ago=3_700, seen_ago=3_601)
    assert signed_out(web.get("/mailings/"))


def test_a_session_without_its_clocks_is_ended(web):
    session = web.session
    del session[SIGNED_IN_KEY]
    session.save()
    assert signed_out(web.get("/mailings/"))


def test_the_session_cookie_lives_no_longer_than_the_session(settings):
    assert settings.SESSION_COOKIE_AGE == settings.SESSION_MAX_AGE_SECONDS == 36_000
    assert settings.SESSION_IDLE_SECONDS == 3_600


def test_tokens_expire_after_their_days(staff, settings):
    settings.API_TOKEN_DAYS = 90
    token, key = issue_token(staff, "default lifetime")
    lifetime = token.expires_at - timezone.now()
    assert timedelta(days=90) - timedelta(minutes=1) < lifetime <= timedelta(days=90)
    short, short_key = issue_token(staff, "a week", days=7)
    assert api_get(short_key).status_code == 200
    ApiToken.objects.filter(pk=short.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api_get(short_key).status_code == 401
    assert api_get(key).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize("days", [0, -1, 366, True])
def test_a_token_lifetime_out_of_bounds_is_refused(staff, days):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        issue_token(staff, "bad", days=days)
    assert not ApiToken.objects.exists()


def test_the_tokens_page_sets_and_shows_the_expiry(web, staff):
    page = web.get("/tokens/").content.decode()
    assert 'name="days"' in page and 'value="90"' in page
    response = web.post("/tokens/", {"name": "CRM sync", "days": "7"})
    assert response.status_code == 302
    token = ApiToken.objects.get()
    assert timedelta(days=7) - timedelta(minutes=1) < token.expires_at - timezone.now()
    page = web.get("/tokens/").content.decode()
    assert timezone.localtime(token.expires_at).strftime("%-d %b %Y") in page
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "Expired" in web.get("/tokens/").content.decode()


def test_the_tokens_page_refuses_a_bad_lifetime_and_issues_nothing(web):
    response = web.post("/tokens/", {"name": "CRM sync", "days": "0"})
    assert response.status_code == 200
    assert "greater than or equal to 1" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_create_api_token_takes_the_lifetime(staff):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "olga", "--days", "3", stdout=out, stderr=err)
    token = ApiToken.objects.get()
    assert timedelta(days=3) - timedelta(minutes=1) < token.expires_at - timezone.now()
    assert "expires" in err.getvalue()
    assert api_get(out.getvalue().strip()).status_code == 200
