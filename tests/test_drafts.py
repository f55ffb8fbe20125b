"""Names, drafts and their launch, and SMS segments: the services, the JSON API, the engine."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from mailing import rules, segments, services
from mailing.engine import lifecycle
from mailing.models import Event, Mailing, MailingStatus, Message
from tests.conftest import make_clients, wait_for
from tests.test_api import Api, api, api_key, error_locs, future, iso, mailing_body, staff_user

__all__ = ["api", "api_key", "staff_user"]  # fixtures, imported to be used here

pytestmark = pytest.mark.django_db


# --- Names ----------------------------------------------------------------------------


def test_a_name_is_kept_trimmed_and_a_missing_one_is_made_from_the_text(api: Api) -> None:
    named = api.post("/mailings", mailing_body(name="  Spring sale  ")).json()
    assert named["name"] == "Spring sale"
    unnamed = api.post("/mailings", mailing_body(text="\n  Black Friday: -50%\nline 2")).json()
    assert unnamed["name"] == "Black Friday: -50%"
    renamed = api.patch(f"/mailings/{named['id']}", {"name": "Spring sale, Moscow"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Spring sale, Moscow"


@pytest.mark.parametrize("name", ["", "   ", "x" * 121, "two\nlines", "nul\x00"])
def test_a_bad_name_is_a_422_and_nothing_is_saved(api: Api, name: str) -> None:
    assert ["body", "name"] in error_locs(api.post("/mailings", mailing_body(name=name)))
    assert not Mailing.objects.exists()


def test_a_name_cannot_be_patched_to_nothing(api: Api) -> None:
    mailing = api.post("/mailings", mailing_body(name="Kept")).json()
    assert ["body", "name"] in error_locs(api.patch(f"/mailings/{mailing['id']}", {"name": " "}))
    assert ["body", "name"] in error_locs(api.patch(f"/mailings/{mailing['id']}", {"name": None}))
    assert Mailing.objects.get().name == "Kept"


# --- Drafts ---------------------------------------------------------------------------


def test_a_draft_inside_its_period_waits_and_without_draft_it_starts(api: Api) -> None:
    make_clients(3)
    draft = api.post("/mailings", mailing_body(start_at=iso(future(-1)), draft=True))
    assert draft.status_code == 201 and draft.json()["status"] == "draft"
    started = api.post("/mailings", mailing_body(start_at=iso(future(-1))))
    assert started.json()["status"] == "running"  # the brief's rule, unchanged
    lifecycle.tick(timezone.now() + timedelta(hours=2))
    mailing = Mailing.objects.get(pk=draft.json()["id"])
    assert mailing.status == MailingStatus.DRAFT and mailing.fanned_out_at is None
    assert not Message.objects.filter(mailing=mailing).exists()
    assert Message.objects.filter(mailing_id=started.json()["id"]).count() == 3


def test_a_draft_is_edited_in_full_and_deleted(api: Api) -> None:
    draft = api.post("/mailings", mailing_body(start_at=iso(future(-1)), draft=True)).json()
    changed = api.patch(
        f"/mailings/{draft['id']}",
        {
            "name": "Renamed",
            "text": "Новый текст",
            "start_at": iso(future(-2)),
            "filter": {"tags": ["vip"]},
            "send_window": {"start": "09:00", "end": "21:00"},
        },
    )
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert body["status"] == "draft"  # moving its start to the past does not start it
    assert (body["name"], body["text"], body["filter"]["tags"]) == (
        "Renamed",
        "Новый текст",
        ["vip"],
    )
    assert api.delete(f"/mailings/{draft['id']}").status_code == 202
    assert api.get(f"/mailings/{draft['id']}").status_code == 404
    assert api.post(f"/mailings/{draft['id']}/launch").status_code == 404


def test_launch_starts_a_draft_as_if_created_now_and_twice_is_a_409(api: Api) -> None:
    make_clients(2)
    now_draft = api.post("/mailings", mailing_body(start_at=iso(future(-1)), draft=True)).json()
    later_draft = api.post("/mailings", mailing_body(start_at=iso(future(1)), draft=True)).json()

    launched = api.post(f"/mailings/{now_draft['id']}/launch")
    assert launched.status_code == 200 and launched.json()["status"] == "running"
    again = api.post(f"/mailings/{now_draft['id']}/launch")
    assert again.status_code == 409
    assert again.json()["detail"] == "A running mailing cannot be launched."

    assert api.post(f"/mailings/{later_draft['id']}/launch").json()["status"] == "scheduled"
    kinds = list(
        Event.objects.filter(mailing_id=now_draft["id"]).values_list("kind", "actor_token")
    )
    assert kinds[:3] == [
        ("mailing.created", "tests"),
        ("mailing.launched", "tests"),
        ("mailing.started", ""),
    ]
    assert api.post("/mailings/999999/launch").status_code == 404


def test_a_draft_whose_end_has_passed_cannot_be_launched(api: Api) -> None:
    draft = api.post("/mailings", mailing_body(draft=True)).json()
    Mailing.objects.filter(pk=draft["id"]).update(
        start_at=future(-3), end_at=timezone.now() - timedelta(seconds=1)
    )
    response = api.post(f"/mailings/{draft['id']}/launch")
    assert response.status_code == 409
    assert "end has passed" in response.json()["detail"]
    assert Mailing.objects.get().status == MailingStatus.DRAFT


def test_launching_four_times_starts_it_once() -> None:
    draft = services.create_mailing(start_at=future(-1), end_at=future(5), text="Once", draft=True)
    results: list[str] = []

    def launch() -> None:
        try:
            services.launch_mailing(Mailing.objects.get(pk=draft.pk))
            results.append("launched")
        except services.StateConflict:
            results.append("conflict")

    for _ in range(4):
        launch()
    assert sorted(results) == ["conflict"] * 3 + ["launched"]
    assert Event.objects.filter(mailing_id=draft.pk, kind="mailing.started").count() == 1


# --- SMS segments ---------------------------------------------------------------------

LATIN, CYRILLIC, EMOJI = "a", "Я", "\N{GRINNING FACE}"


@pytest.mark.parametrize(
    ("text", "encoding", "characters", "parts"),
    [
        (LATIN * 160, "GSM-7", 160, 1),
        (LATIN * 161, "GSM-7", 161, 2),
        (LATIN * 306, "GSM-7", 306, 2),
        (LATIN * 307, "GSM-7", 307, 3),
        (LATIN * 159 + "€", "GSM-7", 161, 2),  # an extension character takes two septets
        ("[" * 80, "GSM-7", 160, 1),
        ("[" * 81, "GSM-7", 162, 2),
        (CYRILLIC * 70, "UCS-2", 70, 1),
        (CYRILLIC * 71, "UCS-2", 71, 2),
        (CYRILLIC * 134, "UCS-2", 134, 2),
        (CYRILLIC * 135, "UCS-2", 135, 3),
        (LATIN * 68 + EMOJI, "UCS-2", 70, 1),  # an emoji takes two UTF-16 units
        (LATIN * 69 + EMOJI, "UCS-2", 71, 2),
        ("{}" * 76 + "a", "GSM-7", 305, 2),  # 152 + 153: no escape pair is split
        ("{}" * 76 + "{", "GSM-7", 306, 3),  # 152, 152, 2
    ],
)
def test_segments(text: str, encoding: str, characters: int, parts: int) -> None:
    counted = segments.count(text)
    assert (counted.encoding, counted.characters, counted.parts) == (encoding, characters, parts)


def test_the_characters_that_force_ucs2_are_named_once_in_order() -> None:
    dash = "\N{EN DASH}"
    text = f"Sale {dash} today \N{CHECK MARK} {dash} now"
    assert segments.count(text).forcing_ucs2 == (dash, "\N{CHECK MARK}")
    assert segments.count("Plain [GSM] text €5").forcing_ucs2 == ()


def test_the_api_carries_segments_and_the_preview_counts_a_text(api: Api) -> None:
    body = api.post("/mailings", mailing_body(text=CYRILLIC * 200)).json()
    assert body["segments"] == {"encoding": "UCS-2", "characters": 200, "parts": 3}
    preview = api.post("/mailings/preview", {"text": "Hello {name}"}).json()
    assert preview["segments"] == {"encoding": "GSM-7", "characters": 14, "parts": 1}
    assert ["body", "text"] in error_locs(api.post("/mailings/preview", {"text": "x" * 1001}))


# --- The engine leaves drafts alone --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_draft_sends_nothing_while_a_dispatcher_runs(provider, dispatcher_factory) -> None:
    make_clients(5)
    draft = services.create_mailing(
        start_at=timezone.now() - timedelta(minutes=1),
        end_at=timezone.now() + timedelta(minutes=5),
        text="Not yet",
        draft=True,
    )
    ticks: list[float] = []
    three_seconds_of_ticks = threading.Event()

    def on_tick(now: Any, status: Any) -> bool:
        ticks.append(time.monotonic())
        if len(ticks) >= 10 and ticks[-1] - ticks[0] >= 3.0:
            three_seconds_of_ticks.set()
        return True

    worker = dispatcher_factory(on_tick=on_tick)
    assert three_seconds_of_ticks.wait(timeout=30), "the dispatcher did not tick for 3 s"
    assert provider.recorder.requests == 0
    draft.refresh_from_db()
    assert draft.status == MailingStatus.DRAFT and draft.fanned_out_at is None
    assert not Message.objects.filter(mailing=draft).exists()

    services.launch_mailing(draft)  # the same dispatcher now sends it
    wait_for(lambda: provider.recorder.unique_accepted == 5, 15)
    worker.stop()


# --- Test send --------------------------------------------------------------------------


def test_a_test_send_reaches_the_stand_in_with_its_own_msg_id(
    api: Api, provider_settings, provider
) -> None:
    make_clients(3)
    mailing = api.post("/mailings", mailing_body(text="Проверка", draft=True)).json()
    started = time.monotonic()
    response = api.post(f"/mailings/{mailing['id']}/test", {"phone": 79161112233})
    assert time.monotonic() - started < rules.TEST_SEND_SECONDS
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["outcome"] == "accepted" and body["phone"] == "79161112233"
    assert body["msg_id"] > rules.TEST_MSG_ID_BASE
    assert provider.recorder.count_of(body["msg_id"]) == 1
    assert provider.recorder.accepted == 1
    # Outside the statistics, on the timeline with its outcome and who sent it.
    after = api.get(f"/mailings/{mailing['id']}").json()
    assert after["status"] == "draft" and after["stats"]["total"] == 0
    event = Event.objects.get(mailing_id=mailing["id"], kind="mailing.test_sent")
    assert event.data["outcome"] == "accepted" and event.data["msg_id"] == body["msg_id"]
    assert event.actor_token == "tests"


def test_test_sends_are_limited_per_staff_member_and_check_the_phone(
    api: Api, provider_settings, provider
) -> None:
    mailing = api.post("/mailings", mailing_body(draft=True)).json()
    url = f"/mailings/{mailing['id']}/test"
    assert ["body", "phone"] in error_locs(api.post(url, {"phone": "8916"}))
    assert ["body", "phone"] in error_locs(api.post(url, {}))
    for _ in range(rules.TEST_SENDS_PER_HOUR):
        assert api.post(url, {"phone": "79161112233"}).status_code == 200
    refused = api.post(url, {"phone": "79161112233"})
    assert refused.status_code == 429 and "an hour" in refused.json()["detail"]
    assert provider.recorder.accepted == rules.TEST_SENDS_PER_HOUR
    assert api.post("/mailings/999999/test", {"phone": "79161112233"}).status_code == 404


def test_a_provider_that_does_not_answer_is_an_outcome_within_the_bound(api: Api, settings) -> None:
    from tests.conftest import free_port

    settings.PROBE_URL = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens
    mailing = api.post("/mailings", mailing_body(draft=True)).json()
    response = api.post(f"/mailings/{mailing['id']}/test", {"phone": "79161112233"})
    assert response.status_code == 200 and response.json()["outcome"] == "retry"


# --- Clone ------------------------------------------------------------------------------


def test_clone_makes_a_draft_copy_and_an_ended_period_moves_to_now(api: Api) -> None:
    source = api.post(
        "/mailings",
        mailing_body(
            name="N" * 120,
            filter={"operator_codes": ["916"], "tags": ["vip"]},
            send_window={"start": "09:00", "end": "21:00"},
        ),
    ).json()
    copy = api.post(f"/mailings/{source['id']}/clone")
    assert copy.status_code == 201
    body = copy.json()
    assert body["status"] == "draft" and body["id"] != source["id"]
    assert body["name"] == "N" * 113 + " (copy)" and len(body["name"]) == 120
    for field in ("text", "filter", "send_window", "start_at", "end_at"):
        assert body[field] == source[field], field
    assert Event.objects.filter(mailing_id=source["id"], kind="mailing.cloned").get().data == {
        "copy_id": body["id"]
    }
    Mailing.objects.filter(pk=source["id"]).update(
        start_at=future(-5), end_at=future(-3), status=MailingStatus.FINISHED
    )
    moved = api.post(f"/mailings/{source['id']}/clone").json()
    assert moved["status"] == "draft"
    length = datetime.fromisoformat(moved["end_at"]) - datetime.fromisoformat(moved["start_at"])
    assert length == timedelta(hours=2)
    assert datetime.fromisoformat(moved["end_at"]) > timezone.now()
    assert api.post("/mailings/999999/clone").status_code == 404
