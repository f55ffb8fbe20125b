"""Clients page: search in any notation, count, newest first, bounded pages, bulk actions,
CSV export of the filtered set."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from mailing import phones, services
from mailing.engine import lifecycle
from mailing.models import Client, Event, Message, MessageStatus
from mailing.rules import UI_PAGE_MAX
from tests.conftest import make_clients
from tests.test_ui import post


@pytest.fixture
def web(db):
    staff = get_user_model().objects.create_user("alice", is_staff=True)
    client = HttpClient(enforce_csrf_checks=True)
    client.force_login(staff)
    return client


def listed(web, **query) -> list[str]:
    response = web.get(reverse("dashboard:client_list"), query)
    assert response.status_code == 200
    return [row.record.phone for row in response.context["table"].page.object_list]


@pytest.mark.parametrize(
    "written",
    ["+7 916 123-45-67", "8 (916) 123-45-67", "79161234567", "89161234567", "+7(916)1234567"],
)
def test_every_common_notation_is_stored_as_eleven_digits(written):
    assert phones.normalise(written) == "79161234567"


@pytest.mark.parametrize("written", ["7916", "+1 650 253 0000", "abc", "", "7916123456789"])
def test_what_is_not_a_russian_number_is_left_for_the_service_to_word(written):
    assert phones.normalise(written) == written.strip()


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("916", {"79161234567", "79031916000"}),  # any part
        ("+7916", {"79161234567"}),  # a beginning, international
        ("8 (916", {"79161234567"}),  # a beginning, national
        ("8 916 123-45-67", {"79161234567"}),  # whole, national
        ("+7 903 191-60-00", {"79031916000"}),  # whole, international
        ("45-67", {"79161234567"}),  # any part, with separators
        ("vip", {"79031916000"}),  # a tag
        ("903", {"79031916000"}),  # an operator code (and part of the phone)
        ("555", set()),
    ],
)
def test_search_finds_any_part_of_the_phone_in_any_notation(web, query, found):
    services.create_client(phone="79161234567", timezone="Europe/Moscow")
    services.create_client(phone="79031916000", timezone="Europe/Moscow", tag="vip")
    services.create_client(phone="79260000000", timezone="Europe/Moscow", tag="new")
    assert set(listed(web, q=query)) == found


def test_list_is_newest_first_and_counts_the_matching_clients(web):
    make_clients(30, operator_code="916")
    make_clients(1200, operator_code="926")
    response = web.get(reverse("dashboard:client_list"))
    page = response.content.decode()
    assert "1,230" in page and "clients" in page
    first = response.context["table"].page.object_list[0].record
    assert first.pk == Client.objects.order_by("-pk").first().pk
    response = web.get(reverse("dashboard:client_list"), {"operator_code": "916"})
    assert "<strong>30</strong> clients match the filter" in response.content.decode()


@pytest.mark.parametrize(
    ("asked", "rows"), [("1000000", UI_PAGE_MAX), ("0", 1), ("-5", 1), ("x", 25), ("40", 40)]
)
def test_per_page_is_clamped_on_every_table(web, asked, rows):
    make_clients(UI_PAGE_MAX + 20)
    for _ in range(3):
        services.create_mailing(
            start_at=timezone.now() + timedelta(days=1),
            end_at=timezone.now() + timedelta(days=2),
            text="t",
        )
    response = web.get(reverse("dashboard:client_list"), {"per_page": asked})
    assert response.status_code == 200
    assert len(response.context["table"].page.object_list) == rows
    response = web.get(reverse("dashboard:mailing_list"), {"per_page": asked})
    assert response.status_code == 200
    assert response.context["table"].paginator.per_page == rows


def test_an_invalid_filter_is_shown_and_matches_nothing(web):
    make_clients(3)
    response = web.get(reverse("dashboard:client_list"), {"operator_code": "nope"})
    assert response.status_code == 200
    assert response.context["filter"].errors
    assert listed(web, operator_code="nope") == []


def bulk(web, **data):
    return post(web, reverse("dashboard:client_bulk"), data, page=reverse("dashboard:client_list"))


def test_bulk_set_tag_on_the_ticked_clients_asks_then_does_it(web):
    make_clients(5)
    ids = list(Client.objects.order_by("pk").values_list("pk", flat=True)[:2])
    confirm = bulk(web, action="set_tag", tag="vip", scope="selected", ids=ids, query="")
    assert confirm.status_code == 200
    assert "Set the tag “vip” on 2 clients?" in confirm.content.decode()
    assert not Client.objects.filter(tag="vip").exists()  # asked, nothing changed yet
    done = bulk(web, action="set_tag", tag="vip", scope="selected", ids=ids, query="", confirm="1")
    assert done.status_code == 302
    assert set(Client.objects.filter(tag="vip").values_list("pk", flat=True)) == set(ids)
    assert Event.objects.filter(kind="client.updated", client_id=ids[0]).exists()


def test_bulk_delete_every_matching_client_spares_the_rest_and_later_ones(web):
    make_clients(7, operator_code="916")
    make_clients(3, operator_code="926")
    now = timezone.now()
    mailing = services.create_mailing(
        start_at=now - timedelta(minutes=1), end_at=now + timedelta(hours=1), text="hi"
    )
    lifecycle.start_due_mailings(now)
    lifecycle.fan_out_started_mailings(now)
    assert Message.objects.filter(mailing=mailing, status=MessageStatus.PENDING).count() == 10
    confirm = bulk(web, action="delete", scope="matching", query="operator_code=916")
    page = confirm.content.decode()
    assert "Delete 7 clients?" in page
    upto = confirm.context["upto"]
    make_clients(2, operator_code="916", first=100)  # added after the confirmation
    done = bulk(
        web, action="delete", scope="matching", query="operator_code=916", upto=upto, confirm="1"
    )
    assert done.status_code == 302
    assert done["Location"].endswith("?operator_code=916")
    assert Client.objects.filter(operator_code="926").count() == 3
    assert Client.objects.filter(operator_code="916").count() == 2
    assert Event.objects.filter(kind="client.deleted").count() == 7
    # Their pending messages are cancelled, the counters follow, the others still wait.
    mailing.refresh_from_db()
    assert (mailing.pending, mailing.cancelled) == (3, 7)
    cancelled = Message.objects.filter(mailing=mailing, status=MessageStatus.CANCELLED)
    assert set(cancelled.values_list("phone", flat=True)) == {f"7916{n:07d}" for n in range(7)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "set_tag", "tag": " x", "scope": "matching"}, "spaces"),
        ({"action": "delete", "scope": "selected"}, "Tick at least one"),
        ({"action": "delete", "scope": "selected", "ids": ["1", "x"]}, "valid choice"),
        ({"action": "explode", "scope": "matching"}, "valid choice"),
        ({"action": "delete", "scope": "matching", "query": "operator_code=zz"}, "filter"),
        (
            {"action": "delete", "scope": "selected", "ids": [str(i) for i in range(101)]},
            "At most",
        ),
    ],
)
def test_bad_bulk_requests_are_form_errors_and_change_nothing(web, data, message):
    make_clients(3)
    for attempt in (data, {**data, "confirm": "1"}):
        response = bulk(web, **{"query": "", **attempt})
        assert response.status_code == 200
        assert message in response.content.decode()
        assert "Nothing was changed" in response.content.decode()
    assert Client.objects.count() == 3
    assert not Client.objects.exclude(tag="").exists()


def test_export_streams_the_matching_clients_with_safe_cells(web):
    make_clients(3, operator_code="916", tag="=cmd")
    make_clients(2, operator_code="926")
    response = web.get(reverse("dashboard:client_export"), {"operator_code": "916"})
    assert response.status_code == 200
    assert response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["id", "phone", "operator_code", "tag", "timezone", "created_at"]
    assert len(rows) == 4
    assert {row[3] for row in rows[1:]} == {"'=cmd"}
    assert rows[1][1] == "79160000002"  # newest first, as listed
    bad = web.get(reverse("dashboard:client_export"), {"operator_code": "zz"})
    assert bad.status_code == 302


def test_client_form_accepts_common_notations(web):
    url = reverse("dashboard:client_create")
    response = post(web, url, {"phone": "8 (916) 123-45-67", "timezone": "Europe/Moscow"}, page=url)
    assert response.status_code == 302
    assert Client.objects.get().phone == "79161234567"
