"""The staff UI in a real browser (Debian's Chromium through Playwright), signed in through
the real development OIDC provider process (devtools/oidc, node-oidc-provider).

Each test saves a screenshot of its last page under test-artifacts/.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ChildProcess, free_port, make_clients

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
OIDC_DIR = ROOT / "devtools" / "oidc"
CLIENT_SECRET = "browser-test-secret"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
    pytest.mark.django_db(transaction=True),
]

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _discovery_answers(issuer: str) -> bool:
    try:
        return requests.get(f"{issuer}/.well-known/openid-configuration", timeout=1).ok
    except requests.RequestException:
        return False


def start_oidc_provider(callback: str, deadline: float = 30.0) -> tuple[ChildProcess, str]:
    """The provider process on a free port, once its discovery document answers. Its output
    goes to a file, and readiness is polled over HTTP: every wait here has a deadline."""
    for _attempt in range(3):  # the free port may be taken before node binds it
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        process = ChildProcess(
            [
                "node",
                "server.mjs",
                "--port",
                str(port),
                "--client-id",
                "mailing-ui",
                "--client-secret",
                CLIENT_SECRET,
                "--redirect-uri",
                callback,
                # Sign-out ends the provider's session, then comes back to sign-in.
                "--post-logout-redirect-uri",
                callback.split("/accounts/", 1)[0] + "/sign-in/",
            ],
            cwd=OIDC_DIR,
        )
        end = time.monotonic() + deadline
        while process.poll() is None and time.monotonic() < end:
            if _discovery_answers(issuer):
                return process, issuer
            time.sleep(0.1)
        output = "".join(process.output())
        if process.poll() is None:  # alive but not answering: give up at the deadline
            process.stop()
            pytest.fail(f"the OIDC provider did not answer within {deadline} s:\n{output}")
        process.close()
        if "EADDRINUSE" not in output:
            pytest.fail(f"the OIDC provider exited with {process.returncode}:\n{output}")
    pytest.fail("the OIDC provider found no free port in three attempts")


@pytest.fixture(scope="session")
def oidc_provider(live_server):
    """The development OIDC provider process, registered for this live server's callback."""
    if shutil.which("node") is None or not (OIDC_DIR / "node_modules").exists():
        pytest.fail("node and devtools/oidc/node_modules are needed: run `make install`")
    callback = f"{live_server.url}/accounts/oidc/sso/login/callback/"
    process, issuer = start_oidc_provider(callback)
    with process:
        yield issuer
        process.stop(timeout=10)


@pytest.fixture
def sso(settings, oidc_provider):
    app = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            **settings.SOCIALACCOUNT_PROVIDERS["openid_connect"],
            "APPS": [{**app, "secret": CLIENT_SECRET, "settings": {"server_url": oidc_provider}}],
        }
    }
    return oidc_provider


# Module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it lives, and later tests call asyncio.run() there.
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in the test thread; the ORM calls the tests
    # make between browser steps are ordinary synchronous ones. Only while it lives.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()


def sign_in(page, live_server, username="demo", password="demo-password"):  # noqa: S107
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/mailings/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_role("button", name="Continue with").click()
    # Now on the identity provider's own login form.
    expect(page.get_by_role("heading", name="Development identity provider")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_oidc_round_trip_sign_in_refusal_and_sign_out(page, live_server, sso):
    from playwright.sync_api import expect

    # A provider identity that is not staff gets a clear refusal.
    sign_in(page, live_server, "visitor", "visitor-password")
    expect(page.get_by_role("heading", name="This service is for staff only")).to_be_visible()
    expect(page.get_by_text("visitor@outside.test")).to_be_visible()
    # A wrong password stays on the provider's form.
    page.context.clear_cookies()
    sign_in(page, live_server, "demo", "wrong")
    expect(page.get_by_role("alert")).to_contain_text("wrong password")
    # The demo staff identity comes back to the page it asked for.
    page.context.clear_cookies()
    sign_in(page, live_server)
    expect(page.get_by_role("heading", name="Mailings")).to_be_visible()
    assert page.url.endswith("/mailings/")
    expect(page.get_by_text("Signed in as demo@example.com")).to_be_visible()
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(email="demo@example.com")
    assert user.is_staff
    page.get_by_role("button", name="Sign out").click()
    # Signing out ends the identity provider's session too (RP-initiated logout) ...
    expect(page.get_by_text("Sign out of the identity provider too?")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.url.startswith(f"{live_server.url}/sign-in/")
    page.goto(f"{live_server.url}/clients/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # ... so "Continue" asks for the password again instead of signing straight back in.
    page.get_by_role("button", name="Continue with").click()
    expect(page.get_by_role("heading", name="Development identity provider")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_visible()


def test_a_demoted_user_is_out_at_once_and_stays_out_at_the_next_sign_in(page, live_server, sso):
    """Off-boarding through the real identity provider: the provider still says "staff",
    the app said no (docs/security.md)."""
    from django.contrib.auth import get_user_model
    from playwright.sync_api import expect

    sign_in(page, live_server)
    expect(page.get_by_role("heading", name="Mailings")).to_be_visible()
    user = get_user_model().objects.get(email="demo@example.com")
    user.is_staff = False
    user.save(update_fields=["is_staff"])
    page.goto(f"{live_server.url}/clients/")
    expect(page.get_by_role("heading", name="This service is for staff only")).to_be_visible()
    page.context.clear_cookies()
    sign_in(page, live_server)
    expect(page.get_by_role("heading", name="This service is for staff only")).to_be_visible()
    user.refresh_from_db()
    assert not user.is_staff


def test_a_new_identity_is_never_connected_to_a_superuser(page, live_server, sso):
    from allauth.socialaccount.models import SocialAccount
    from django.contrib.auth import get_user_model
    from playwright.sync_api import expect

    admin = get_user_model().objects.create_superuser("root", email="demo@example.com")
    sign_in(page, live_server)
    expect(page.get_by_role("heading", name="This service is for staff only")).to_be_visible()
    assert not SocialAccount.objects.filter(user=admin).exists()
    page.goto(f"{live_server.url}/mailings/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_draft_check_and_send_with_live_preview_and_watch_it_finish(
    page, live_server, sso, provider, provider_settings, dispatcher_factory, settings
):
    """Write a draft (Enter in a field only saves it), read its segments, check it, find
    that Enter on the check page sends nothing, confirm with the count, watch it finish."""
    from playwright.sync_api import expect

    from mailing.models import Event, Mailing

    settings.LAUNCH_CONFIRM_THRESHOLD = 10  # so the count must be typed
    make_clients(40, operator_code="916", tag="vip")
    make_clients(25, operator_code="926", tag="new")
    dispatcher_factory()
    sign_in(page, live_server)
    page.get_by_role("link", name="New mailing").first.click()
    expect(page.get_by_test_id("preview-count")).to_have_text("65")
    page.get_by_label("Operator codes").select_option(["916"])
    expect(page.get_by_test_id("preview-count")).to_have_text("40")
    text = "Весенняя распродажа: скидка 20% на всё до воскресенья, только в наших магазинах!"
    page.get_by_label("Text").fill(text)
    expect(page.locator("#text-count")).to_contain_text(f"{len(text)} / 1000")
    # Cyrillic is UCS-2: 80 units, two parts of at most 67.
    expect(page.get_by_test_id("segments")).to_contain_text(f"{len(text)} UCS-2 units")
    expect(page.get_by_test_id("segments-parts")).to_have_text("2")
    # Start now: the browser's form shows the staff member's zone (UTC by default).
    from django.utils import timezone

    now = timezone.localtime()
    page.locator("#id_start_at").fill(now.strftime("%Y-%m-%dT%H:%M"))
    page.locator("#id_end_at").fill((now + timezone.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    # Enter in a field of the form saves a draft, nothing more.
    page.get_by_label("Name").fill("Spring sale, VIP")
    page.get_by_label("Name").press("Enter")
    expect(page.get_by_role("heading", name="Check and send: Spring sale, VIP")).to_be_visible()
    mailing = Mailing.objects.get()
    assert mailing.status == "draft"
    expect(page.get_by_test_id("check-reachable")).to_have_text("40")
    expect(page.get_by_test_id("check-charged")).to_contain_text("Will be charged as 80 text")
    expect(page.get_by_test_id("check-starts")).to_have_text("now")
    expect(page.get_by_test_id("check-text")).to_have_text(text)
    # A test to one phone first: the stand-in receives it, the mailing stays a draft.
    page.get_by_label("Send a test to").fill("79160009999")
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_test_id("test-result")).to_contain_text("79160009999: accepted")
    assert provider.recorder.accepted == 1

    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    confirm = page.get_by_label("Type the number of clients to confirm")
    confirm.fill("40")
    confirm.press("Enter")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
    assert posts == [], posts  # Enter submitted nothing
    mailing.refresh_from_db()
    assert mailing.status == "draft"

    page.get_by_role("button", name="Send to 40 clients").click()
    expect(page.get_by_text("“Spring sale, VIP” launched to 40 clients.")).to_be_visible()
    assert Event.objects.filter(mailing_id=mailing.pk, kind="mailing.launched").count() == 1
    # The progress partial refreshes until every message is settled.
    expect(page.get_by_test_id("count-total")).to_have_text("40", timeout=20_000)
    expect(page.get_by_test_id("count-sent")).to_have_text("40", timeout=20_000)
    expect(page.get_by_test_id("count-pending")).to_have_text("0")
    expect(page.get_by_test_id("status")).to_have_text("Finished", timeout=20_000)


def test_pause_and_resume(page, live_server, sso):
    from playwright.sync_api import expect

    from mailing import services

    make_clients(5)
    from django.utils import timezone

    mailing = services.create_mailing(
        start_at=timezone.now(), end_at=timezone.now() + timezone.timedelta(hours=1), text="Hi"
    )
    sign_in(page, live_server)
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm asks first
    page.goto(f"{live_server.url}/mailings/{mailing.pk}/")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_text(f"Mailing {mailing.pk} paused.")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_text("Paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_text(f"Mailing {mailing.pk} resumed.")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_text("Running")
    mailing.refresh_from_db()
    assert mailing.status == "running"


def test_csv_import_previews_then_imports_a_semicolon_file(
    page, live_server, sso, tmp_path, monkeypatch
):
    from django_q.conf import Conf
    from playwright.sync_api import expect

    # q2's sync mode: each job runs in the server's thread when its transaction commits.
    monkeypatch.setattr(Conf, "SYNC", True)
    csv_file = tmp_path / "clients.csv"
    csv_file.write_bytes(
        (
            "phone;timezone;tag\r\n"
            "+7 916 111-00-01;Europe/Moscow;постоянный\r\n"
            "not-a-phone;Europe/Moscow;vip\r\n"
            "8 (916) 111-00-02;Asia/Vladivostok;\r\n"
        ).encode("cp1251")
    )
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/clients/")
    page.get_by_role("link", name="Import CSV").click()
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_role("button", name="Check the file").click()
    expect(page.get_by_test_id("import-state")).to_have_text("Check before importing")
    expect(page.get_by_test_id("import-counts")).to_contain_text("2 new clients")
    preview = page.get_by_role("table", name="The first rows")
    expect(preview).to_contain_text("постоянный")
    expect(preview.get_by_role("row").nth(2)).to_contain_text("Phone must be 11 digits")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_test_id("created")).to_have_text("2")
    expect(page.get_by_test_id("invalid")).to_have_text("1")
    row = page.get_by_role("table", name="Invalid rows").get_by_role("row").nth(1)
    expect(row).to_contain_text("3")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    # The clients page: newest first, counted, found by a part of the phone.
    page.goto(f"{live_server.url}/clients/?q=8+(916)+111-00-02")
    expect(page.get_by_test_id("client-count")).to_contain_text("1 client")
    page.goto(f"{live_server.url}/clients/")
    expect(page.get_by_test_id("client-count")).to_contain_text("2 clients")
    # The header box ticks every row box (progressive enhancement of the bulk form).
    page.get_by_label("Select every row shown").check()
    assert page.locator('input[name="ids"]:checked').count() == 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1


def test_phone_width_is_readable(page, live_server, sso):
    from playwright.sync_api import expect

    make_clients(3)
    page.set_viewport_size({"width": 360, "height": 780})
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    # Nothing wider than the screen but the scrollable tables.
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 360 + 1, overflow
