"""Opt-outs: kept by phone, excluded at fan-out in the same statement, counted in the
preview, cancelling pending messages, outliving the client; every change an event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailing import services
from mailing.engine import lifecycle
from mailing.engine.fanout import fan_out
from mailing.models import Event, Mailing, Message, MessageStatus, OptOut
from mailing.rules import Reason
from tests.conftest import make_clients, wait_for
from tests.test_api import Api, api, api_key, error_locs, staff_user

__all__ = ["api", "api_key", "staff_user"]  # fixtures

pytestmark = pytest.mark.django_db


def running(**fields) -> Mailing:
    now = timezone.now()
    return services.create_mailing(
        start_at=now - timedelta(minutes=1), end_at=now + timedelta(hours=1), text="Hi", **fields
    )


def test_opt_outs_through_the_api_are_idempotent_searchable_and_removable(api: Api) -> None:
    first = api.post("/opt-outs", {"phone": "79160000001"})
    assert first.status_code == 201 and first.json()["phone"] == "79160000001"
    assert api.post("/opt-outs", {"phone": 79160000001}).status_code == 200  # already out
    api.post("/opt-outs", {"phone": "79030000002"})
    listed = api.get("/opt-outs").json()
    assert [row["phone"] for row in listed["items"]] == ["79030000002", "79160000001"]
    found = api.get("/opt-outs", {"search": "916"}).json()["items"]
    assert [row["phone"] for row in found] == ["79160000001"]
    assert ["query", "search"] in error_locs(api.get("/opt-outs", {"search": "x"}))
    assert ["body", "phone"] in error_locs(api.post("/opt-outs", {"phone": "123"}))
    assert api.get("/opt-outs/79160000001").json()["phone"] == "79160000001"
    assert api.delete("/opt-outs/79160000001").status_code == 204
    assert api.get("/opt-outs/79160000001").status_code == 404
    assert api.delete("/opt-outs/79160000001").status_code == 404
    assert list(OptOut.objects.values_list("phone", flat=True)) == ["79030000002"]
    kinds = list(
        Event.objects.filter(kind__startswith="opt_out.").values_list("kind", "actor_token")
    )
    assert kinds == [
        ("opt_out.added", "tests"),
        ("opt_out.added", "tests"),
        ("opt_out.removed", "tests"),
    ]


def test_fan_out_leaves_out_opted_out_phones_in_the_same_statement() -> None:
    clients = make_clients(10)
    services.opt_out(clients[0].phone)
    services.opt_out(clients[1].phone)
    mailing = running()
    with CaptureQueriesContext(connection) as queries:
        fan_out(mailing, timezone.now())
    inserts = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("INSERT INTO mailing_message")
    ]
    assert len(inserts) == 1 and "EXISTS" in inserts[0]
    phones = set(Message.objects.filter(mailing=mailing).values_list("phone", flat=True))
    assert len(phones) == 8 and clients[0].phone not in phones


def test_the_preview_and_the_check_counts_say_how_many_opted_out(api: Api) -> None:
    clients = make_clients(5)
    services.opt_out(clients[0].phone)
    body = api.post("/mailings/preview", {}).json()
    assert (body["matching"], body["opted_out"], body["reachable"]) == (5, 1, 4)


def test_an_opt_out_mid_mailing_cancels_its_pending_message_with_the_reason() -> None:
    clients = make_clients(3)
    mailing = running()
    lifecycle.tick(timezone.now())
    assert Message.objects.filter(mailing=mailing, status=MessageStatus.PENDING).count() == 3
    services.opt_out(clients[1].phone)
    message = Message.objects.get(mailing=mailing, phone=clients[1].phone)
    assert message.status == MessageStatus.CANCELLED and message.last_error == Reason.OPTED_OUT
    mailing.refresh_from_db()
    assert (mailing.pending, mailing.cancelled) == (2, 1)


def test_an_opt_out_outlives_its_client() -> None:
    client = make_clients(1)[0]
    services.opt_out(client.phone)
    services.delete_client(client)
    again = services.create_client(phone=client.phone, timezone="Europe/Moscow")
    mailing = running()
    lifecycle.tick(timezone.now())
    assert not Message.objects.filter(mailing=mailing, client=again).exists()


@pytest.mark.django_db(transaction=True)
def test_an_opted_out_phone_is_never_sent_while_the_rest_are(provider, dispatcher_factory) -> None:
    clients = make_clients(20)
    mailing = running()
    lifecycle.tick(timezone.now())  # fanned out: 20 pending
    services.opt_out(clients[5].phone)
    worker = dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == "finished", 20)
    worker.stop()
    mailing.refresh_from_db()
    assert (mailing.sent, mailing.cancelled) == (19, 1)
    opted = Message.objects.get(mailing=mailing, phone=clients[5].phone)
    assert provider.recorder.count_of(opted.pk) == 0
    assert provider.recorder.unique_accepted == 19


# --- Resend to the unreached ------------------------------------------------------------


def finished_with_outcomes(clients, failed: int, expired: int) -> Mailing:
    mailing = running()
    lifecycle.tick(timezone.now())
    ids = list(Message.objects.filter(mailing=mailing).order_by("id").values_list("id", flat=True))
    Message.objects.filter(id__in=ids[:failed]).update(status=MessageStatus.FAILED)
    Message.objects.filter(id__in=ids[failed : failed + expired]).update(
        status=MessageStatus.EXPIRED
    )
    Message.objects.filter(id__in=ids[failed + expired :]).update(status=MessageStatus.SENT)
    sent = len(ids) - failed - expired
    Mailing.objects.filter(pk=mailing.pk).update(
        pending=0, failed=failed, expired=expired, sent=sent
    )
    lifecycle.tick(timezone.now())
    mailing.refresh_from_db()
    assert mailing.status == "finished"
    return mailing


def test_resend_reaches_exactly_the_unreached_and_not_the_opted_out(api: Api) -> None:
    clients = make_clients(10)
    source = finished_with_outcomes(clients, failed=3, expired=2)
    failed_clients = set(
        Message.objects.filter(mailing=source, status="failed").values_list("client_id", flat=True)
    )
    opted = Message.objects.filter(mailing=source, status="failed").order_by("id").first()
    services.opt_out(opted.phone)

    response = api.post(f"/mailings/{source.pk}/resend", {"statuses": ["failed"]})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "draft" and body["resend_of"] == source.pk
    assert body["name"].endswith(" (resend)")
    assert api.post(f"/mailings/{body['id']}/launch").json()["status"] == "running"
    lifecycle.tick(timezone.now())
    resent = set(Message.objects.filter(mailing_id=body["id"]).values_list("client_id", flat=True))
    assert resent == failed_clients - {opted.client_id}
    assert Event.objects.get(mailing_id=source.pk, kind="mailing.resent").data == {
        "copy_id": body["id"],
        "statuses": ["failed"],
    }
    both = api.post(f"/mailings/{source.pk}/resend", {"statuses": ["expired", "failed"]}).json()
    api.post(f"/mailings/{both['id']}/launch")
    lifecycle.tick(timezone.now())
    assert Message.objects.filter(mailing_id=both["id"]).count() == 4  # 3 + 2, less one out


def test_resend_refuses_what_it_cannot_do(api: Api) -> None:
    make_clients(2)
    live = running()
    assert api.post(f"/mailings/{live.pk}/resend", {"statuses": ["failed"]}).status_code == 409
    assert ["body", "statuses", 0] in error_locs(
        api.post(f"/mailings/{live.pk}/resend", {"statuses": ["sent"]})
    )
    assert ["body", "statuses"] in error_locs(
        api.post(f"/mailings/{live.pk}/resend", {"statuses": []})
    )
    assert api.post("/mailings/999999/resend", {"statuses": ["failed"]}).status_code == 404
