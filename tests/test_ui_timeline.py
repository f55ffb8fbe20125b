"""Timelines on the pages of a mailing, a message and a client."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from django.utils import timezone

from mailing import services
from mailing.actors import Actor
from mailing.engine import lifecycle
from mailing.models import Message
from tests.conftest import now_plus

pytestmark = pytest.mark.django_db


@pytest.fixture
def web() -> HttpClient:
    staff = get_user_model().objects.create_user("tim", email="tim@example.com", is_staff=True)
    client = HttpClient()
    client.force_login(staff)
    return client


def test_mailing_message_and_client_pages_show_their_timelines(web):
    client = services.create_client(phone="79160000001", timezone="Europe/Moscow")
    services.update_client(client, tag="vip")
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(60), text="Hi")
    lifecycle.tick(timezone.now())
    services.pause_mailing(mailing)
    message = Message.objects.get(mailing=mailing)

    page = web.get(f"/mailings/{mailing.pk}/").content.decode()
    assert 'aria-label="Timeline"' in page
    assert page.index("mailing.created") < page.index("mailing.paused")
    assert f'href="/messages/{message.pk}/"' in page

    page = web.get(f"/messages/{message.pk}/").content.decode()
    assert f"Message {message.pk}" in page and message.phone in page
    assert "fan" in page  # the mailing's fan-out starts every message's timeline

    page = web.get(f"/clients/{client.pk}/edit/").content.decode()
    assert page.index("client.created") < page.index("client.updated")


def test_message_page_needs_sign_in_and_an_existing_message(web):
    assert HttpClient().get("/messages/1/").status_code == 302
    assert web.get("/messages/999999/").status_code == 404


def test_progress_is_zero_until_the_audience_exists():
    from mailing.selectors import mailing_stats

    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(60), text="Hi")
    assert mailing_stats(mailing)["progress"] == 0.0
    lifecycle.tick(timezone.now())  # no clients: an empty audience is all done
    mailing.refresh_from_db()
    assert mailing_stats(mailing)["progress"] == 1.0


def test_imported_clients_begin_their_timelines_like_any_other():
    from mailing.imports import import_clients_csv
    from mailing.models import Client
    from mailing.selectors import events_for

    csv_bytes = b"phone,tag,timezone\n79161110001,vip,Europe/Moscow\n79161110002,,Asia/Omsk\n"
    result = import_clients_csv([csv_bytes], actor=Actor(user_id=None, name="importer"))
    assert result.created == 2 and result.errors == []
    by_hand = services.create_client(phone="79161110003", timezone="Asia/Omsk")
    (by_hand_event,) = events_for(client_id=by_hand.pk)
    for phone, tag, zone in (
        ("79161110001", "vip", "Europe/Moscow"),
        ("79161110002", "", "Asia/Omsk"),
    ):
        (event,) = events_for(client_id=Client.objects.get(phone=phone).pk)
        assert event.kind == by_hand_event.kind == "client.created"
        # One payload however the client came (services.create_clients / create_client).
        assert event.data == {"phone": phone, "operator_code": "916", "tag": tag, "timezone": zone}
        assert event.data.keys() == by_hand_event.data.keys()
        assert event.actor_name == "importer"


def test_demo_data_goes_through_the_services_once():
    from django.core.management import call_command

    from mailing.models import Client, Event

    call_command("load_demo_data", clients=7, stdout=io.StringIO())
    call_command("load_demo_data", clients=7, stdout=io.StringIO())  # adds nothing
    assert Client.objects.count() == 7
    created = Event.objects.filter(kind="client.created")
    assert sorted(created.values_list("client_id", flat=True)) == sorted(
        Client.objects.values_list("id", flat=True)
    )
    assert all(
        set(event.data) == {"phone", "operator_code", "tag", "timezone"} for event in created
    )
