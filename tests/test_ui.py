"""Staff UI: every page and form, access control, CSRF, CSV import and export."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from dashboard.auth import is_staff_identity
from mailing import services
from mailing.engine.send_health import SendHealthWindow, percentile
from mailing.imports import import_clients_csv
from mailing.models import ApiToken, Client, DispatcherSlot, Mailing, MailingStatus, Message
from tests.conftest import make_clients

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("alice", email="alice@example.com", is_staff=True)


@pytest.fixture
def web(staff) -> HttpClient:
    client = HttpClient(enforce_csrf_checks=True)
    client.force_login(staff)
    return client


def csrf_of(web: HttpClient, url: str) -> str:
    response = web.get(url)
    assert response.status_code == 200
    return (
        response.cookies["csrftoken"].value
        if "csrftoken" in response.cookies
        else (web.cookies["csrftoken"].value)
    )


def post(web: HttpClient, url: str, data: dict, page: str | None = None, **extra):
    token = csrf_of(web, page or reverse("dashboard:home"))
    return web.post(url, {**data, "csrfmiddlewaretoken": token}, **extra)


def local_input(dt) -> str:
    return timezone.localtime(dt).strftime("%Y-%m-%dT%H:%M")


# --- Access ---------------------------------------------------------------------------

# Public on purpose: sign-in and the identity provider round trip (django-allauth; with
# SOCIALACCOUNT_ONLY its local login page lists only the provider), the API's schema and
# documentation, and the operations endpoints (healthz; metrics has its own bearer token).
PUBLIC = {
    "sign-in/",
    "accounts/login/",
    "accounts/logout/",
    "accounts/inactive/",
    "accounts/oidc/sso/login/",
    "accounts/oidc/sso/login/callback/",
    "accounts/3rdparty/login/cancelled/",
    "accounts/3rdparty/login/error/",
    "accounts/3rdparty/signup/",
    "accounts/social/login/cancelled/",
    "accounts/social/login/error/",
    "accounts/social/signup/",
    "api/v1/openapi.json",
    "docs/",
    "healthz",
    "metrics",
    "favicon.ico",
}


def all_routes():
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)

    return sorted({concrete(route) for route in walk(get_resolver().url_patterns)})


def concrete(route: str) -> str:
    """A URL for a route: parameters filled in (ids 1, the provider "sso", words "x")."""
    route = route.replace("^", "").replace("$", "").replace("\\Z", "")
    route = re.sub(r"\(\?P<provider_id>[^)]*\)", "sso", route)
    route = re.sub(r"<provider_id>", "sso", route)
    route = re.sub(r"<int:\w+>", "1", route)
    route = re.sub(r"<(?:str:|slug:|path:)?\w+>", "x", route)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "x", route)
    return route.replace("\\", "")


def test_every_url_needs_sign_in_except_the_listed_public_ones(client):
    routes = all_routes()
    assert "mailings/1/" in routes and "accounts/oidc/sso/login/" in routes
    assert set(routes) >= PUBLIC, PUBLIC - set(routes)
    sign_in = reverse("dashboard:sign_in")
    for route in routes:
        if route in PUBLIC:
            continue
        url = "/" + route
        statuses = []
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            statuses.append(response.status_code)
            if route.startswith("api/"):
                assert response.status_code in (401, 404, 405), (route, method)
            elif route.startswith("admin/"):
                # The admin sends anonymous users to its login, which sends them to sign-in.
                assert response.status_code == 302, (route, method)
                location = response["Location"]
                for _ in range(3):
                    if not location.startswith("/admin/"):
                        break
                    location = client.get(location)["Location"]
                assert location.startswith(sign_in), (route, location)
            else:
                assert response.status_code in (301, 302), (route, method, response.status_code)
                location = response["Location"]
                if response.status_code == 301:  # allauth's old paths
                    location = client.get(location)["Location"]
                assert location.startswith(sign_in), (route, method, location)
        if route.startswith("api/") and route != "api/v1/":  # the bare prefix is no endpoint
            assert 401 in statuses, route


def test_api_needs_a_token(client):
    assert client.get("/api/v1/mailings").status_code == 401


def test_public_pages_are_reachable(client):
    assert client.get(reverse("dashboard:sign_in")).status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_sign_in_page_posts_to_the_provider_with_csrf(client):
    page = client.get(reverse("dashboard:sign_in")).content.decode()
    assert 'action="/accounts/oidc/sso/login/"' in page
    assert "csrfmiddlewaretoken" in page


def test_non_staff_user_is_refused_clearly(db):
    user = get_user_model().objects.create_user("bob", email="bob@outside.test")
    web = HttpClient()
    web.force_login(user)
    response = web.get(reverse("dashboard:mailing_list"))
    assert response.status_code == 403
    assert b"for staff only" in response.content


@pytest.mark.parametrize(
    ("claims", "allowed"),
    [
        ({"email": "a@example.com", "email_verified": True}, True),
        ({"email": "a@EXAMPLE.com", "email_verified": True}, True),
        ({"email": "a@example.com", "email_verified": False}, False),
        ({"email": "a@outside.test", "email_verified": True}, False),
        ({"email": "a@outside.test", "email_verified": True, "groups": ["staff"]}, True),
        ({"groups": ["other"]}, False),
        ({}, False),
    ],
)
def test_staff_identity_rule(claims, allowed):
    assert is_staff_identity(claims) is allowed


def test_local_password_sign_in_is_disabled(client, db):
    user = get_user_model().objects.create_user("carol", password="pw-123456", is_staff=True)
    assert user.pk
    response = client.post("/accounts/login/", {"login": "carol", "password": "pw-123456"})
    assert "_auth_user_id" not in client.session
    assert response.status_code in (200, 302, 403, 404)
    assert client.get(reverse("dashboard:home")).status_code == 302


def test_sign_out(web):
    response = post(web, reverse("account_logout"), {})
    assert response.status_code == 302
    assert web.get(reverse("dashboard:home")).status_code == 302


def test_forms_and_htmx_posts_enforce_csrf(web):
    for url in (
        reverse("dashboard:mailing_create"),
        reverse("dashboard:mailing_preview"),
        reverse("dashboard:client_create"),
        reverse("dashboard:tokens"),
        reverse("dashboard:set_timezone"),
    ):
        assert web.post(url, {}).status_code == 403, url
        assert web.post(url, {}, HTTP_HX_REQUEST="true").status_code == 403, url


# --- Dashboard --------------------------------------------------------------------------


def test_dashboard_shows_totals_and_health(web):
    make_clients(3)
    services.create_mailing(
        start_at=timezone.now() + timedelta(hours=1),
        end_at=timezone.now() + timedelta(hours=2),
        text="Hello",
    )
    DispatcherSlot.objects.create(
        slot=0,
        owner="w",
        heartbeat_at=timezone.now(),
        circuit_state="open",
        send_requests=40,
        send_p50_ms=12.5,
        send_p95_ms=80.0,
        send_error_rate=0.25,
        send_health_at=timezone.now(),
        send_window=37,
    )
    page = web.get(reverse("dashboard:home")).content.decode()
    assert "window 37" in page
    assert 'hx-trigger="every 2s"' in page
    assert "12.5 ms" in page and "80.0 ms" in page and "25%" in page
    assert "open" in page
    partial = web.get(reverse("dashboard:overview_partial"), HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    assert b"<html" not in partial.content
    assert b"Scheduled 1" in partial.content
    health = web.get(reverse("dashboard:health_partial"), HTTP_HX_REQUEST="true")
    assert b"Latency p95" in health.content


def test_paused_for_credentials_is_shown(web):
    from mailing.models import ProviderState

    ProviderState.objects.create(pk=1, auth_failed_at=timezone.now(), auth_error="HTTP 401")
    page = web.get(reverse("dashboard:health_partial")).content.decode()
    assert "Sending is paused" in page and "HTTP 401" in page


def test_send_health_window_percentiles_and_errors():
    now = [100.0]
    window = SendHealthWindow(window=60, clock=lambda: now[0])
    for i in range(1, 101):
        window.record(i / 1000, error=i % 10 == 0)
    summary = window.summary()
    assert summary == {"requests": 100, "p50_ms": 50.0, "p95_ms": 95.0, "error_rate": 0.1}
    now[0] += 61
    assert window.summary()["requests"] == 0
    assert percentile([1.0], 0.95) == 1.0


@pytest.mark.django_db(transaction=True)
def test_dispatcher_stores_its_send_health_on_its_slot(provider_settings, dispatcher_factory):
    from mailing.engine.runtime.keeper import SlotKeeper
    from mailing.engine.runtime.slots import take_slot
    from tests.conftest import FAST_CONFIG, wait_for

    make_clients(20)
    assert take_slot("w-health", timezone.now()) == 0
    dispatcher_factory(on_tick=SlotKeeper(0, "w-health"))
    services.create_mailing(
        start_at=timezone.now(), end_at=timezone.now() + timedelta(hours=1), text="hi"
    )
    slot = wait_for(
        lambda: DispatcherSlot.objects.filter(slot=0, send_requests__gte=20).first(), 15
    )
    assert slot.send_p50_ms is not None and slot.send_p95_ms >= slot.send_p50_ms
    assert slot.send_error_rate == 0.0
    # The window is stored every tick: it slow-started from 4 and grew with the answers.
    grown = wait_for(lambda: DispatcherSlot.objects.filter(slot=0, send_window__gt=4).first(), 15)
    assert grown.send_window <= FAST_CONFIG.concurrency


# --- Mailings ---------------------------------------------------------------------------


def mailing_data(**overrides) -> dict:
    now = timezone.now()
    data = {
        "name": "Spring sale, Moscow",
        "start_at": local_input(now + timedelta(hours=1)),
        "end_at": local_input(now + timedelta(hours=3)),
        "text": "Spring sale",
        "operator_codes": ["916"],
        "tags": [],
        "window_start": "",
        "window_end": "",
    }
    data.update(overrides)
    return data


def test_mailing_form_creates_through_the_service(web):
    make_clients(5, tag="vip")
    form_page = web.get(reverse("dashboard:mailing_create")).content.decode()
    assert 'hx-trigger="change delay:300ms, load"' in form_page
    assert '<option value="916">' in form_page and '<option value="vip">' in form_page
    for name in ("name", "start_at", "end_at", "text", "operator_codes", "tags", "window_start"):
        assert f'for="id_{name}"' in form_page, name
    response = post(
        web,
        reverse("dashboard:mailing_create"),
        mailing_data(tags=["vip"], window_start="09:00", window_end="21:00"),
    )
    assert response.status_code == 302
    mailing = Mailing.objects.get()
    # The form only writes a draft, even inside its period: sending is a separate step.
    assert mailing.status == MailingStatus.DRAFT and mailing.name == "Spring sale, Moscow"
    assert mailing.operator_codes == ["916"] and mailing.tags == ["vip"]
    assert mailing.window_start.hour == 9
    assert response["Location"] == reverse("dashboard:mailing_check", args=[mailing.pk])


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"text": ""}, "text", "This field is required"),
        ({"text": "x" * 1001}, "text", "at most 1000"),
        ({"end_at": "2000-01-01T00:00"}, "end_at", "after the start"),
        ({"window_start": "09:00", "window_end": "09:00"}, "window_start", "must differ"),
        ({"window_start": "09:00"}, "window_start", "both ends"),
        ({"operator_codes": ["999"]}, "operator_codes", "not one of the available"),
    ],
)
def test_mailing_form_errors_are_shown_and_nothing_saved(web, overrides, field, message):
    make_clients(2)
    response = post(web, reverse("dashboard:mailing_create"), mailing_data(**overrides))
    assert response.status_code == 200
    assert Mailing.objects.count() == 0
    errors = response.context["form"].errors
    assert field in errors, errors
    assert any(message in e for e in errors[field]), errors
    assert message.split()[0] in response.content.decode()


def test_service_errors_land_on_form_fields(web):
    """A rule only the service knows (the end in the future) shows next to its field."""
    make_clients(1)
    now = timezone.now()
    response = post(
        web,
        reverse("dashboard:mailing_create"),
        mailing_data(
            start_at=local_input(now - timedelta(hours=3)),
            end_at=local_input(now - timedelta(hours=2)),
        ),
    )
    assert "end_at" in response.context["form"].errors
    assert "The end must be in the future." in response.content.decode()
    assert Mailing.objects.count() == 0


def test_preview_counts_the_audience(web):
    make_clients(7, operator_code="916", tag="vip")
    make_clients(3, operator_code="926", tag="new")
    page = reverse("dashboard:mailing_create")
    response = post(
        web,
        reverse("dashboard:mailing_preview"),
        {"operator_codes": ["916"]},
        page=page,
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert b'data-testid="preview-count">7<' in response.content
    response = post(web, reverse("dashboard:mailing_preview"), {}, page=page)
    assert b'data-testid="preview-count">10<' in response.content


def test_mailing_list_filters_sorts_and_paginates(web):
    now = timezone.now()
    for i in range(30):
        services.create_mailing(
            start_at=now + timedelta(hours=1 + i),
            end_at=now + timedelta(days=3),
            text=f"Mailing text {i}",
        )
    last = Mailing.objects.order_by("-id").first()
    services.cancel_mailing(last)
    page = web.get(reverse("dashboard:mailing_list")).content.decode()
    assert "Mailing text 29" in page and "Mailing text 0" not in page  # page 1 of 2
    assert "?page=2" in page and "sort=start_at" in page
    page = web.get(reverse("dashboard:mailing_list"), {"status": "cancelled"}).content.decode()
    assert "Mailing text 29" in page and "Mailing text 28" not in page
    page = web.get(reverse("dashboard:mailing_list"), {"sort": "start_at"}).content.decode()
    assert "Mailing text 0" in page
    page = web.get(reverse("dashboard:mailing_list"), {"period": "day"}).content.decode()
    assert "Mailing text" not in page
    page = web.get(reverse("dashboard:mailing_list"), {"period": "upcoming"}).content.decode()
    assert "Mailing text 29" in page


def running_mailing(clients: int = 3) -> Mailing:
    make_clients(clients)
    return services.create_mailing(
        start_at=timezone.now(), end_at=timezone.now() + timedelta(hours=1), text="Go"
    )


def test_detail_progress_and_rate(web):
    mailing = running_mailing()
    Mailing.objects.filter(pk=mailing.pk).update(total=100, pending=60, sent=40)
    page = web.get(reverse("dashboard:mailing_detail", args=[mailing.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in page and "hx-vals=" in page
    assert 'data-testid="count-sent">40<' in page
    assert "measuring" in page
    # 1,000 more settled since the previous poll 500 s ago: 2/s, 60 pending: 30 s left. The
    # interval is long so that the time the request itself takes does not move the figures.
    Mailing.objects.filter(pk=mailing.pk).update(total=1100, pending=60, sent=1040)
    t = time.time() - 500
    partial = web.get(
        reverse("dashboard:mailing_progress", args=[mailing.pk]),
        {"t": f"{t}", "done": "40", "rate": ""},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "2.0/s" in partial
    assert re.search(r"Time left: <strong>(29|30|31) s", partial), partial


def test_detail_messages_filter_by_status(web):
    mailing = running_mailing(0)
    now = timezone.now()
    Message.objects.bulk_create(
        [
            Message(
                mailing=mailing,
                phone=f"7916000000{i}",
                timezone="UTC",
                status="sent" if i % 2 else "failed",
                created_at=now,
                next_attempt_at=now,
            )
            for i in range(6)
        ]
    )
    url = reverse("dashboard:mailing_detail", args=[mailing.pk])
    page = web.get(url, {"status": "failed"}).content.decode()
    assert "79160000000" in page and "79160000001" not in page


def test_pause_resume_cancel_with_confirmation(web):
    mailing = running_mailing()
    detail = web.get(reverse("dashboard:mailing_detail", args=[mailing.pk])).content.decode()
    assert "hx-confirm=" in detail
    pause = reverse("dashboard:mailing_action", args=[mailing.pk, "pause"])
    confirm = web.get(pause)  # without JavaScript: a confirmation page
    assert confirm.status_code == 200 and b"Pause mailing" in confirm.content
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.RUNNING
    assert web.post(pause, {}).status_code == 403  # CSRF
    response = post(web, pause, {}, HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response["HX-Redirect"].endswith(f"/{mailing.pk}/")
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.PAUSED
    post(web, reverse("dashboard:mailing_action", args=[mailing.pk, "resume"]), {})
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.RUNNING
    post(web, reverse("dashboard:mailing_action", args=[mailing.pk, "cancel"]), {})
    mailing.refresh_from_db()
    assert mailing.status == MailingStatus.CANCELLED
    # A conflict is reported, not an error page.
    response = post(web, pause, {})
    assert response.status_code == 302
    page = web.get(response["Location"]).content.decode()
    assert "cannot be paused" in page
    assert (
        web.get(reverse("dashboard:mailing_action", args=[mailing.pk, "nuke"])).status_code == 404
    )


def test_edit_scheduled_mailing_and_started_one_only_end(web):
    make_clients(2)
    now = timezone.now()
    mailing = services.create_mailing(
        start_at=now + timedelta(hours=1), end_at=now + timedelta(hours=2), text="Old"
    )
    url = reverse("dashboard:mailing_edit", args=[mailing.pk])
    response = post(web, url, mailing_data(text="New text"), page=url)
    assert response.status_code == 302
    mailing.refresh_from_db()
    assert mailing.text == "New text"
    # Errors keep the old values.
    response = post(web, url, mailing_data(text=""), page=url)
    assert response.status_code == 200
    mailing.refresh_from_db()
    assert mailing.text == "New text"
    running = running_mailing(0)
    url = reverse("dashboard:mailing_edit", args=[running.pk])
    page = web.get(url).content.decode()
    assert "only its name and end and send rate can still change" in page
    new_end = local_input(now + timedelta(hours=5))
    response = post(web, url, {"name": "Go", "end_at": new_end, "text": "ignored"}, page=url)
    assert response.status_code == 302
    running.refresh_from_db()
    assert running.text == "Go" and local_input(running.end_at) == new_end


def test_delete_mailing_with_confirmation(web):
    mailing = running_mailing(1)
    url = reverse("dashboard:mailing_delete", args=[mailing.pk])
    assert b"Delete mailing" in web.get(url).content
    page = post(web, url, {}, follow=True).content.decode()
    assert "its messages are being removed in the background" in page
    assert f'href="/mailings/{mailing.pk}/"' not in page
    assert web.get(reverse("dashboard:mailing_detail", args=[mailing.pk])).status_code == 404
    assert Mailing.objects.get(pk=mailing.pk).is_deleted


def test_csv_export_streams_and_neutralises_formulas(web):
    mailing = running_mailing(0)
    now = timezone.now()
    Message.objects.create(
        mailing=mailing,
        phone="79160000001",
        timezone="UTC",
        status="failed",
        created_at=now,
        next_attempt_at=now,
        last_error='=HYPERLINK("http://evil")',
    )
    Message.objects.create(
        mailing=mailing,
        phone="79160000002",
        timezone="UTC",
        created_at=now,
        next_attempt_at=now,
        last_error="+1",
    )
    response = web.get(reverse("dashboard:mailing_export", args=[mailing.pk]))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["id", "client_id", "phone", "status"]
    assert rows[1][-1] == '\'=HYPERLINK("http://evil")'
    assert rows[2][-1] == "'+1"
    assert len(rows) == 3


# --- Clients ------------------------------------------------------------------------------


def test_client_list_search_and_filters(web):
    make_clients(3, operator_code="916", tag="vip")
    make_clients(2, operator_code="926", tag="new")
    page = web.get(reverse("dashboard:client_list")).content.decode()
    assert "79160000000" in page and "79260000001" in page
    page = web.get(reverse("dashboard:client_list"), {"operator_code": "926"}).content.decode()
    assert "79160000000" not in page and "79260000001" in page
    page = web.get(reverse("dashboard:client_list"), {"q": "vip"}).content.decode()
    assert "79160000002" in page and "79260000000" not in page
    page = web.get(reverse("dashboard:client_list"), {"q": "7926000000"}).content.decode()
    assert "79260000001" in page and "79160000000" not in page


def test_client_create_edit_delete(web):
    url = reverse("dashboard:client_create")
    response = post(
        web, url, {"phone": "79161234567", "timezone": "Europe/Moscow", "tag": "vip"}, page=url
    )
    assert response.status_code == 302
    client = Client.objects.get()
    assert client.operator_code == "916"
    edit = reverse("dashboard:client_edit", args=[client.pk])
    response = post(
        web,
        edit,
        {"phone": "79261234567", "timezone": "Asia/Vladivostok", "tag": "vip"},
        page=edit,
    )
    assert response.status_code == 302
    client.refresh_from_db()
    assert (client.phone, client.operator_code, client.timezone) == (
        "79261234567",
        "926",
        "Asia/Vladivostok",
    )
    delete = reverse("dashboard:client_delete", args=[client.pk])
    assert web.get(delete).status_code == 200
    post(web, delete, {})
    assert Client.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"phone": "8916", "timezone": "Europe/Moscow"}, "phone", "11 digits"),
        ({"phone": "79161234567", "timezone": ""}, "timezone", "required"),
        (
            {"phone": "79161234567", "timezone": "Europe/Moscow", "operator_code": "12"},
            "operator_code",
            "3 digits",
        ),
        ({"phone": "79161234567", "timezone": "Europe/Moscow", "tag": " x"}, "tag", "spaces"),
        ({"phone": "79160000000", "timezone": "Europe/Moscow"}, "phone", "already exists"),
    ],
)
def test_client_form_errors_shown_nothing_saved(web, data, field, message):
    make_clients(1)
    url = reverse("dashboard:client_create")
    response = post(web, url, data, page=url)
    assert response.status_code == 200
    assert Client.objects.count() == 1
    errors = response.context["form"].errors
    assert any(message in e for e in errors.get(field, [])), errors


def upload(text: str, name: str = "clients.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def test_csv_import_reports_every_invalid_row(db):
    # The file's rules, in one pass (tests/test_ui_import.py: the page, the job, the preview).
    make_clients(1)  # 79160000000 exists
    body = (
        "phone,timezone,tag,operator_code\n"
        "79161111111,Europe/Moscow,vip,\n"
        "79160000000,Europe/Moscow,,\n"  # existing client
        "7916,Europe/Moscow,,\n"  # bad phone
        "79162222222,Mars/Base,,\n"  # bad zone
        "79161111111,Europe/Moscow,,\n"  # duplicate in the file
        "\n"
        "79163333333,Asia/Vladivostok,new,999\n"
        "79164444444,Europe/Moscow\n"  # wrong cell count
    )
    result = import_clients_csv([body.encode()])
    assert result.created == 2
    assert [(e.line, e.phone) for e in result.errors] == [
        (3, "79160000000"),
        (4, "7916"),
        (5, "79162222222"),
        (6, "79161111111"),
        (9, ""),
    ]
    reasons = " ".join(e.reason for e in result.errors)
    assert "Already a client" in reasons and "Unknown time zone" in reasons and "line 2" in reasons
    assert Client.objects.get(phone="79163333333").operator_code == "999"


@pytest.mark.slow
def test_csv_import_of_100000_rows_takes_seconds(transactional_db):
    rows = ["phone,timezone,tag"] + [
        f"79{i:09d},Europe/Moscow,{'vip' if i % 3 else ''}" for i in range(100_000)
    ]
    data = ("\n".join(rows) + "\n").encode()
    started = time.monotonic()
    result = import_clients_csv(data[i : i + 65536] for i in range(0, len(data), 65536))
    elapsed = time.monotonic() - started
    print(f"\nCSV import of 100,000 rows: {elapsed:.2f} s")
    assert result.created == 100_000 and not result.errors
    assert Client.objects.count() == 100_000


# --- API tokens ---------------------------------------------------------------------------


def test_issue_shows_key_once_and_revoke(web, staff):
    url = reverse("dashboard:tokens")
    response = post(web, url, {"name": "CRM sync"}, page=url)
    # POST-redirect-GET: the key is shown by the page the redirect leads to, once.
    assert response.status_code == 302
    assert response["Location"] == url + "#new-token"
    shown = web.get(url)
    key = shown.context["new_key"]
    assert key.startswith("mls_") and key in shown.content.decode()
    assert 'data-copy-from="new-key"' in shown.content.decode()
    assert shown["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(user=staff)
    # A reload shows the token in the list, not its key, and issues nothing.
    again = web.get(url).content.decode()
    assert key not in again and token.prefix in again
    assert ApiToken.objects.filter(user=staff).count() == 1
    api = HttpClient()
    assert api.get("/api/v1/mailings", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    post(web, reverse("dashboard:token_revoke", args=[token.pk]), {}, page=url)
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert api.get("/api/v1/mailings", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401


def test_token_name_errors_shown(web):
    url = reverse("dashboard:tokens")
    response = post(web, url, {"name": "   "}, page=url)
    assert response.context["form"].errors
    assert ApiToken.objects.count() == 0


def test_cannot_revoke_someone_elses_token(web):
    other = get_user_model().objects.create_user("dave", is_staff=True)
    from mailing.tokens import issue_token

    token, _ = issue_token(other, "theirs")
    response = post(web, reverse("dashboard:token_revoke", args=[token.pk]), {})
    assert response.status_code == 404


# --- Time zone ------------------------------------------------------------------------------


def test_times_are_shown_in_the_chosen_zone(web):
    make_clients(1)
    start = timezone.now().replace(hour=10, minute=0, second=0, microsecond=0) + timedelta(days=1)
    mailing = services.create_mailing(start_at=start, end_at=start + timedelta(hours=1), text="t")
    url = reverse("dashboard:mailing_detail", args=[mailing.pk])
    page = web.get(url).content.decode()
    assert "10:00" in page and "UTC" in page
    post(web, reverse("dashboard:set_timezone"), {"timezone": "Asia/Vladivostok", "next": url})
    page = web.get(url).content.decode()
    assert "20:00" in page and "Asia/Vladivostok" in page
    # An unknown zone or a foreign next URL changes nothing harmful.
    response = post(
        web,
        reverse("dashboard:set_timezone"),
        {"timezone": "Nowhere/City", "next": "https://evil.test/"},
    )
    assert response["Location"] == reverse("dashboard:home")
