"""The domain's rules, each written once and asked everywhere.

Limits, the statuses and what each one allows (actions, editable fields), progress, and
the reasons a message ends without being sent. Models, services, the engine, the API
schemas, forms, views and templates read them from here; ``tests/test_rules.py`` fails
when a limit is written as a bare number elsewhere or a template compares a status with a
literal. The ``Mailing`` model answers the same questions for one mailing
(``mailing.can.pause``, ``mailing.editable_fields``, ``mailing.progress``), in the manner
of Healthchecks' ``Check.get_status()``.

This module imports nothing of the project, so every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from enum import StrEnum
from functools import lru_cache
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.db import models

# --- Limits ---------------------------------------------------------------------------

PHONE_LENGTH = 11
PHONE_REGEX = rf"^7[0-9]{{{PHONE_LENGTH - 1}}}$"
OPERATOR_CODE_LENGTH = 3
OPERATOR_CODE_REGEX = rf"^[0-9]{{{OPERATOR_CODE_LENGTH}}}$"
TEXT_MAX_LENGTH = 1000
NAME_MAX_LENGTH = 120
# A default name (when the API caller gives none) takes this much of the text's first line.
DEFAULT_NAME_LENGTH = 48
TAG_MAX_LENGTH = 64
TIMEZONE_MAX_LENGTH = 64
# Operator codes, or tags, in one mailing's filter.
FILTER_MAX_ITEMS = 1000
# A message's last error, an attempt event's detail, the credentials error kept for the UI.
ERROR_MAX_LENGTH = 500
TOKEN_NAME_MAX_LENGTH = 100
# An API token lives this many days at most (its owner picks 1 to this when issuing it).
TOKEN_MAX_DAYS = 365
# The staff member's name kept on each event they caused (an e-mail address at most).
ACTOR_NAME_MAX_LENGTH = 254
# Date-times far from now are refused before they reach the database or the window
# arithmetic (9999-12-31 with a negative offset does not even fit a datetime in UTC).
EARLIEST_YEAR = 2000
LATEST_YEAR = 2999
# Background deletes (a deleted mailing's messages, events past their retention): rows per
# statement, each in its own short transaction, and how long one task runs before it hands
# the rest to a fresh task (well inside q2's task timeout).
DELETE_BATCH_SIZE = 10_000
DELETE_TASK_SECONDS = 60.0
# Lines of one CSV import, blank ones included (its bytes: the CLIENT_IMPORT_MAX_BYTES setting).
IMPORT_MAX_ROWS = 2_000_000
# The first rows of an import shown before anything is written, and the errors on its page
# (all of them are in its downloadable CSV).
IMPORT_PREVIEW_ROWS = 10
IMPORT_ERRORS_SHOWN = 100
# A cell of an invalid row kept for its error (longer ones are cut), an uploaded file's name.
IMPORT_CELL_MAX_LENGTH = 64
FILENAME_MAX_LENGTH = 255

# SMS parts: 160 GSM-7 septets or 70 UCS-2 units in one message; a longer text is sent in
# parts of 153 or 67 (the rest of each part holds the header that joins them).
GSM_SINGLE_PART = 160
GSM_MULTI_PART = 153
UCS2_SINGLE_PART = 70
UCS2_MULTI_PART = 67

# Test sends: per staff member per hour, and the bound on the provider call.
TEST_SENDS_PER_HOUR = 10
TEST_SEND_SECONDS = 5
# A test send's msgId is this plus its event's id: far above any message id (a sequence
# from 1), inside the int64 the send API takes.
TEST_MSG_ID_BASE = 9 * 10**18

# Pages and samples.
UI_PAGE_SIZE = 25
# What ?per_page= may ask of any staff table.
UI_PAGE_MAX = 100
# A row id in a form (a bigint has 19 digits at most).
ID_MAX_DIGITS = 18
API_PAGE_SIZE = 50
API_PAGE_MAX = 1000
# Any offset past the end just gives an empty page; the bound keeps it inside int64.
API_MAX_OFFSET = 10**12
TIMELINE_LENGTH = 200
RECENT_MAILINGS = 10
FAILURE_REASONS_SHOWN = 5
FAILURE_REASONS_IN_REPORT = 3
# The latest failures sampled for the common reasons (cheap on millions of messages).
FAILURE_SAMPLE = 10_000

# Fan-out: the first chunk of a mailing is small, so its first messages exist at once; a
# dispatcher's tick fans out for at most this long before it claims and sends again.
FANOUT_FIRST_CHUNK = 1000
FANOUT_SLICE_SECONDS = 0.2
# The send health a dispatcher reports covers its calls of the last this many seconds.
SEND_HEALTH_WINDOW_SECONDS = 60.0

# Guard rails per mailing: its own send-rate limit (messages/s, beside SEND_RATE_LIMIT),
# and the automatic pause when too many of its last attempts failed for good.
MAILING_RATE_LIMIT_MAX = 10_000
# The longest run of recent attempts a mailing keeps (the most MAILING_FAILURE_PAUSE_ATTEMPTS
# may be).
RECENT_ATTEMPTS_MAX = 1000

# Widths of bookkeeping columns.
STATUS_MAX_LENGTH = 16
EVENT_KIND_MAX_LENGTH = 40
WORKER_ID_MAX_LENGTH = 64
TOKEN_PREFIX_MAX_LENGTH = 16
KEY_HASH_LENGTH = 64  # a SHA-256 in hex

# Every limit by name: what tests/test_rules.py looks for outside this module.
LIMITS: dict[str, int] = {
    name: value
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
}


# --- Statuses -------------------------------------------------------------------------


class MailingStatus(models.TextChoices):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    # Deleted by staff: gone from every list and lookup at once, never sent for again; the
    # background purge removes its messages in batches, then the mailing itself.
    DELETING = "deleting"


class MessageStatus(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class ImportStatus(models.TextChoices):
    """A CSV import: checked in the background, confirmed by staff, imported, done."""

    CHECKING = "checking"
    CHECKED = "checked"
    IMPORTING = "importing"
    DONE = "done"
    FAILED = "failed"


# An import whose job is still at work (its page polls).
IMPORT_WORKING_STATUSES = frozenset({ImportStatus.CHECKING, ImportStatus.IMPORTING})


# Written, not launched: the engine ignores it whatever its period; nothing is sent.
DRAFT_STATUSES = frozenset({MailingStatus.DRAFT})
# Launched, not started yet: nothing has been fanned out or sent.
UNSTARTED_STATUSES = frozenset({MailingStatus.SCHEDULED})
# Started and not over: fanned out (or about to be), sending or paused.
IN_PROGRESS_STATUSES = frozenset({MailingStatus.RUNNING, MailingStatus.PAUSED})
# Messages are claimed and sent only for these.
SENDING_STATUSES = frozenset({MailingStatus.RUNNING})
# Still to happen or happening: the engine has work, the UI keeps refreshing.
ACTIVE_STATUSES = UNSTARTED_STATUSES | IN_PROGRESS_STATUSES
FINAL_STATUSES = frozenset({MailingStatus.FINISHED, MailingStatus.CANCELLED})
# Deleted: asked by the selectors (every list and lookup leaves these out) and the purge.
DELETED_STATUSES = frozenset({MailingStatus.DELETING})

FINAL_MESSAGE_STATUSES = frozenset(MessageStatus) - {MessageStatus.PENDING}
# A message in one of these did not reach its client.
UNREACHED_MESSAGE_STATUSES = FINAL_MESSAGE_STATUSES - {MessageStatus.SENT}

# The per-status counter columns of Mailing, named after the statuses they count.
COUNTER_FIELDS = tuple(status.value for status in MessageStatus)


# --- What each state allows ---------------------------------------------------------


class Action(StrEnum):
    """What staff can do to a mailing; the value is what the UI and the logs call it."""

    EDIT = "edit"
    LAUNCH = "launch"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    DELETE = "delete"


# "A finished mailing cannot be paused."
ACTION_DONE: dict[Action, str] = {
    Action.EDIT: "edited",
    Action.LAUNCH: "launched",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.CANCEL: "cancelled",
    Action.DELETE: "deleted",
}

ALLOWED_ACTIONS: dict[str, frozenset[Action]] = {
    MailingStatus.DRAFT: frozenset({Action.EDIT, Action.LAUNCH, Action.DELETE}),
    MailingStatus.SCHEDULED: frozenset({Action.EDIT, Action.CANCEL, Action.DELETE}),
    MailingStatus.RUNNING: frozenset({Action.EDIT, Action.PAUSE, Action.CANCEL, Action.DELETE}),
    MailingStatus.PAUSED: frozenset({Action.EDIT, Action.RESUME, Action.CANCEL, Action.DELETE}),
    MailingStatus.FINISHED: frozenset({Action.DELETE}),
    MailingStatus.CANCELLED: frozenset({Action.DELETE}),
    MailingStatus.DELETING: frozenset(),
}

# The status each state-changing action leads to.
ACTION_RESULT: dict[Action, str] = {
    # Launched, it is scheduled; the one path to running starts it if its start has come.
    Action.LAUNCH: MailingStatus.SCHEDULED,
    Action.PAUSE: MailingStatus.PAUSED,
    Action.RESUME: MailingStatus.RUNNING,
    Action.CANCEL: MailingStatus.CANCELLED,
    Action.DELETE: MailingStatus.DELETING,
}

# The fields of a mailing, as services name them, with the words people read.
MAILING_FIELDS: dict[str, str] = {
    "name": "name",
    "start_at": "start",
    "end_at": "end",
    "text": "text",
    "operator_codes": "operator codes",
    "tags": "tags",
    "send_window": "send window",
    "rate_limit": "send rate",
}

# Once a mailing has started only its name, end (extend or shorten it) and send rate may
# change.
EDITABLE_FIELDS: dict[str, frozenset[str]] = {
    MailingStatus.DRAFT: frozenset(MAILING_FIELDS),
    MailingStatus.SCHEDULED: frozenset(MAILING_FIELDS),
    MailingStatus.RUNNING: frozenset({"name", "end_at", "rate_limit"}),
    MailingStatus.PAUSED: frozenset({"name", "end_at", "rate_limit"}),
    MailingStatus.FINISHED: frozenset(),
    MailingStatus.CANCELLED: frozenset(),
    MailingStatus.DELETING: frozenset(),
}


class StateConflict(Exception):
    """The operation is not allowed in the object's current state (HTTP 409)."""


class TooManyRequests(Exception):
    """The staff member used up an allowance (HTTP 429)."""


def allows(status: str, action: Action) -> bool:
    return action in ALLOWED_ACTIONS[status]


def statuses_allowing(action: Action) -> frozenset[str]:
    """The states an action may start from (the condition of its conditional UPDATE)."""
    return frozenset(status for status, actions in ALLOWED_ACTIONS.items() if action in actions)


def refusal(status: str, action: Action) -> str:
    """Why the action is refused in this state (the text of its 409)."""
    return f"A {status} mailing cannot be {ACTION_DONE[action]}."


def check_allowed(status: str, action: Action) -> None:
    if not allows(status, action):
        raise StateConflict(refusal(status, action))


def frozen_fields(status: str, changed: set[str]) -> list[str]:
    """The changed fields this state does not let change, sorted."""
    return sorted(changed - EDITABLE_FIELDS[status])


# --- Progress -------------------------------------------------------------------------


def progress(total: int, pending: int, fanned_out: bool) -> float:
    """The share of a mailing's messages no longer pending, 0 to 1.

    Nothing is done before the audience exists; an empty audience is all done.
    """
    if total:
        return (total - pending) / total
    return 1.0 if fanned_out else 0.0


def percent(share: float) -> float:
    """A share of 0 to 1 as a percentage with one decimal."""
    return round(share * 100, 1)


# --- Why a message ends without being sent ------------------------------------------


class Reason(StrEnum):
    """The reasons the service itself gives a message (its ``last_error`` and the
    ``reason`` of its event); the provider's own answers are recorded as it gave them."""

    CLIENT_DELETED = "client deleted"
    MAILING_CANCELLED = "mailing cancelled"
    MAILING_ENDED = "mailing ended before it was sent"
    WINDOW_NEVER_OPENS = "send window does not open before the mailing ends"
    UNKNOWN_TIMEZONE = "unknown client time zone"
    CREDENTIALS_REFUSED = "send API refused our credentials"
    OPTED_OUT = "the phone opted out"


# --- Guard rails per mailing ----------------------------------------------------------

RATE_LIMIT_RANGE = (
    f"The send rate must be more than 0 and at most {MAILING_RATE_LIMIT_MAX} per second."
)
# How each attempt of a mailing is remembered in its run of recent attempts.
ATTEMPT_SENT = "s"
ATTEMPT_FAILED = "f"


def rate_limit_error(rate: object) -> str | None:
    """Why a mailing's send rate (messages per second; None: no limit of its own) is not
    one, or None."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        return "The send rate must be a number of messages per second."
    if not 0 < rate <= MAILING_RATE_LIMIT_MAX:
        return RATE_LIMIT_RANGE
    return None


def recent_attempts(previous: str, new: str, keep: int) -> str:
    """The run of a mailing's last ``keep`` attempts (oldest first) after ``new`` ones."""
    if keep <= 0:
        return ""
    return (previous + new)[-keep:]


def failure_pause_reason(recent: str, attempts: int, threshold: float) -> str | None:
    """Why a mailing must pause, given its recent attempts: once it has made ``attempts``
    of them (0: never), more than ``threshold`` of those failed for good. None: it need not."""
    if attempts <= 0 or len(recent) < attempts:
        return None
    failed = recent[-attempts:].count(ATTEMPT_FAILED)
    if failed / attempts <= threshold:
        return None
    return (
        f"Paused automatically: {failed} of its last {attempts} attempts failed for good "
        f"(more than {threshold:.0%}). Check the text and the audience, then resume it."
    )


# --- Launching a draft --------------------------------------------------------------

DRAFT_ENDED = "The draft's end has passed; move its end before launching it."


COPY_SUFFIX = " (copy)"
RESEND_SUFFIX = " (resend)"


def copy_name(name: str, suffix: str = COPY_SUFFIX) -> str:
    """The name of a clone (or a resend): the source's, marked, within the name's limit."""
    return name[: NAME_MAX_LENGTH - len(suffix)].rstrip() + suffix


def needs_typed_confirmation(audience: int, threshold: int) -> bool:
    """Above the threshold (settings.LAUNCH_CONFIRM_THRESHOLD) staff type the count."""
    return audience > threshold


def default_name(text: str) -> str:
    """The name of a mailing created without one: the start of its text's first line."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not line:
        return "Untitled mailing"
    if len(line) <= DEFAULT_NAME_LENGTH:
        return line
    return line[: DEFAULT_NAME_LENGTH - 1].rstrip() + "…"


# --- Values ---------------------------------------------------------------------------


class EmptySendWindow(ValidationError, ValueError):
    """A send window whose start equals its end: a field error at the boundaries (form,
    API: a ValidationError) and a ValueError to the window arithmetic of the engine."""


EMPTY_WINDOW = "The window's start and end must differ."


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Send only while the client's local clock reads [start, end); start > end crosses
    midnight. The one place that refuses an empty window: it cannot be built."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.replace(tzinfo=None) == self.end.replace(tzinfo=None):
            raise EmptySendWindow({"send_window": [EMPTY_WINDOW]})


@lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    """The IANA zone names a client (or a staff member) may have."""
    return frozenset(available_timezones())


def operator_code_of(phone: str) -> str:
    """The operator code implied by a phone number: the digits after the leading 7
    (79161234567 -> 916)."""
    return phone[1 : 1 + OPERATOR_CODE_LENGTH]
