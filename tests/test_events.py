"""The event table: what services and the engine record, in bulk, and the timelines."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailing import events, selectors, services
from mailing.engine import lifecycle
from mailing.engine.provider import Outcome, SendResult
from mailing.engine.queue import Claimed, RetryPolicy, claim_due, record_results
from mailing.models import Event, Mailing, MailingStatus, Message, MessageStatus
from mailing.tokens import issue_token
from tests.conftest import make_clients, now_plus, wait_for

POLICY = RetryPolicy(base=1.0, cap=10.0)


def kinds(queryset) -> list[str]:
    return list(queryset.values_list("kind", flat=True))


def running_mailing(**extra) -> Mailing:
    now = timezone.now()
    return services.create_mailing(
        start_at=now - timedelta(minutes=1), end_at=now + timedelta(hours=1), text="Hi", **extra
    )


def event_inserts(queries) -> list[str]:
    table = Event._meta.db_table
    return [
        q["sql"] for q in queries if f'INTO "{table}"' in q["sql"] or f"INTO {table}" in q["sql"]
    ]


@pytest.mark.django_db
def test_services_record_the_life_of_a_client():
    client = services.create_client(phone="79161234567", timezone="Europe/Moscow", tag="vip")
    services.update_client(client, tag="gold")
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    client_id = client.pk
    services.delete_client(client)
    timeline = selectors.events_for(client_id=client_id)
    assert kinds(timeline) == [
        events.CLIENT_CREATED,
        events.CLIENT_UPDATED,
        events.MESSAGE_CANCELLED,
        events.CLIENT_DELETED,
    ]
    created, updated, cancelled, deleted = timeline
    assert created.data["phone"] == "79161234567" and created.data["operator_code"] == "916"
    assert updated.data == {"changes": {"tag": "gold"}}
    assert cancelled.mailing_id == mailing.pk and cancelled.data == {"reason": "client deleted"}
    assert cancelled.message_id == Message.objects.get(mailing=mailing).pk
    assert deleted.data == {"phone": "79161234567", "cancelled_messages": 1}


@pytest.mark.django_db
def test_services_and_lifecycle_record_the_life_of_a_mailing():
    make_clients(3)
    now = timezone.now()
    mailing = services.create_mailing(start_at=now_plus(60), end_at=now_plus(3600), text="Hi")
    services.update_mailing(mailing, text="Hello")
    lifecycle.tick(now + timedelta(seconds=61))
    mailing.refresh_from_db()
    services.pause_mailing(mailing)
    services.resume_mailing(mailing)
    services.cancel_mailing(mailing)
    timeline = list(selectors.events_for(mailing_id=mailing.pk))
    assert [e.kind for e in timeline] == [
        events.MAILING_CREATED,
        events.MAILING_UPDATED,
        events.MAILING_STARTED,
        events.MAILING_FANNED_OUT,
        events.MAILING_PAUSED,
        events.MAILING_RESUMED,
        events.MAILING_CANCELLED,
    ]
    assert timeline[1].data["changed"] == ["text"]
    assert timeline[3].data == {"messages": 3, "expired_at_creation": 0}
    assert timeline[-1].data == {"cancelled_messages": 3}
    # Each cancelled message has its own event (one statement), not on the mailing timeline.
    assert Event.objects.filter(kind=events.MESSAGE_CANCELLED, mailing_id=mailing.pk).count() == 3
    services.delete_mailing(Mailing.objects.get(pk=mailing.pk))
    assert kinds(selectors.events_for(mailing_id=mailing.pk))[-1] == events.MAILING_DELETED


@pytest.mark.django_db
def test_a_fan_out_writes_one_event_not_one_per_message():
    make_clients(2000)
    mailing = running_mailing()
    with CaptureQueriesContext(connection) as queries:
        lifecycle.tick(timezone.now())  # the first chunk, alone
        lifecycle.tick(timezone.now())  # the rest
    assert Message.objects.filter(mailing=mailing).count() == 2000
    assert len(event_inserts(queries.captured_queries)) == 1
    assert Event.objects.count() == 3  # created, started, fanned out
    # ... and every message's timeline starts with it.
    message = Message.objects.filter(mailing=mailing).last()
    assert kinds(selectors.events_for(message_id=message.pk)) == [events.MAILING_FANNED_OUT]


def result(claim: Claimed, outcome: Outcome, detail: str = "", code: int | None = 200):
    return SendResult(claim.message.message_id, outcome, detail, code, None, 0.0123)


@pytest.mark.django_db
def test_send_attempts_are_recorded_in_one_insert_per_batch():
    make_clients(60)
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    now = timezone.now()
    claimed = claim_due("w1", 60, now, timedelta(seconds=30))
    assert len(claimed) == 60
    outcomes = []
    for n, claim in enumerate(claimed):
        if n < 40:
            outcomes.append((claim, result(claim, Outcome.ACCEPTED)))
        elif n < 50:
            outcomes.append((claim, result(claim, Outcome.RETRY, "HTTP 502", 502)))
        elif n < 55:
            outcomes.append((claim, result(claim, Outcome.REJECTED, "code 7: bad phone")))
        else:
            outcomes.append((claim, None))  # not sent (stopping): not an attempt
    with CaptureQueriesContext(connection) as queries:
        record_results("w1", outcomes, now, POLICY, random.Random(1))
    assert len(event_inserts(queries.captured_queries)) == 1
    attempts = Event.objects.filter(message_id__isnull=False, kind__startswith="message.send_")
    assert attempts.count() == 55
    assert attempts.filter(kind="message.send_accepted").count() == 40
    retry = attempts.filter(kind="message.send_retry").first()
    assert retry.data == {"status_code": 502, "detail": "HTTP 502", "latency_ms": 12.3}
    assert retry.mailing_id == mailing.pk and retry.client_id is not None
    failed_message = Message.objects.get(
        mailing=mailing, status=MessageStatus.FAILED, pk=claimed[50].message.message_id
    )
    assert kinds(selectors.events_for(message_id=failed_message.pk)) == [
        events.MAILING_FANNED_OUT,
        "message.send_rejected",
    ]


@pytest.mark.django_db
def test_expiry_writes_one_event_per_message_in_one_statement():
    make_clients(300)
    now = timezone.now()
    mailing = services.create_mailing(
        start_at=now - timedelta(minutes=1), end_at=now + timedelta(seconds=5), text="Short"
    )
    lifecycle.tick(now)
    later = now + timedelta(seconds=10)
    with CaptureQueriesContext(connection) as queries:
        lifecycle.settle_unsendable(later)
    assert Mailing.objects.get(pk=mailing.pk).expired == 300
    assert Event.objects.filter(kind=events.MESSAGE_EXPIRED, mailing_id=mailing.pk).count() == 300
    statements = [q["sql"] for q in queries.captured_queries]
    if connection.vendor == "postgresql":
        # UPDATE ... RETURNING feeding INSERT ... SELECT: one statement.
        assert sum(1 for s in statements if s.startswith("WITH changed AS (UPDATE")) == 1
    mailing_timeline = list(selectors.events_for(mailing_id=mailing.pk))
    assert mailing_timeline[-1].kind == events.MAILING_MESSAGES_EXPIRED
    assert mailing_timeline[-1].data == {"messages": 300}


@pytest.mark.django_db
def test_events_for_needs_exactly_one_id():
    with pytest.raises(ValueError):
        selectors.events_for()
    with pytest.raises(ValueError):
        selectors.events_for(mailing_id=1, client_id=2)


@pytest.mark.django_db(transaction=True)
def test_a_real_dispatch_leaves_one_event_per_attempt(provider, dispatcher_factory):
    make_clients(25)
    provider.update_config(error_rate=0.3)
    mailing = running_mailing()
    dispatcher = dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 30)
    dispatcher.stop()
    for message in Message.objects.filter(mailing=mailing):
        timeline = list(selectors.events_for(message_id=message.pk))
        assert timeline[0].kind == events.MAILING_FANNED_OUT
        attempts = [e for e in timeline if e.kind.startswith("message.send_")]
        assert len(attempts) == message.attempts
        assert attempts[-1].kind == "message.send_accepted"
    assert kinds(selectors.events_for(mailing_id=mailing.pk))[-1] == events.MAILING_FINISHED


@pytest.fixture
def api_headers(db):
    user = get_user_model().objects.create_user("ops", is_staff=True)
    return {"HTTP_AUTHORIZATION": f"Bearer {issue_token(user, 'tests')[1]}"}


@pytest.mark.django_db
def test_event_endpoints(client, api_headers):
    person = services.create_client(phone="79161234567", timezone="Europe/Moscow")
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    message = Message.objects.get(mailing=mailing)
    for n in range(3):
        services.update_client(person, tag=f"t{n}")

    answer = client.get(f"/api/v1/mailings/{mailing.pk}/events", **api_headers)
    assert answer.status_code == 200
    assert [e["kind"] for e in answer.json()["items"]] == [
        "mailing.created",
        "mailing.started",
        "mailing.fanned_out",
    ]
    answer = client.get(f"/api/v1/messages/{message.pk}/events", **api_headers)
    assert [e["kind"] for e in answer.json()["items"]] == ["mailing.fanned_out"]
    answer = client.get(f"/api/v1/clients/{person.pk}/events?limit=2&offset=1", **api_headers)
    body = answer.json()
    assert body["count"] == 4 and [e["data"] for e in body["items"]] == [
        {"changes": {"tag": "t0"}},
        {"changes": {"tag": "t1"}},
    ]
    item = body["items"][0]
    assert set(item) == {
        "id",
        "kind",
        "at",
        "mailing_id",
        "message_id",
        "client_id",
        "data",
        "actor",
    }

    assert client.get(f"/api/v1/clients/{person.pk}/events").status_code == 401
    assert client.get("/api/v1/clients/999999/events", **api_headers).status_code == 404
    assert client.get("/api/v1/messages/999999/events", **api_headers).status_code == 404
    # A deleted client's history stays readable.
    person_id = person.pk
    services.delete_client(person)
    answer = client.get(f"/api/v1/clients/{person_id}/events", **api_headers)
    assert answer.status_code == 200 and answer.json()["items"][-1]["kind"] == "client.deleted"


@pytest.mark.django_db
def test_timeline_partial_renders_events():
    person = services.create_client(phone="79161234567", timezone="Europe/Moscow", tag="vip")
    html = render_to_string(
        "partials/timeline.html", {"events": selectors.events_for(client_id=person.pk)}
    )
    assert "client.created" in html and "79161234567" in html and 'class="timeline"' in html
    empty = render_to_string("partials/timeline.html", {"events": [], "timeline_empty": "None"})
    assert "None" in empty


@pytest.mark.django_db
def test_claim_time_settling_logs_exactly_the_messages_it_changed():
    """A message claimed after its client was deleted is cancelled at claim time with one
    event and the counters moved; a message already cancelled is neither claimed nor logged."""
    clients = make_clients(3)
    mailing = running_mailing()
    lifecycle.tick(timezone.now())
    gone, already = (Message.objects.get(mailing=mailing, client=c) for c in clients[:2])
    # The client row disappears behind the services' back (as if deleted while leased).
    Message.objects.filter(pk=gone.pk).update(client=None)
    # Already cancelled before the claim.
    Message.objects.filter(pk=already.pk).update(status=MessageStatus.CANCELLED)
    Mailing.objects.filter(pk=mailing.pk).update(pending=2, cancelled=1)

    claimed = claim_due("w1", 10, timezone.now(), timedelta(seconds=30))

    assert [c.message.message_id for c in claimed] == [
        Message.objects.get(mailing=mailing, client=clients[2]).pk
    ]
    gone.refresh_from_db()
    assert gone.status == MessageStatus.CANCELLED and gone.last_error == "client deleted"
    logged = Event.objects.filter(kind=events.MESSAGE_CANCELLED)
    assert list(logged.values_list("message_id", flat=True)) == [gone.pk]
    assert logged.get().data == {"reason": "client deleted"}
    mailing.refresh_from_db()
    assert mailing.cancelled == 2 and mailing.pending == 1
