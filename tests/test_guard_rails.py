"""Guard rails per mailing: its own send-rate limit (across dispatchers) and the automatic
pause when too many of its last attempts failed for good (mailing/rules.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from mailing import rules, services
from mailing.engine import rate
from mailing.models import Event, Mailing, MailingStatus, Message, MessageStatus
from mailing.tokens import issue_token
from tests.conftest import make_clients, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/api/v1"


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("ops", is_staff=True)


@pytest.fixture
def api(staff) -> HttpClient:
    key = issue_token(staff, "tests")[1]
    return HttpClient(headers={"Authorization": f"Bearer {key}"})


def running(seconds: float = 120, **fields) -> Mailing:
    return services.create_mailing(
        start_at=timezone.now(), end_at=timezone.now() + timedelta(seconds=seconds), **fields
    )


# --- the rules ------------------------------------------------------------------------


def test_the_failure_pause_rule():
    assert rules.recent_attempts("ss", "fff", 4) == "sfff"
    assert rules.recent_attempts("ss", "f", 0) == ""
    # Not judged before it has made enough attempts.
    assert rules.failure_pause_reason("fff", 4, 0.5) is None
    assert rules.failure_pause_reason("ssff", 4, 0.5) is None  # half is not more than half
    reason = rules.failure_pause_reason("sfff", 4, 0.5)
    assert reason is not None and "3 of its last 4" in reason
    assert rules.failure_pause_reason("ffff", 0, 0.5) is None  # 0: the pause is off


@pytest.mark.parametrize("value", [0, -1, 10_001, float("nan"), float("inf"), "5", True])
def test_a_send_rate_must_be_a_positive_number_within_the_limit(value):
    assert rules.rate_limit_error(value) is not None


def test_a_send_rate_may_be_a_fraction_or_absent():
    assert rules.rate_limit_error(None) is None
    assert rules.rate_limit_error(0.5) is None
    assert rules.rate_limit_error(rules.MAILING_RATE_LIMIT_MAX) is None


def test_a_token_bucket_refills_at_its_rate_up_to_half_a_second():
    now = timezone.now()
    assert rate.take(0.0, None, 20.0, now, 100) == (10, 0.0)  # never used: full (0.5 s)
    granted, left = rate.take(0.0, now, 20.0, now + timedelta(seconds=0.25), 100)
    assert (granted, left) == (5, 0.0)
    granted, left = rate.take(3.0, now, 20.0, now + timedelta(hours=1), 2)
    assert (granted, left) == (2, 8.0)  # capped at 10, two taken


# --- the API and the UI -----------------------------------------------------------------


def test_the_api_takes_shows_and_changes_a_send_rate(api):
    make_clients(2)
    start = timezone.now() + timedelta(hours=1)
    body = {
        "start_at": start.isoformat(),
        "end_at": (start + timedelta(hours=1)).isoformat(),
        "text": "Hi",
        "rate_limit": 2.5,
    }
    created = api.post(f"{BASE}/mailings", body, content_type="application/json")
    assert created.status_code == 201, created.content
    mailing_id = created.json()["id"]
    shown = api.get(f"{BASE}/mailings/{mailing_id}").json()
    assert shown["rate_limit"] == 2.5 and shown["pause_reason"] is None
    changed = api.patch(
        f"{BASE}/mailings/{mailing_id}", {"rate_limit": None}, content_type="application/json"
    )
    assert changed.status_code == 200 and changed.json()["rate_limit"] is None


@pytest.mark.parametrize("value", [0, -3, 10_001, "fast"])
def test_a_bad_send_rate_is_422_and_changes_nothing(api, value):
    start = timezone.now() + timedelta(hours=1)
    body = {
        "start_at": start.isoformat(),
        "end_at": (start + timedelta(hours=1)).isoformat(),
        "text": "Hi",
        "rate_limit": value,
    }
    response = api.post(f"{BASE}/mailings", body, content_type="application/json")
    assert response.status_code == 422, response.content
    assert not Mailing.objects.exists()
    mailing = running(text="Hi")
    response = api.patch(
        f"{BASE}/mailings/{mailing.pk}", {"rate_limit": value}, content_type="application/json"
    )
    assert response.status_code == 422
    assert Mailing.objects.get(pk=mailing.pk).rate_limit is None


def test_the_send_rate_may_change_while_the_mailing_runs():
    make_clients(1)
    mailing = running(text="Hi")
    from mailing.engine import lifecycle

    lifecycle.tick(timezone.now())
    changed = services.update_mailing(Mailing.objects.get(pk=mailing.pk), rate_limit=3)
    assert changed.status == MailingStatus.RUNNING and changed.rate_limit == 3


def test_the_ui_shows_why_a_mailing_paused_itself(staff):
    mailing = running(text="Hi")
    Mailing.objects.filter(pk=mailing.pk).update(
        status=MailingStatus.PAUSED, pause_reason="Paused automatically: 9 of its last 10"
    )
    web = HttpClient()
    web.force_login(staff)
    page = web.get(reverse("dashboard:mailing_detail", args=[mailing.pk])).content.decode()
    assert "Paused automatically: 9 of its last 10" in page
    assert "Resume" in page


def test_the_ui_form_refuses_a_bad_send_rate(staff):
    web = HttpClient()
    web.force_login(staff)
    now = timezone.localtime()
    data = {
        "name": "Paced",
        "start_at": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        "end_at": (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
        "text": "Hi",
        "rate_limit": "-2",
    }
    page = web.post(reverse("dashboard:mailing_create"), data)
    assert page.status_code == 200
    assert rules.RATE_LIMIT_RANGE in page.content.decode()
    assert not Mailing.objects.exists()
    data["rate_limit"] = "7.5"
    assert web.post(reverse("dashboard:mailing_create"), data).status_code == 302
    assert Mailing.objects.get().rate_limit == 7.5


# --- the engine -------------------------------------------------------------------------


def test_a_mailing_send_rate_holds_across_two_dispatchers(provider, dispatcher_factory):
    """100 messages at 20/s with two dispatchers: the stand-in sees them arrive over at least
    (100 - the bucket's 10) / 20 = 4.5 s, while an unlimited mailing beside it is done."""
    make_clients(100)
    make_clients(300, operator_code="903", first=1000)
    paced = running(text="Paced", operator_codes=["916"], rate_limit=20)
    free = running(text="Free", operator_codes=["903"])
    dispatcher_factory()
    dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=free.pk).status == MailingStatus.FINISHED, 30)
    assert Mailing.objects.get(pk=paced.pk).pending > 0  # the free one did not wait for it
    wait_for(lambda: Mailing.objects.get(pk=paced.pk).status == MailingStatus.FINISHED, 30)
    paced_ids = set(Message.objects.filter(mailing=paced).values_list("id", flat=True))
    arrivals = sorted(
        at for msg_id, at in provider.recorder.first_arrived_at().items() if msg_id in paced_ids
    )
    assert len(arrivals) == 100
    span = arrivals[-1] - arrivals[0]
    assert span >= (100 - rate.capacity(20)) / 20 - 0.2, span
    # And never more than a bucket's worth plus the rate in any one second.
    for i, start in enumerate(arrivals):
        within = sum(1 for at in arrivals[i:] if at < start + 1.0)
        assert within <= rate.capacity(20) + 20 + 1, (start, within)


def test_a_mailing_that_keeps_failing_pauses_itself_and_resumes_by_hand(
    provider, dispatcher_factory, settings, api
):
    settings.MAILING_FAILURE_PAUSE_ATTEMPTS = 40
    settings.MAILING_FAILURE_PAUSE_RATE = 0.5
    make_clients(500)
    provider.update_config(reject_rate=0.9)
    mailing = running(text="Bad text")
    worker = dispatcher_factory(concurrency=20)
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.PAUSED, 20)
    wait_for(lambda: not Message.objects.filter(mailing=mailing, claimed_by__isnull=False).exists())
    paused = Mailing.objects.get(pk=mailing.pk)
    # Judged after 40 attempts; what was in flight then still lands: far from all 500.
    assert 40 <= paused.sent + paused.failed <= 40 + 2 * worker.config.concurrency
    assert paused.pending > 300
    shown = api.get(f"{BASE}/mailings/{mailing.pk}").json()
    assert shown["status"] == "paused"
    assert "of its last 40 attempts failed for good" in shown["pause_reason"]
    event = Event.objects.get(mailing_id=mailing.pk, kind="mailing.paused")
    assert event.data["reason"] == shown["pause_reason"] and event.actor_name == ""
    # Fixed (the provider accepts again), staff resume it: the reason goes, it finishes.
    provider.update_config(reject_rate=0.0)
    resumed = api.post(f"{BASE}/mailings/{mailing.pk}/resume", {}, content_type="application/json")
    assert resumed.status_code == 200 and resumed.json()["pause_reason"] is None
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 30)
    worker.stop()
    finished = Mailing.objects.get(pk=mailing.pk)
    assert finished.pending == 0 and finished.sent > 300
    assert Message.objects.filter(mailing=mailing, status=MessageStatus.SENT).count() == (
        finished.sent
    )


def test_the_automatic_pause_can_be_turned_off(provider, dispatcher_factory, settings):
    settings.MAILING_FAILURE_PAUSE_ATTEMPTS = 0
    make_clients(60)
    provider.update_config(reject_rate=1.0)
    mailing = running(text="Bad text")
    dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 20)
    assert Mailing.objects.get(pk=mailing.pk).failed == 60
