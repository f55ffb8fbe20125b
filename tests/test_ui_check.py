"""The staff UI's way from a draft to sending: the form writes a draft, "Check and send"
shows what it will do, and only its one named button launches it (never Enter)."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from mailing import services
from mailing.models import DispatcherSlot, Event, Mailing, MailingStatus
from tests.conftest import make_clients
from tests.test_ui import local_input, mailing_data, post, staff, web

__all__ = ["staff", "web"]  # fixtures

pytestmark = pytest.mark.django_db


def draft(**fields) -> Mailing:
    now = timezone.now()
    values = {
        "name": "Autumn",
        "start_at": now - timedelta(minutes=1),
        "end_at": now + timedelta(hours=3),
        "text": "Скидки до воскресенья " * 10,  # 220 UCS-2 units: 4 parts
        "draft": True,
    }
    return services.create_mailing(**(values | fields))


def check_url(mailing: Mailing) -> str:
    return reverse("dashboard:mailing_check", args=[mailing.pk])


def test_saving_the_form_writes_a_draft_and_goes_to_check_and_send(web):
    make_clients(4)
    data = mailing_data(start_at=local_input(timezone.now() - timedelta(minutes=5)))
    response = post(web, reverse("dashboard:mailing_create"), data)
    mailing = Mailing.objects.get()
    assert mailing.status == MailingStatus.DRAFT
    assert response["Location"] == check_url(mailing)


def test_check_and_send_shows_the_audience_the_text_its_parts_and_the_cost(web, settings):
    settings.SEND_RATE_LIMIT = 2
    make_clients(6, timezone_name="Europe/Moscow")
    make_clients(4, timezone_name="Asia/Vladivostok", first=100)
    now = timezone.now()
    # A window of the current Moscow hour: Moscow is inside it now; Vladivostok, always 7 h
    # ahead, reads a clock 7 h later and stays outside it for the 20 minutes of the period.
    moscow_now = timezone.localtime(now, timezone.get_fixed_timezone(180))
    window_start = time(moscow_now.hour, 0)
    window_end = time((moscow_now.hour + 1) % 24, 0)
    mailing = draft(
        start_at=now - timedelta(minutes=1),
        end_at=now + timedelta(minutes=20),
        send_window=services.SendWindow(window_start, window_end),
    )
    page = web.get(check_url(mailing)).content.decode()
    assert 'data-testid="check-matching">10<' in page
    assert 'data-testid="check-reachable">6<' in page
    assert "4: their send window" in page
    assert "UCS-2" in page and 'data-testid="segments-parts">4<' in page
    assert "Will be charged as <strong>24</strong> text messages (4 per client)" in page
    assert 'data-testid="check-starts">now<' in page
    assert "about 3 s at the configured send limit of 2.0/s" in page
    assert "Send to 6 clients" in page


def test_a_later_start_reads_as_a_countdown_in_the_staff_zone(web):
    make_clients(1)
    start = timezone.now() + timedelta(hours=2, minutes=10, seconds=30)
    mailing = draft(start_at=start, end_at=start + timedelta(hours=1))
    page = web.get(check_url(mailing), headers={}).content.decode()
    local = timezone.localtime(start)
    assert "in 2 h 10 min, at" in page and local.strftime("%H:%M") in page


def test_the_measured_send_rate_is_preferred_to_the_limit(web, settings):
    settings.SEND_RATE_LIMIT = 1
    make_clients(30)
    DispatcherSlot.objects.create(
        slot=1,
        send_requests=600,
        send_p50_ms=5,
        send_p95_ms=9,
        send_error_rate=0,
        send_health_at=timezone.now(),
    )
    page = web.get(check_url(draft())).content.decode()
    assert "about 3 s at the measured send rate of 10.0/s" in page


def test_only_the_named_button_launches_and_enter_cannot(web):
    make_clients(3)
    mailing = draft()
    page = web.get(check_url(mailing)).content.decode()
    # The form's first submit button, which Enter presses, is disabled.
    form = page[page.index('<form method="post" class="form-grid"') :]
    first_button = form[form.index("<button") : form.index(">", form.index("<button")) + 1]
    assert "disabled" in first_button and 'name="send"' not in first_button
    # A submission without the send button (what an implicit submission would be) does nothing.
    response = post(web, check_url(mailing), {"audience": "3"}, page=check_url(mailing))
    assert response.status_code == 200
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.DRAFT
    response = post(
        web, check_url(mailing), {"audience": "3", "send": "1"}, page=check_url(mailing)
    )
    assert response.status_code == 302
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.RUNNING
    launched = Event.objects.get(mailing_id=mailing.pk, kind="mailing.launched")
    assert launched.actor_name == "alice@example.com"
    # Launched: the page says so and sends nowhere.
    again = web.get(check_url(mailing))
    assert again.status_code == 302


def test_a_changed_audience_asks_to_check_again(web):
    make_clients(3)
    mailing = draft()
    make_clients(2, first=100)  # imported after the page was shown with 3
    response = post(
        web, check_url(mailing), {"audience": "3", "send": "1"}, page=check_url(mailing)
    )
    assert response.status_code == 200
    assert "it is now 5" in response.content.decode()
    assert Mailing.objects.get().status == MailingStatus.DRAFT


def test_a_large_audience_must_type_the_count(web, settings):
    settings.LAUNCH_CONFIRM_THRESHOLD = 4
    make_clients(5)
    mailing = draft()
    page = web.get(check_url(mailing)).content.decode()
    assert 'name="confirm_count"' in page
    for typed in ("", "4", "55", "abc"):
        response = post(
            web,
            check_url(mailing),
            {"audience": "5", "send": "1", "confirm_count": typed},
            page=check_url(mailing),
        )
        assert response.status_code == 200, typed
        assert "Type 5 to confirm." in response.content.decode()
        assert Mailing.objects.get().status == MailingStatus.DRAFT
    response = post(
        web,
        check_url(mailing),
        {"audience": "5", "send": "1", "confirm_count": " 5 "},
        page=check_url(mailing),
    )
    assert response.status_code == 302
    assert Mailing.objects.get().status == MailingStatus.RUNNING


def test_a_draft_past_its_end_is_a_form_error_not_a_500(web):
    make_clients(1)
    mailing = draft()
    Mailing.objects.filter(pk=mailing.pk).update(
        start_at=timezone.now() - timedelta(hours=2), end_at=timezone.now() - timedelta(hours=1)
    )
    page = web.get(check_url(mailing)).content.decode()
    assert "The end has passed" in page
    response = post(
        web, check_url(mailing), {"audience": "1", "send": "1"}, page=check_url(mailing)
    )
    assert response.status_code == 200
    assert "end has passed" in response.content.decode()
    bad = post(
        web, check_url(mailing), {"audience": "x" * 300, "send": "1"}, page=check_url(mailing)
    )
    assert bad.status_code == 200


def test_the_editor_counts_segments_live(web):
    url = reverse("dashboard:mailing_segments")
    form_page = web.get(reverse("dashboard:mailing_create")).content.decode()
    assert url in form_page
    gsm = post(web, url, {"text": "Sale [today] only €5"}).content.decode()
    assert "23 GSM-7 characters" in gsm and 'data-testid="segments-parts">1<' in gsm
    ucs = post(web, url, {"text": "Привет, " + "a" * 70}).content.decode()
    assert "78 UCS-2 units" in ucs and 'data-testid="segments-parts">2<' in ucs
    assert '<mark class="ucs2-char">П</mark>' in ucs
    assert post(web, url, {"text": "x" * 5000}).status_code == 200


def test_the_test_box_sends_shows_the_outcome_and_remembers_the_phone(
    web, provider_settings, provider
):
    make_clients(2)
    mailing = draft()
    url = reverse("dashboard:mailing_test_send", args=[mailing.pk])
    bad = post(web, url, {"phone": "12"}, page=check_url(mailing)).content.decode()
    assert "Phone must be" in bad and provider.recorder.requests == 0
    sent = post(web, url, {"phone": "79165550101"}, page=check_url(mailing)).content.decode()
    assert "Test to 79165550101: accepted" in sent
    assert provider.recorder.accepted == 1
    page = web.get(check_url(mailing)).content.decode()
    assert 'value="79165550101"' in page
    assert Mailing.objects.get().status == MailingStatus.DRAFT


def test_the_clone_button_opens_the_copy_for_editing(web):
    source = draft()
    response = post(web, reverse("dashboard:mailing_clone", args=[source.pk]), {})
    copy = Mailing.objects.exclude(pk=source.pk).get()
    assert response["Location"] == reverse("dashboard:mailing_edit", args=[copy.pk])
    assert copy.name == "Autumn (copy)" and copy.status == MailingStatus.DRAFT
    assert copy.text == source.text
    assert Event.objects.get(kind="mailing.cloned").actor_name == "alice@example.com"


def test_a_finished_mailing_offers_a_resend_to_its_unreached(web):
    make_clients(3)
    source = draft(draft=False)
    from mailing.engine import lifecycle
    from mailing.models import Message

    lifecycle.tick(timezone.now())
    first = Message.objects.filter(mailing=source).order_by("id").first()
    Message.objects.filter(pk=first.pk).update(status="failed")
    Message.objects.filter(mailing=source).exclude(pk=first.pk).update(status="sent")
    Mailing.objects.filter(pk=source.pk).update(pending=0, failed=1, sent=2)
    lifecycle.tick(timezone.now())
    detail = reverse("dashboard:mailing_detail", args=[source.pk])
    assert "Resend to 1 unreached" in web.get(detail).content.decode()
    response = post(
        web,
        reverse("dashboard:mailing_resend", args=[source.pk]),
        {"statuses": ["failed", "expired"]},
    )
    copy = Mailing.objects.get(resend_of=source.pk)
    assert response["Location"] == check_url(copy)
    assert 'data-testid="check-reachable">1<' in web.get(check_url(copy)).content.decode()
    assert "Resent as" in web.get(detail).content.decode()
