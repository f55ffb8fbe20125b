"""mailing.rules: one home for the domain's rules, and checks that nobody writes them again."""

from __future__ import annotations

import io
import re
import tokenize
from datetime import time, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from mailing import events, rules, services
from mailing.engine import lifecycle
from mailing.models import Event, Mailing, MailingStatus
from mailing.rules import Action, Reason, SendWindow, StateConflict

ROOT = Path(__file__).resolve().parent.parent
# The product's own code: what must ask mailing.rules rather than repeat it.
PYTHON_DIRS = ("mailing", "dashboard")
TEMPLATE_DIRS = ("templates", "static/js")
NOT_SCANNED = {Path("mailing/rules.py")}

# Numbers that equal a limit's value without being that limit, by the idiom that shows it.
NOT_A_LIMIT = {
    r"\*\s*1000\b|\b1000\s*\*": "seconds to milliseconds",
    r"batch_size=1000\b": "rows per INSERT of a bulk insert",
    r"\b500\s*<=\s*status\b|status(_code)?\s*>=\s*500\b|status=500\b": "an HTTP status",
    r"\b64\s*\*\s*1024\b": "bytes",
    r"_MAX_STRETCHES = 64\b": "a bound of the window arithmetic's search",
    r"len\(incoming\)\s*<=\s*64\b": "the length of a request id",
    r"max_connections: int = 100\b": "the HTTP client's connection pool",
    r"text\[:40\]": "an id clipped for a log line",
    r"\{% block code %\}\d{3}\{% endblock %\}": "the HTTP status of an error page",
}
# Too common as plain numbers to tell apart by reading: small counts, years, HTTP 200.
SMALL = 20
COMMON = {200}


def _python_files() -> list[Path]:
    files = []
    for folder in PYTHON_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in NOT_SCANNED or "migrations" in relative.parts:
                continue
            files.append(path)
    return files


def _template_files() -> list[Path]:
    return [
        path
        for folder in TEMPLATE_DIRS
        for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file() and path.suffix in (".html", ".txt", ".js")
    ]


def _grepped_limits() -> dict[int, list[str]]:
    by_value: dict[int, list[str]] = {}
    for name, value in rules.LIMITS.items():
        is_year = rules.EARLIEST_YEAR <= value <= rules.LATEST_YEAR
        if value >= SMALL and value not in COMMON and not is_year:
            by_value.setdefault(value, []).append(name)
    return by_value


def _without_comments(path: Path) -> str:
    """The file with its comments blanked (line numbers kept): they document, not show."""
    if path.suffix == ".js":
        pattern = r"/\*.*?\*/|//[^\n]*"
    else:
        pattern = r"\{% comment %\}.*?\{% endcomment %\}|\{#.*?#\}"
    blank = lambda match: "\n" * match.group().count("\n")  # noqa: E731
    return re.sub(pattern, blank, path.read_text(), flags=re.S)


def _bare_numbers(path: Path) -> list[tuple[int, int, str]]:
    """(line number, value, line) of every number literal in a Python file."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NUMBER:
            try:
                value = int(token.string.replace("_", ""), 0)
            except ValueError:
                continue  # a float or a complex
            found.append((token.start[0], value, lines[token.start[0] - 1]))
    return found


def test_the_limits_are_found_by_the_scan():
    # The scan below is only as good as what it looks for: the limits the issues name.
    grepped = _grepped_limits()
    for value in (1000, 64, 500):
        assert value in grepped, value
    assert {"TEXT_MAX_LENGTH", "FILTER_MAX_ITEMS", "API_PAGE_MAX"} <= set(grepped[1000])


def test_no_limit_is_a_bare_number_outside_the_rules():
    limits = _grepped_limits()
    offences = []
    for path in _python_files():
        for line_number, value, line in _bare_numbers(path):
            if value in limits and not any(re.search(idiom, line) for idiom in NOT_A_LIMIT):
                offences.append(
                    f"{path.relative_to(ROOT)}:{line_number}: {value} ({', '.join(limits[value])})"
                    f": {line.strip()}"
                )
    for path in _template_files():
        for line_number, line in enumerate(_without_comments(path).splitlines(), 1):
            if any(re.search(idiom, line) for idiom in NOT_A_LIMIT):
                continue
            for match in re.finditer(r"(?<![\w.#-])\d[\d_,]*(?![\w.-])", line):
                value = int(re.sub(r"[_,]", "", match.group()))
                if value in limits:
                    offences.append(
                        f"{path.relative_to(ROOT)}:{line_number}: {value} "
                        f"({', '.join(limits[value])}): {line.strip()}"
                    )
    assert not offences, "limits written as bare numbers; use mailing.rules:\n" + "\n".join(
        offences
    )


def test_every_column_width_of_the_models_is_named():
    source = (ROOT / "mailing/models.py").read_text()
    assert not re.findall(r"max_length=\d", source)


STATUS_LITERAL = re.compile(
    r"""status\s*(==|!=|\bin\b|\bnot in\b)\s*["']|["'][\w ]+["']\s*(==|!=|\bin\b)\s*[\w.]*status"""
)


def test_no_template_compares_a_status_with_a_literal():
    offences = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _template_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if STATUS_LITERAL.search(line)
    ]
    assert not offences, "ask the model (mailing.can.pause, is_active, ...):\n" + "\n".join(
        offences
    )


def test_the_status_literal_check_finds_what_it_must():
    for line in (
        '{% if mailing.status in "scheduled running paused" %}',
        '{% if mailing.status == "running" %}',
        "{% if message.status != 'pending' %}",
    ):
        assert STATUS_LITERAL.search(line), line
    assert not STATUS_LITERAL.search("{% if mailing.can.pause %}")


# --- The rules themselves ---------------------------------------------------------------


def test_each_state_allows_exactly_its_actions():
    expected = {
        "draft": {"edit", "launch", "delete"},
        "scheduled": {"edit", "cancel", "delete"},
        "running": {"edit", "pause", "cancel", "delete"},
        "paused": {"edit", "resume", "cancel", "delete"},
        "finished": {"delete"},
        "cancelled": {"delete"},
        "deleting": set(),
    }
    assert {status: set(actions) for status, actions in rules.ALLOWED_ACTIONS.items()} == expected
    assert set(rules.ALLOWED_ACTIONS) == set(MailingStatus.values)
    assert rules.statuses_allowing(Action.CANCEL) == rules.ACTIVE_STATUSES
    assert rules.statuses_allowing(Action.PAUSE) == {MailingStatus.RUNNING}
    assert rules.statuses_allowing(Action.LAUNCH) == rules.DRAFT_STATUSES
    assert rules.refusal("finished", Action.PAUSE) == "A finished mailing cannot be paused."
    with pytest.raises(StateConflict, match="cannot be resumed"):
        rules.check_allowed("running", Action.RESUME)


def test_status_sets_partition_the_statuses():
    everything = set(MailingStatus.values)
    assert everything == (
        rules.DRAFT_STATUSES | rules.ACTIVE_STATUSES | rules.FINAL_STATUSES | rules.DELETED_STATUSES
    )
    assert not rules.ACTIVE_STATUSES & rules.FINAL_STATUSES
    assert not rules.DRAFT_STATUSES & (rules.ACTIVE_STATUSES | rules.FINAL_STATUSES)
    assert (
        not (rules.DRAFT_STATUSES | rules.ACTIVE_STATUSES | rules.FINAL_STATUSES)
        & rules.DELETED_STATUSES
    )
    assert rules.UNSTARTED_STATUSES | rules.IN_PROGRESS_STATUSES == rules.ACTIVE_STATUSES
    assert rules.SENDING_STATUSES <= rules.IN_PROGRESS_STATUSES
    assert {"failed", "expired", "cancelled"} == rules.UNREACHED_MESSAGE_STATUSES
    assert set(rules.EDITABLE_FIELDS) == everything
    assert rules.EDITABLE_FIELDS["draft"] == set(rules.MAILING_FIELDS)
    assert rules.EDITABLE_FIELDS["scheduled"] == set(rules.MAILING_FIELDS)
    assert rules.EDITABLE_FIELDS["running"] == {"name", "end_at", "rate_limit"}
    assert rules.EDITABLE_FIELDS["finished"] == set()


@pytest.mark.parametrize(
    ("total", "pending", "fanned_out", "expected"),
    [(0, 0, False, 0.0), (0, 0, True, 1.0), (10, 10, True, 0.0), (10, 4, True, 0.6)],
)
def test_progress_one_way(total, pending, fanned_out, expected):
    assert rules.progress(total, pending, fanned_out) == pytest.approx(expected)
    mailing = Mailing(
        total=total, pending=pending, fanned_out_at=timezone.now() if fanned_out else None
    )
    assert mailing.progress == pytest.approx(expected)
    assert mailing.progress_percent == rules.percent(expected)


def test_an_empty_send_window_cannot_be_built():
    with pytest.raises(ValidationError) as caught:
        SendWindow(time(9), time(9))
    assert caught.value.message_dict == {"send_window": [rules.EMPTY_WINDOW]}
    with pytest.raises(ValueError, match="must differ"):  # what the engine's arithmetic sees
        SendWindow(time(9), time(9))
    assert SendWindow(time(22), time(6)).start == time(22)


def test_reasons_are_one_enumeration_with_distinct_words():
    words = [reason.value for reason in Reason]
    assert len(words) == len(set(words))
    assert Reason.CLIENT_DELETED == "client deleted"


def test_the_model_answers_for_its_state():
    mailing = Mailing(status=MailingStatus.PAUSED)
    assert mailing.can == {
        "edit": True,
        "launch": False,
        "pause": False,
        "resume": True,
        "cancel": True,
        "delete": True,
    }
    assert mailing.is_active and not mailing.is_final
    assert mailing.editable_fields == {"name", "end_at", "rate_limit"}
    assert not mailing.is_draft and Mailing(status=MailingStatus.DRAFT).is_draft


def test_a_default_name_is_the_start_of_the_text():
    assert rules.default_name("  \n Sale today!\nSecond line") == "Sale today!"
    long = rules.default_name("x" * 200)
    assert len(long) == rules.DEFAULT_NAME_LENGTH and long.endswith("…")
    assert rules.default_name(" \n ") == "Untitled mailing"


# --- One path to running ----------------------------------------------------------------


def _started_events(mailing: Mailing) -> int:
    return Event.objects.filter(mailing_id=mailing.pk, kind=events.MAILING_STARTED).count()


@pytest.mark.django_db
def test_every_way_a_mailing_starts_records_it_once():
    now = timezone.now()
    at_once = services.create_mailing(start_at=now, end_at=now + timedelta(hours=1), text="Hi")
    assert at_once.status == MailingStatus.RUNNING and _started_events(at_once) == 1

    later = services.create_mailing(
        start_at=now + timedelta(hours=1), end_at=now + timedelta(hours=2), text="Hi"
    )
    assert later.status == MailingStatus.SCHEDULED and _started_events(later) == 0
    services.update_mailing(later, start_at=now - timedelta(minutes=1))
    assert later.status == MailingStatus.RUNNING and _started_events(later) == 1

    by_tick = services.create_mailing(
        start_at=now + timedelta(minutes=5), end_at=now + timedelta(hours=2), text="Hi"
    )
    lifecycle.tick(now + timedelta(minutes=6))
    lifecycle.tick(now + timedelta(minutes=7))
    by_tick.refresh_from_db()
    # (no clients: it has finished by the second tick)
    assert by_tick.status != MailingStatus.SCHEDULED and _started_events(by_tick) == 1
    for mailing in (at_once, later, by_tick):
        kinds = list(
            Event.objects.filter(mailing_id=mailing.pk)
            .order_by("id")
            .values_list("kind", flat=True)
        )
        assert kinds.index(events.MAILING_CREATED) < kinds.index(events.MAILING_STARTED)
