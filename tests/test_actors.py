"""Who did it: every staff action's event names its actor (and the API token, if used)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from mailing import events, services
from mailing.engine import lifecycle
from mailing.models import ApiToken, Event, Mailing
from mailing.tokens import issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("alice", email="alice@example.com", is_staff=True)


@pytest.fixture
def web(staff) -> HttpClient:
    client = HttpClient()
    client.force_login(staff)
    return client


def _actor(event: Event) -> tuple[int | None, str, str]:
    return event.actor_id, event.actor_name, event.actor_token


def test_ui_actions_record_the_staff_member(web, staff):
    now = timezone.now()
    mailing = services.create_mailing(start_at=now, end_at=now + timedelta(hours=1), text="Hi")
    for action in ("pause", "resume", "cancel"):
        web.post(reverse("dashboard:mailing_action", args=[mailing.pk, action]))
    web.post(reverse("dashboard:mailing_delete", args=[mailing.pk]))
    by_kind = {e.kind: e for e in Event.objects.filter(mailing_id=mailing.pk)}
    for kind in (
        events.MAILING_PAUSED,
        events.MAILING_RESUMED,
        events.MAILING_CANCELLED,
        events.MAILING_DELETED,
    ):
        assert _actor(by_kind[kind]) == (staff.pk, "alice@example.com", ""), kind
    # What the service does by itself has no actor.
    assert _actor(by_kind[events.MAILING_STARTED]) == (None, "", "")
    assert _actor(by_kind[events.MAILING_CREATED]) == (None, "", "")  # created in the test


def test_ui_client_and_token_actions_record_the_staff_member(web, staff):
    web.post(
        reverse("dashboard:client_create"),
        {"phone": "79161234567", "operator_code": "", "tag": "", "timezone": "Europe/Moscow"},
    )
    created = Event.objects.get(kind=events.CLIENT_CREATED)
    assert _actor(created) == (staff.pk, "alice@example.com", "")
    web.post(reverse("dashboard:tokens"), {"name": "CRM sync"})
    token = ApiToken.objects.get(name="CRM sync")
    web.post(reverse("dashboard:token_revoke", args=[token.pk]))
    issued = Event.objects.get(kind=events.TOKEN_ISSUED)
    revoked = Event.objects.get(kind=events.TOKEN_REVOKED)
    assert issued.data == {"token_id": token.pk, "name": "CRM sync", "prefix": token.prefix}
    assert _actor(issued) == _actor(revoked) == (staff.pk, "alice@example.com", "")


def test_api_actions_record_the_token_owner_and_the_token(client, staff):
    _, key = issue_token(staff, "CRM sync")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    start = timezone.now() + timedelta(hours=1)
    answer = client.post(
        "/api/v1/mailings",
        {"start_at": start.isoformat(), "end_at": (start + timedelta(hours=1)).isoformat()}
        | {"text": "Hi"},
        content_type="application/json",
        **headers,
    )
    assert answer.status_code == 201, answer.content
    mailing_id = answer.json()["id"]
    client.post(f"/api/v1/mailings/{mailing_id}/cancel", **headers)
    timeline = client.get(f"/api/v1/mailings/{mailing_id}/events", **headers).json()["items"]
    actors = {event["kind"]: event["actor"] for event in timeline}
    expected = {"user_id": staff.pk, "name": "alice@example.com", "token": "CRM sync"}
    assert actors == {"mailing.created": expected, "mailing.cancelled": expected}


def test_timelines_show_who_did_it(web, staff):
    now = timezone.now()
    mailing = services.create_mailing(start_at=now, end_at=now + timedelta(hours=1), text="Hi")
    web.post(reverse("dashboard:mailing_action", args=[mailing.pk, "pause"]))
    lifecycle.tick(timezone.now())
    page = web.get(reverse("dashboard:mailing_detail", args=[mailing.pk])).content.decode()
    assert "by alice@example.com" in page
    assert Mailing.objects.get(pk=mailing.pk).status == "paused"
