"""The JSON API v1: shapes, filters, pagination, errors (422/404/409/401), tokens, docs."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.utils import timezone

from mailing import cleanup, services
from mailing.models import (
    ApiToken,
    Client,
    DispatcherSlot,
    Mailing,
    MailingStatus,
    Message,
    MessageStatus,
    ProviderState,
)
from mailing.tokens import hash_key, issue_token, revoke_token

pytestmark = pytest.mark.django_db

BASE = "/api/v1"
CLIENT_KEYS = {"id", "phone", "operator_code", "tag", "timezone"}
MAILING_KEYS = {
    "id",
    "name",
    "resend_of",
    "rate_limit",
    "pause_reason",
    "segments",
    "start_at",
    "end_at",
    "text",
    "filter",
    "send_window",
    "status",
    "stats",
}
STATS_KEYS = {"total", "pending", "sent", "failed", "expired", "cancelled"}
MESSAGE_KEYS = {
    "id",
    "mailing_id",
    "client_id",
    "phone",
    "status",
    "created_at",
    "sent_at",
    "attempts",
    "last_error",
}


class Api:
    """A JSON client of the API with a bearer token."""

    def __init__(self, key: str | None) -> None:
        self.http = HttpClient()
        self.key = key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.http.get(BASE + path, params or {}, headers=self._headers())

    def _send(self, method: str, path: str, body: Any) -> Any:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return getattr(self.http, method)(
            BASE + path, data=data, content_type="application/json", headers=self._headers()
        )

    def post(self, path: str, body: Any = None) -> Any:
        return self._send("post", path, {} if body is None else body)

    def patch(self, path: str, body: Any) -> Any:
        return self._send("patch", path, body)

    def delete(self, path: str) -> Any:
        return self.http.delete(BASE + path, headers=self._headers())


@pytest.fixture
def staff_user() -> Any:
    return get_user_model().objects.create_user("ops", is_staff=True)


@pytest.fixture
def api_key(staff_user: Any) -> str:
    return issue_token(staff_user, "tests")[1]


@pytest.fixture
def api(api_key: str) -> Api:
    return Api(api_key)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def future(hours: float) -> datetime:
    return (timezone.now() + timedelta(hours=hours)).replace(microsecond=0)


def mailing_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start_at": iso(future(1)),
        "end_at": iso(future(5)),
        "text": "Hello!",
    }
    return body | overrides


def same_instant(text: str, moment: datetime) -> bool:
    """The API answers in UTC with millisecond precision (Django's JSON encoder)."""
    parsed = datetime.fromisoformat(text)
    return parsed.utcoffset() == timedelta(0) and abs(parsed - moment) < timedelta(milliseconds=1)


def error_locs(response: Any) -> list[list[Any]]:
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    for item in detail:
        assert {"loc", "msg", "type"} <= set(item)
        assert isinstance(item["msg"], str) and item["msg"]
    return [item["loc"] for item in detail]


def make_client(phone: str = "79161234567", **fields: Any) -> Client:
    return services.create_client(
        phone=phone, timezone=fields.pop("timezone", "Europe/Moscow"), **fields
    )


def add_pending_messages(mailing: Mailing, clients: list[Client]) -> list[Message]:
    """Messages created directly (as the fan-out would), with the counters in step."""
    now = timezone.now()
    messages = Message.objects.bulk_create(
        Message(
            mailing=mailing,
            client=client,
            phone=client.phone,
            timezone=client.timezone,
            created_at=now,
            next_attempt_at=now,
        )
        for client in clients
    )
    Mailing.objects.filter(pk=mailing.pk).update(total=len(clients), pending=len(clients))
    return messages


# --- Clients ----------------------------------------------------------------------


def test_create_and_read_client_with_exact_shape(api: Api) -> None:
    response = api.post("/clients", {"phone": "79161234567", "timezone": "Europe/Moscow"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == CLIENT_KEYS
    assert body == {
        "id": body["id"],
        "phone": "79161234567",
        "operator_code": "916",
        "tag": "",
        "timezone": "Europe/Moscow",
    }
    assert api.get(f"/clients/{body['id']}").json() == body
    assert Client.objects.get(pk=body["id"]).operator_code == "916"


def test_create_client_accepts_integer_phone_and_explicit_code(api: Api) -> None:
    response = api.post(
        "/clients",
        {
            "phone": 79031234567,
            "timezone": "Asia/Vladivostok",
            "operator_code": "999",
            "tag": "vip",
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["phone"] == "79031234567"
    assert body["operator_code"] == "999"
    assert body["tag"] == "vip"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "89161234567", "timezone": "Europe/Moscow"}, "phone"),
        ({"phone": "7916123456", "timezone": "Europe/Moscow"}, "phone"),
        ({"phone": 89161234567, "timezone": "Europe/Moscow"}, "phone"),
        ({"phone": True, "timezone": "Europe/Moscow"}, "phone"),
        ({"phone": "79161234567", "timezone": "Mars/Olympus"}, "timezone"),
        ({"phone": "79161234567", "timezone": "Europe/Moscow", "tag": "x" * 65}, "tag"),
        (
            {"phone": "79161234567", "timezone": "Europe/Moscow", "operator_code": "12"},
            "operator_code",
        ),
        ({"phone": "79161234567", "timezone": "Europe/Moscow", "tag": "a\x00b"}, "tag"),
        ({"phone": "7916\x001234567", "timezone": "Europe/Moscow"}, "phone"),
        ({"phone": "79161234567", "timezone": "Europe/\x00Moscow"}, "timezone"),
        ({"timezone": "Europe/Moscow"}, "phone"),
        ({"phone": "79161234567"}, "timezone"),
        ({"phone": "79161234567", "timezone": "Europe/Moscow", "colour": "red"}, "colour"),
    ],
)
def test_create_client_rejects_bad_fields(api: Api, body: dict[str, Any], field: str) -> None:
    locs = error_locs(api.post("/clients", body))
    assert ["body", field] in locs
    assert not Client.objects.exists()


def test_duplicate_phone_is_422_on_phone(api: Api) -> None:
    make_client("79161234567")
    locs = error_locs(api.post("/clients", {"phone": "79161234567", "timezone": "UTC"}))
    assert locs == [["body", "phone"]]
    assert Client.objects.count() == 1


def test_patch_client_changes_only_given_fields(api: Api) -> None:
    client = make_client("79161234567", tag="old")
    response = api.patch(f"/clients/{client.pk}", {"tag": "new"})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": client.pk,
        "phone": "79161234567",
        "operator_code": "916",
        "tag": "new",
        "timezone": "Europe/Moscow",
    }
    # A new phone brings its own operator code.
    response = api.patch(f"/clients/{client.pk}", {"phone": 79031112233})
    assert response.json()["operator_code"] == "903"
    client.refresh_from_db()
    assert (client.phone, client.tag) == ("79031112233", "new")


@pytest.mark.parametrize("field", ["phone", "timezone", "tag", "operator_code"])
def test_patch_client_refuses_explicit_null(api: Api, field: str) -> None:
    client = make_client()
    assert ["body", field] in error_locs(api.patch(f"/clients/{client.pk}", {field: None}))
    client.refresh_from_db()
    assert client.tag == "" and client.timezone == "Europe/Moscow"


def test_patch_client_to_taken_phone_is_422(api: Api) -> None:
    make_client("79161234567")
    other = make_client("79161234568")
    locs = error_locs(api.patch(f"/clients/{other.pk}", {"phone": "79161234567"}))
    assert locs == [["body", "phone"]]


def test_list_clients_filters_and_paginates(api: Api) -> None:
    for n in range(5):
        make_client(f"7916000000{n}", tag="a" if n % 2 else "b")
    make_client("79030000009", tag="a")
    body = api.get("/clients").json()
    assert body["count"] == 6 and len(body["items"]) == 6
    assert all(set(item) == CLIENT_KEYS for item in body["items"])
    ids = [item["id"] for item in body["items"]]
    assert ids == sorted(ids)

    tagged = api.get("/clients", {"tag": "a"}).json()
    assert tagged["count"] == 3
    assert {item["tag"] for item in tagged["items"]} == {"a"}

    both = api.get("/clients", {"tag": "a", "operator_code": "903"}).json()
    assert [item["phone"] for item in both["items"]] == ["79030000009"]

    page = api.get("/clients", {"limit": 2, "offset": 2}).json()
    assert page["count"] == 6
    assert [item["id"] for item in page["items"]] == ids[2:4]
    assert api.get("/clients", {"offset": 100}).json() == {"items": [], "count": 6}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10**30}, "offset"),
        ({"operator_code": "12"}, "operator_code"),
        ({"tag": "x\x00"}, "tag"),
        ({"tag": "x" * 65}, "tag"),
    ],
)
def test_list_clients_rejects_bad_query(api: Api, params: dict[str, Any], param: str) -> None:
    assert ["query", param] in error_locs(api.get("/clients", params))


def test_delete_client_cancels_its_pending_messages(api: Api) -> None:
    doomed, kept = make_client("79161234567"), make_client("79161234568")
    mailing = services.create_mailing(
        start_at=future(-1), end_at=future(5), text="Hi", send_window=None
    )
    add_pending_messages(mailing, [doomed, kept])

    response = api.delete(f"/clients/{doomed.pk}")
    assert response.status_code == 204
    assert response.content == b""
    assert not Client.objects.filter(pk=doomed.pk).exists()
    assert api.get(f"/clients/{doomed.pk}").status_code == 404

    message = Message.objects.get(mailing=mailing, phone=doomed.phone)
    assert message.status == MessageStatus.CANCELLED
    assert message.client_id is None
    assert Message.objects.get(mailing=mailing, client=kept).status == MessageStatus.PENDING
    stats = api.get(f"/mailings/{mailing.pk}").json()["stats"]
    assert stats == {
        "total": 2,
        "pending": 1,
        "sent": 0,
        "failed": 0,
        "expired": 0,
        "cancelled": 1,
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/clients/999999"),
        ("patch", "/clients/999999"),
        ("delete", "/clients/999999"),
        ("get", "/mailings/999999"),
        ("patch", "/mailings/999999"),
        ("delete", "/mailings/999999"),
        ("post", "/mailings/999999/pause"),
        ("post", "/mailings/999999/resume"),
        ("post", "/mailings/999999/cancel"),
        ("get", "/mailings/999999/stats"),
        ("get", "/mailings/999999/messages"),
    ],
)
def test_unknown_ids_are_404(api: Api, method: str, path: str) -> None:
    response = api.patch(path, {}) if method == "patch" else getattr(api, method)(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("raw_id", ["0", "-1", "abc", str(2**63), str(10**40)])
def test_ids_outside_int64_or_not_numbers_are_422(api: Api, raw_id: str) -> None:
    assert ["path", "client_id"] in error_locs(api.get(f"/clients/{raw_id}"))
    assert ["path", "mailing_id"] in error_locs(api.get(f"/mailings/{raw_id}/messages"))


# --- Mailings ---------------------------------------------------------------------


def test_create_mailing_with_exact_shape(api: Api) -> None:
    start, end = future(1), future(5)
    response = api.post(
        "/mailings",
        {
            "start_at": iso(start),
            "end_at": end.astimezone(timezone.get_fixed_timezone(180)).isoformat(),
            "text": "Sale today",
            "filter": {"operator_codes": ["916", "903", "916"], "tags": ["vip"]},
            "send_window": {"start": "09:00", "end": "21:00"},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == MAILING_KEYS
    assert set(body["stats"]) == STATS_KEYS
    assert body["status"] == "scheduled"
    assert body["text"] == "Sale today"
    assert body["name"] == "Sale today"  # none given: the start of the text
    assert body["filter"] == {"operator_codes": ["903", "916"], "tags": ["vip"]}
    assert body["send_window"] == {"start": "09:00", "end": "21:00"}
    assert body["stats"] == dict.fromkeys(STATS_KEYS, 0)
    assert datetime.fromisoformat(body["start_at"]) == start
    assert datetime.fromisoformat(body["end_at"]) == end
    assert api.get(f"/mailings/{body['id']}").json() == body
    mailing = Mailing.objects.get(pk=body["id"])
    assert (mailing.window_start, mailing.window_end) == (time(9), time(21))


def test_mailing_inside_its_period_starts_at_once(api: Api) -> None:
    body = api.post("/mailings", mailing_body(start_at=iso(future(-1)))).json()
    assert body["status"] == "running"
    assert body["send_window"] is None
    assert body["filter"] == {"operator_codes": [], "tags": []}


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"end_at": iso(future(0.5))}, ["body", "end_at"]),  # before the start
        ({"start_at": "2030-01-01T10:00:00"}, ["body", "start_at"]),  # naive
        ({"end_at": "not a date"}, ["body", "end_at"]),
        ({"end_at": "9999-12-31T23:59:59-23:59"}, ["body", "end_at"]),
        ({"text": ""}, ["body", "text"]),
        ({"text": "   "}, ["body", "text"]),
        ({"text": "x" * 1001}, ["body", "text"]),
        ({"text": "nul\x00byte"}, ["body", "text"]),
        ({"send_window": {"start": "25:00", "end": "21:00"}}, ["body", "send_window", "start"]),
        ({"send_window": {"start": "9:00", "end": "21:00"}}, ["body", "send_window", "start"]),
        ({"send_window": {"start": "09:00", "end": "09:00"}}, ["body", "send_window"]),
        ({"send_window": {"start": "09:00"}}, ["body", "send_window", "end"]),
        ({"filter": {"operator_codes": ["12"]}}, ["body", "filter", "operator_codes", 0]),
        ({"filter": {"tags": ["x" * 65]}}, ["body", "filter", "tags", 0]),
        ({"filter": {"tags": [" padded "]}}, ["body", "filter", "tags"]),
        ({"filter": {"tags": "vip"}}, ["body", "filter", "tags"]),
        ({"filter": None}, ["body", "filter"]),
    ],
)
def test_create_mailing_rejects_bad_fields(
    api: Api, overrides: dict[str, Any], loc: list[Any]
) -> None:
    assert loc in error_locs(api.post("/mailings", mailing_body(**overrides)))
    assert not Mailing.objects.exists()


def test_text_of_exactly_1000_characters_is_fine(api: Api) -> None:
    response = api.post("/mailings", mailing_body(text="x" * 1000))
    assert response.status_code == 201
    assert len(response.json()["text"]) == 1000


def test_create_mailing_reports_every_field_at_fault(api: Api) -> None:
    locs = error_locs(api.post("/mailings", {"text": ""}))
    assert ["body", "start_at"] in locs and ["body", "end_at"] in locs
    assert ["body", "text"] in locs


def test_patch_scheduled_mailing(api: Api) -> None:
    created = api.post("/mailings", mailing_body(send_window={"start": "22:00", "end": "06:00"}))
    mailing_id = created.json()["id"]
    response = api.patch(
        f"/mailings/{mailing_id}",
        {"text": "New text", "filter": {"tags": ["b", "a"]}},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["text"] == "New text"
    assert body["filter"] == {"operator_codes": [], "tags": ["a", "b"]}
    assert body["send_window"] == {"start": "22:00", "end": "06:00"}  # untouched
    # null removes the window
    body = api.patch(f"/mailings/{mailing_id}", {"send_window": None}).json()
    assert body["send_window"] is None
    assert Mailing.objects.get(pk=mailing_id).window_start is None


@pytest.mark.parametrize("field", ["start_at", "end_at", "text", "filter"])
def test_patch_mailing_refuses_explicit_null(api: Api, field: str) -> None:
    mailing_id = api.post("/mailings", mailing_body()).json()["id"]
    assert ["body", field] in error_locs(api.patch(f"/mailings/{mailing_id}", {field: None}))


def test_patch_mailing_end_before_start_is_422(api: Api) -> None:
    mailing_id = api.post("/mailings", mailing_body()).json()["id"]
    locs = error_locs(api.patch(f"/mailings/{mailing_id}", {"end_at": iso(future(0.5))}))
    assert locs == [["body", "end_at"]]


@pytest.mark.parametrize(
    "change",
    [{"text": "Changed"}, {"filter": {"tags": ["new"]}}, {"start_at": iso(future(-2))}],
)
def test_editing_a_running_mailing_is_409(api: Api, change: dict[str, Any]) -> None:
    created = api.post("/mailings", mailing_body(start_at=iso(future(-1)))).json()
    assert created["status"] == "running"
    response = api.patch(f"/mailings/{created['id']}", change)
    assert response.status_code == 409, response.content
    assert isinstance(response.json()["detail"], str)
    assert api.get(f"/mailings/{created['id']}").json() == created


def test_a_running_mailing_may_still_change_its_end(api: Api) -> None:
    created = api.post("/mailings", mailing_body(start_at=iso(future(-1)))).json()
    new_end = future(10)
    response = api.patch(f"/mailings/{created['id']}", {"end_at": iso(new_end)})
    assert response.status_code == 200, response.content
    assert datetime.fromisoformat(response.json()["end_at"]) == new_end


def test_pause_resume_cancel(api: Api) -> None:
    mailing_id = api.post("/mailings", mailing_body(start_at=iso(future(-1)))).json()["id"]
    paused = api.post(f"/mailings/{mailing_id}/pause")
    assert paused.status_code == 200
    assert set(paused.json()) == MAILING_KEYS
    assert paused.json()["status"] == "paused"
    assert api.post(f"/mailings/{mailing_id}/pause").status_code == 409
    assert api.post(f"/mailings/{mailing_id}/resume").json()["status"] == "running"
    assert api.post(f"/mailings/{mailing_id}/resume").status_code == 409
    assert api.post(f"/mailings/{mailing_id}/cancel").json()["status"] == "cancelled"
    for action in ("pause", "resume", "cancel"):
        response = api.post(f"/mailings/{mailing_id}/{action}")
        assert response.status_code == 409
        assert "cancelled" in response.json()["detail"]
    assert Mailing.objects.get(pk=mailing_id).status == MailingStatus.CANCELLED


def test_pausing_or_editing_a_finished_mailing_is_409(api: Api) -> None:
    mailing_id = api.post("/mailings", mailing_body(start_at=iso(future(-1)))).json()["id"]
    Mailing.objects.filter(pk=mailing_id).update(status=MailingStatus.FINISHED)
    response = api.post(f"/mailings/{mailing_id}/pause")
    assert response.status_code == 409
    assert response.json() == {"detail": "A finished mailing cannot be paused."}
    assert api.patch(f"/mailings/{mailing_id}", {"end_at": iso(future(9))}).status_code == 409
    assert api.post(f"/mailings/{mailing_id}/cancel").status_code == 409


def test_cancel_cancels_pending_messages(api: Api) -> None:
    clients = [make_client(f"7916000000{n}") for n in range(3)]
    mailing = services.create_mailing(start_at=future(-1), end_at=future(5), text="Hi")
    add_pending_messages(mailing, clients)
    body = api.post(f"/mailings/{mailing.pk}/cancel").json()
    assert body["stats"]["pending"] == 0
    assert body["stats"]["cancelled"] == 3
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.CANCELLED}


def test_delete_mailing(api: Api) -> None:
    client = make_client()
    mailing = services.create_mailing(start_at=future(-1), end_at=future(5), text="Hi")
    add_pending_messages(mailing, [client])
    assert api.delete(f"/mailings/{mailing.pk}").status_code == 202
    # Gone for the API at once; its rows wait for the background purge.
    assert api.get(f"/mailings/{mailing.pk}").status_code == 404
    assert api.get(f"/mailings/{mailing.pk}/stats").status_code == 404
    assert api.post(f"/mailings/{mailing.pk}/pause").status_code == 404
    assert api.delete(f"/mailings/{mailing.pk}").status_code == 404
    assert mailing.pk not in [row["id"] for row in api.get("/mailings").json()["items"]]
    assert Message.objects.filter(mailing_id=mailing.pk).count() == 1
    cleanup.purge_deleted_mailings()
    assert not Mailing.objects.filter(pk=mailing.pk).exists()
    assert not Message.objects.exists()


def test_list_mailings_with_counts_filter_and_pagination(api: Api) -> None:
    ids = [api.post("/mailings", mailing_body(text=f"m{n}")).json()["id"] for n in range(3)]
    running = services.create_mailing(start_at=future(-1), end_at=future(5), text="now")
    add_pending_messages(running, [make_client()])
    body = api.get("/mailings").json()
    assert body["count"] == 4
    assert [item["id"] for item in body["items"]] == [running.pk, *reversed(ids)]
    assert all(set(item) == MAILING_KEYS for item in body["items"])
    assert body["items"][0]["stats"]["pending"] == 1
    assert body["items"][0]["stats"]["total"] == 1

    only_running = api.get("/mailings", {"status": "running"}).json()
    assert [item["id"] for item in only_running["items"]] == [running.pk]
    page = api.get("/mailings", {"limit": 1, "offset": 1}).json()
    assert page["count"] == 4 and [item["id"] for item in page["items"]] == [ids[2]]
    assert ["query", "status"] in error_locs(api.get("/mailings", {"status": "sleeping"}))


def test_messages_of_a_mailing(api: Api) -> None:
    clients = [make_client(f"7916000000{n}") for n in range(3)]
    mailing = services.create_mailing(start_at=future(-1), end_at=future(5), text="Hi")
    messages = add_pending_messages(mailing, clients)
    sent_at = timezone.now()
    Message.objects.filter(pk=messages[1].pk).update(
        status=MessageStatus.SENT, sent_at=sent_at, attempts=2, last_error=""
    )
    Mailing.objects.filter(pk=mailing.pk).update(pending=2, sent=1)

    body = api.get(f"/mailings/{mailing.pk}/messages").json()
    assert body["count"] == 3
    first = body["items"][0]
    assert set(first) == MESSAGE_KEYS
    assert first == {
        "id": messages[0].pk,
        "mailing_id": mailing.pk,
        "client_id": clients[0].pk,
        "phone": clients[0].phone,
        "status": "pending",
        "created_at": first["created_at"],
        "sent_at": None,
        "attempts": 0,
        "last_error": "",
    }
    sent = api.get(f"/mailings/{mailing.pk}/messages", {"status": "sent"}).json()
    assert sent["count"] == 1
    assert sent["items"][0]["id"] == messages[1].pk
    assert same_instant(sent["items"][0]["sent_at"], sent_at)
    assert sent["items"][0]["attempts"] == 2
    page = api.get(f"/mailings/{mailing.pk}/messages", {"limit": 1, "offset": 2}).json()
    assert [item["id"] for item in page["items"]] == [messages[2].pk]
    bad = api.get(f"/mailings/{mailing.pk}/messages", {"status": "lost"})
    assert ["query", "status"] in error_locs(bad)


def test_mailing_stats(api: Api) -> None:
    clients = [make_client(f"7916000000{n}") for n in range(4)]
    mailing = services.create_mailing(start_at=future(-1), end_at=future(5), text="Hi")
    messages = add_pending_messages(mailing, clients)
    Message.objects.filter(pk__in=[messages[0].pk, messages[1].pk]).update(
        status=MessageStatus.FAILED, last_error="rejected: bad number"
    )
    Mailing.objects.filter(pk=mailing.pk).update(pending=2, failed=2)
    body = api.get(f"/mailings/{mailing.pk}/stats").json()
    assert body == {
        "mailing_id": mailing.pk,
        "status": "running",
        "stats": {"total": 4, "pending": 2, "sent": 0, "failed": 2, "expired": 0, "cancelled": 0},
        "progress": 0.5,
        "fanned_out": False,
        "failure_reasons": [{"reason": "rejected: bad number", "count": 2}],
    }


def test_preview_counts(api: Api) -> None:
    make_client("79160000001", tag="vip", timezone="Europe/Moscow")
    make_client("79160000002", tag="vip", timezone="Asia/Vladivostok")
    make_client("79160000003", tag="", timezone="Europe/Moscow")
    make_client("79030000004", tag="vip", timezone="Europe/Moscow")

    assert api.post("/mailings/preview", {}).json() == {
        "matching": 4,
        "opted_out": 0,
        "reachable": 4,
        "timezones": 2,
        "segments": None,
    }
    body = api.post(
        "/mailings/preview", {"filter": {"operator_codes": ["916"], "tags": ["vip"]}}
    ).json()
    assert body == {
        "matching": 2,
        "opted_out": 0,
        "reachable": 2,
        "timezones": 2,
        "segments": None,
    }

    # 10:00-11:00 UTC: 13:00-14:00 in Moscow (inside 09-21), 20:00-21:00 in Vladivostok
    # (outside 09-12).
    start = datetime(2031, 6, 2, 10, tzinfo=UTC)
    body = api.post(
        "/mailings/preview",
        {
            "filter": {"tags": ["vip"]},
            "send_window": {"start": "09:00", "end": "12:00"},
            "start_at": iso(start - timedelta(hours=4)),
            "end_at": iso(start + timedelta(hours=1)),
        },
    ).json()
    assert body == {
        "matching": 3,
        "opted_out": 0,
        "reachable": 2,
        "timezones": 2,
        "segments": None,
    }


def test_preview_rejects_bad_input(api: Api) -> None:
    window = {"start": "09:00", "end": "09:00"}
    response = api.post(
        "/mailings/preview",
        {"send_window": window, "start_at": iso(future(1)), "end_at": iso(future(2))},
    )
    assert ["body", "send_window"] in error_locs(response)
    response = api.post("/mailings/preview", {"start_at": "2031-01-01T00:00:00"})
    assert ["body", "start_at"] in error_locs(response)


def test_overall_stats(api: Api) -> None:
    clients = [make_client(f"7916000000{n}") for n in range(3)]
    first = services.create_mailing(start_at=future(-1), end_at=future(5), text="A")
    add_pending_messages(first, clients)
    second = services.create_mailing(start_at=future(-1), end_at=future(5), text="B")
    add_pending_messages(second, clients[:1])
    services.cancel_mailing(second)
    api.post("/mailings", mailing_body())

    body = api.get("/stats").json()
    assert body["totals"] == {
        "total": 4,
        "pending": 3,
        "sent": 0,
        "failed": 0,
        "expired": 0,
        "cancelled": 1,
    }
    assert body["mailings_by_status"] == {"running": 1, "cancelled": 1, "scheduled": 1}
    by_id = {row["id"]: row for row in body["mailings"]}
    assert by_id[first.pk] == {
        "id": first.pk,
        "status": "running",
        "stats": {"total": 3, "pending": 3, "sent": 0, "failed": 0, "expired": 0, "cancelled": 0},
    }
    assert by_id[second.pk]["stats"]["cancelled"] == 1


def test_provider_health(api: Api) -> None:
    body = api.get("/provider").json()
    assert body == {
        "paused_for_credentials": False,
        "auth_error": "",
        "auth_failed_at": None,
        "dispatchers": [],
    }
    now = timezone.now()
    ProviderState.objects.create(pk=1, auth_failed_at=now, auth_error="401 from provider")
    DispatcherSlot.objects.create(slot=0, heartbeat_at=now, circuit_state="open", send_window=9)
    DispatcherSlot.objects.create(slot=1, heartbeat_at=now - timedelta(seconds=30))
    DispatcherSlot.objects.create(slot=2)
    body = api.get("/provider").json()
    assert body["paused_for_credentials"] is True
    assert body["auth_error"] == "401 from provider"
    assert same_instant(body["auth_failed_at"], now)
    assert [(d["slot"], d["circuit_state"], d["alive"]) for d in body["dispatchers"]] == [
        (0, "open", True),
        (1, "closed", False),
        (2, "closed", False),
    ]
    assert body["dispatchers"][2]["heartbeat_at"] is None
    assert [d["window"] for d in body["dispatchers"]] == [9, None, None]


# --- Malformed requests: never a 500 ------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"12",
        b'{"phone": 1e400, "timezone": "UTC"}',
        b'{"phone": NaN, "timezone": "UTC"}',
        b'{"phone": ' + b"9" * 5000 + b', "timezone": "UTC"}',
        b"\xff\xfe\x00",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"phone": "79161234567", "timezone": "UTC", "tag": {"nested": []}}',
    ],
)
def test_malformed_bodies_are_422(api: Api, raw: bytes) -> None:
    response = api.post("/clients", raw)
    assert response.status_code == 422, response.content
    assert isinstance(response.json()["detail"], list)


def test_wrong_content_type_is_422_not_500(api: Api) -> None:
    response = api.http.post(
        BASE + "/clients",
        data="phone=79161234567&timezone=UTC",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_multipart_body_is_422(api: Api) -> None:
    response = api.http.post(
        BASE + "/clients",
        data=b"--xx\r\nbroken",
        content_type="multipart/form-data; boundary=xx",
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert response.status_code == 422


def test_a_real_bug_is_a_logged_json_500(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("mailing.selectors.overall_stats", broken)
    with caplog.at_level(logging.INFO, logger="mailing.api"):
        response = api.get("/stats")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
    errors = [r for r in caplog.records if r.name == "mailing.api" and r.levelno == logging.ERROR]
    assert errors[0].exc_info and "boom" in str(errors[0].exc_info[1])
    assert errors[-1].status == 500


def test_oversized_body_is_413(api: Api, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("/mailings", mailing_body(text="x" * 2000))
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is too large."}


def test_extreme_numbers_in_mailing_period_and_lists(api: Api) -> None:
    for body in (
        mailing_body(start_at="0001-01-01T00:00:00+14:00"),
        mailing_body(filter={"operator_codes": ["916"] * 1001}),
        mailing_body(send_window={"start": 900, "end": 2100}),
    ):
        assert api.post("/mailings", body).status_code == 422


# --- Authentication and tokens -----------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer mls_wrong",
        "Token abc",
        "Bearer " + "x" * 10000,
        "Basic Zm9vOmJhcg==",
    ],
)
def test_missing_or_wrong_token_is_401(api_key: str, header: str | None) -> None:
    http = HttpClient()
    headers = {"Authorization": header} if header else {}
    for path in ("/clients", "/mailings", "/stats", "/provider", "/mailings/1/stats"):
        response = http.get(BASE + path, headers=headers)
        assert response.status_code == 401, path
        assert response.json()["detail"]
        assert response["WWW-Authenticate"].startswith("Bearer")
    response = http.post(
        BASE + "/clients",
        data=json.dumps({"phone": "79161234567", "timezone": "UTC"}),
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 401
    assert not Client.objects.exists()


def test_revoked_token_is_401(staff_user: Any) -> None:
    token, key = issue_token(staff_user, "short-lived")
    assert Api(key).get("/clients").status_code == 200
    revoke_token(token)
    assert token.revoked_at is not None
    assert Api(key).get("/clients").status_code == 401


def test_non_staff_or_inactive_users_token_is_401(staff_user: Any) -> None:
    plain = get_user_model().objects.create_user("plain", is_staff=False)
    assert Api(issue_token(plain, "nope")[1]).get("/clients").status_code == 401
    key = issue_token(staff_user, "t")[1]
    staff_user.is_active = False
    staff_user.save()
    assert Api(key).get("/clients").status_code == 401


def test_token_is_stored_hashed_and_last_use_recorded(staff_user: Any) -> None:
    token, key = issue_token(staff_user, "hashing")
    assert key.startswith("mls_") and len(key) > 40
    assert token.prefix == key[:12]
    assert token.key_hash == hash_key(key) != key
    for row in ApiToken.objects.values():
        assert key not in {str(value) for value in row.values()}
    assert token.last_used_at is None

    Api(key).get("/clients")
    first_use = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first_use is not None
    Api(key).get("/clients")  # within the minute: not written again
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first_use
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=5))
    Api(key).get("/clients")
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first_use - timedelta(minutes=5)


def test_create_api_token_command(staff_user: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "ops", "--name", "ci", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert re.fullmatch(r"mls_[A-Za-z0-9_-]{40,}", key)
    assert "\n" not in key
    token = ApiToken.objects.get(key_hash=hash_key(key))
    assert (token.name, token.user) == ("ci", staff_user)
    assert Api(key).get("/clients").status_code == 200


def test_create_api_token_command_refuses_unknown_and_non_staff_users() -> None:
    with pytest.raises(CommandError, match="No user 'ghost'"):
        call_command("create_api_token", "ghost", stdout=io.StringIO())
    get_user_model().objects.create_user("plain", is_staff=False)
    with pytest.raises(CommandError, match="not staff"):
        call_command("create_api_token", "plain", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not staff"):
        call_command("create_api_token", "plain", "--create-user", stdout=io.StringIO())
    assert not ApiToken.objects.exists()


def test_create_api_token_command_can_create_the_user() -> None:
    out = io.StringIO()
    call_command("create_api_token", "robot", "--create-user", stdout=out, stderr=io.StringIO())
    user = get_user_model().objects.get(username="robot")
    assert user.is_staff and not user.has_usable_password()
    assert Api(out.getvalue().strip()).get("/stats").status_code == 200


# --- Logging, OpenAPI and docs ------------------------------------------------------


def test_every_call_logs_one_line_with_its_ids(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    mailing_id = api.post("/mailings", mailing_body()).json()["id"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailing.api"):
        api.get(f"/mailings/{mailing_id}/stats")
        api.get("/clients/424242")
        Api(None).get("/stats")
    records = [r for r in caplog.records if r.name == "mailing.api"]
    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", f"{BASE}/mailings/{mailing_id}/stats", 200),
        ("GET", f"{BASE}/clients/424242", 404),
        ("GET", f"{BASE}/stats", 401),
    ]
    assert records[0].mailing_id == mailing_id
    assert records[1].client_id == 424242
    assert all(r.request_id for r in records)


def test_created_ids_are_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailing.api"):
        mailing_id = api.post("/mailings", mailing_body()).json()["id"]
    (record,) = [r for r in caplog.records if r.name == "mailing.api"]
    assert (record.status, record.mailing_id) == (201, mailing_id)


def test_openapi_document_is_public_and_declares_errors() -> None:
    response = HttpClient().get(BASE + "/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Mailing service API"
    paths = schema["paths"]
    assert set(paths) == {
        f"{BASE}/clients",
        f"{BASE}/clients/{{client_id}}",
        f"{BASE}/mailings",
        f"{BASE}/mailings/preview",
        f"{BASE}/mailings/{{mailing_id}}",
        f"{BASE}/mailings/{{mailing_id}}/launch",
        f"{BASE}/mailings/{{mailing_id}}/test",
        f"{BASE}/mailings/{{mailing_id}}/clone",
        f"{BASE}/mailings/{{mailing_id}}/resend",
        f"{BASE}/mailings/{{mailing_id}}/pause",
        f"{BASE}/mailings/{{mailing_id}}/resume",
        f"{BASE}/mailings/{{mailing_id}}/cancel",
        f"{BASE}/mailings/{{mailing_id}}/stats",
        f"{BASE}/mailings/{{mailing_id}}/messages",
        f"{BASE}/stats",
        f"{BASE}/opt-outs",
        f"{BASE}/opt-outs/{{phone}}",
        f"{BASE}/provider",
        f"{BASE}/mailings/{{mailing_id}}/events",
        f"{BASE}/messages/{{message_id}}/events",
        f"{BASE}/clients/{{client_id}}/events",
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "422"} <= codes, (method, path)
            assert operation["security"] == [{"ApiTokenAuth": []}]
            if "{" in path:
                assert "404" in codes
    assert "409" in paths[f"{BASE}/mailings/{{mailing_id}}"]["patch"]["responses"]
    assert "409" in paths[f"{BASE}/mailings/{{mailing_id}}/pause"]["post"]["responses"]


def test_swagger_ui_is_served_with_local_assets() -> None:
    response = HttpClient().get("/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert f"{BASE}/openapi.json" in html
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls
    assert not [url for url in urls if re.match(r"(https?:)?//", url)], urls
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert any(src.endswith("swagger-ui-bundle.js") for src in scripts)
    for url in urls:
        assert url.startswith(settings.STATIC_URL), url
        assert finders.find(url.removeprefix(settings.STATIC_URL)), url
