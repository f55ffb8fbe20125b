"""Clients, mailings and their messages: the message table is also the sending queue."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length
from django.utils import timezone

from mailing import rules
from mailing.rules import (
    COUNTER_FIELDS,
    OPERATOR_CODE_REGEX,
    PHONE_REGEX,
    Action,
    MailingStatus,
    MessageStatus,
    SendWindow,
)

models.TextField.register_lookup(Length)

__all__ = [
    "COUNTER_FIELDS",
    "OPERATOR_CODE_REGEX",
    "PHONE_REGEX",
    "ApiToken",
    "Client",
    "ClientImport",
    "ClientImportError",
    "DispatcherSlot",
    "Event",
    "Mailing",
    "MailingStatus",
    "Message",
    "MessageStatus",
    "OptOut",
    "ProviderState",
    "ReportRun",
]


class Client(models.Model):
    phone = models.CharField(max_length=rules.PHONE_LENGTH, unique=True)
    operator_code = models.CharField(max_length=rules.OPERATOR_CODE_LENGTH)
    tag = models.CharField(max_length=rules.TAG_MAX_LENGTH, blank=True, default="")
    timezone = models.CharField(max_length=rules.TIMEZONE_MAX_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(phone__regex=PHONE_REGEX), name="client_phone_format"
            ),
            models.CheckConstraint(
                condition=Q(operator_code__regex=OPERATOR_CODE_REGEX),
                name="client_operator_code_format",
            ),
        ]
        indexes = [
            # Fan-out selects by (operator_code, tag); tag alone serves the tag-only filter.
            models.Index(fields=["operator_code", "tag"], name="client_code_tag_idx"),
            models.Index(fields=["tag"], name="client_tag_idx"),
        ]

    def __str__(self) -> str:
        return self.phone


class OptOut(models.Model):
    """A phone that asked not to be texted: kept by phone, so it outlives its client (delete
    the client, create it again with the same phone, and it is still out)."""

    phone = models.CharField(max_length=rules.PHONE_LENGTH, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(phone__regex=PHONE_REGEX), name="optout_phone_format"
            )
        ]

    def __str__(self) -> str:
        return self.phone


class Mailing(models.Model):
    name = models.CharField(max_length=rules.NAME_MAX_LENGTH)
    start_at = models.DateTimeField()
    end_at = models.DateTimeField()
    text = models.TextField()
    # A resend's audience is the clients whose messages in this mailing (its source) ended
    # in one of these statuses, not its filter (a plain id: the source may be deleted).
    resend_of = models.BigIntegerField(null=True, blank=True)
    resend_statuses = models.JSONField(default=list, blank=True)
    operator_codes = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    window_start = models.TimeField(null=True, blank=True)
    window_end = models.TimeField(null=True, blank=True)
    status = models.CharField(
        max_length=rules.STATUS_MAX_LENGTH,
        choices=MailingStatus.choices,
        default=MailingStatus.SCHEDULED,
    )
    # Fan-out runs in chunks of clients in id order (mailing/engine/fanout.py): the cursor is
    # the last client id done, moved by a conditional UPDATE in each chunk's transaction, so
    # a chunk counts once whoever runs it and a worker that dies loses only its open chunk.
    # ``fanout_started_at`` is the lease of the dispatcher running a slice of chunks (NULL
    # between slices), so two dispatchers do not work on one chunk at once.
    fanout_cursor = models.BigIntegerField(default=0, db_default=0)
    fanout_expired = models.PositiveBigIntegerField(default=0, db_default=0)  # born expired
    fanout_started_at = models.DateTimeField(null=True, blank=True)
    fanned_out_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Guard rails (mailing/rules.py): its own send rate in messages/s (null: only the global
    # SEND_RATE_LIMIT), the token bucket that holds it across workers, its last attempts
    # (rules.ATTEMPT_SENT / ATTEMPT_FAILED, oldest first) and why it was paused by itself.
    rate_limit = models.FloatField(null=True, blank=True)
    rate_tokens = models.FloatField(default=0.0, db_default=0.0)
    rate_refreshed_at = models.DateTimeField(null=True, blank=True)
    recent_attempts = models.CharField(
        max_length=rules.RECENT_ATTEMPTS_MAX, blank=True, default="", db_default=""
    )
    pause_reason = models.CharField(
        max_length=rules.ERROR_MAX_LENGTH, blank=True, default="", db_default=""
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Per-status message counters, changed in the same transaction as the messages they
    # count, so statistics read one row per mailing instead of scanning messages.
    total = models.PositiveBigIntegerField(default=0)
    pending = models.PositiveBigIntegerField(default=0)
    sent = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    expired = models.PositiveBigIntegerField(default=0)
    cancelled = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(end_at__gt=F("start_at")), name="mailing_end_after_start"
            ),
            models.CheckConstraint(
                condition=Q(status__in=MailingStatus.values), name="mailing_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(text__length__gte=1, text__length__lte=rules.TEXT_MAX_LENGTH),
                name="mailing_text_length",
            ),
            models.CheckConstraint(condition=~Q(name=""), name="mailing_name_not_empty"),
            models.CheckConstraint(
                condition=Q(rate_limit__isnull=True) | Q(rate_limit__gt=0),
                name="mailing_rate_limit_positive",
            ),
            models.CheckConstraint(
                condition=(
                    Q(window_start__isnull=True, window_end__isnull=True)
                    | (
                        Q(window_start__isnull=False, window_end__isnull=False)
                        & ~Q(window_start=F("window_end"))
                    )
                ),
                name="mailing_window_complete",
            ),
            models.CheckConstraint(
                condition=Q(
                    total=F("pending") + F("sent") + F("failed") + F("expired") + F("cancelled")
                ),
                name="mailing_counters_add_up",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "start_at"], name="mailing_status_start_idx"),
            models.Index(fields=["status", "end_at"], name="mailing_status_end_idx"),
        ]

    def __str__(self) -> str:
        return self.name or f"Mailing {self.pk}"

    @property
    def has_window(self) -> bool:
        return self.window_start is not None and self.window_end is not None

    @property
    def send_window(self) -> SendWindow | None:
        if self.window_start is None or self.window_end is None:
            return None
        return SendWindow(self.window_start, self.window_end)

    def counters(self) -> dict[str, int]:
        return {"total": self.total} | {name: getattr(self, name) for name in COUNTER_FIELDS}

    # --- What its state means and allows (mailing.rules) ---

    @property
    def is_active(self) -> bool:
        """Still to happen or happening (the engine has work; the UI keeps refreshing)."""
        return self.status in rules.ACTIVE_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in rules.FINAL_STATUSES

    @property
    def is_draft(self) -> bool:
        """Written, not launched: nothing is fanned out or sent for it."""
        return self.status in rules.DRAFT_STATUSES

    @property
    def is_deleted(self) -> bool:
        """Deleted by staff (its rows may still be going in the background)."""
        return self.status in rules.DELETED_STATUSES

    @property
    def is_preparing_audience(self) -> bool:
        """Started, and its messages do not exist yet."""
        return self.status in rules.IN_PROGRESS_STATUSES and self.fanned_out_at is None

    def allows(self, action: Action) -> bool:
        return rules.allows(self.status, action)

    @property
    def can(self) -> dict[str, bool]:
        """Each action by name and whether this state allows it (``mailing.can.pause``)."""
        return {action.value: self.allows(action) for action in Action}

    @property
    def editable_fields(self) -> frozenset[str]:
        return rules.EDITABLE_FIELDS[self.status]

    @property
    def unreached(self) -> int:
        """Messages that failed or expired: what a resend would try again."""
        return self.failed + self.expired

    @property
    def settled(self) -> int:
        """Messages no longer pending."""
        return self.total - self.pending

    @property
    def progress(self) -> float:
        return rules.progress(self.total, self.pending, self.fanned_out_at is not None)

    @property
    def progress_percent(self) -> float:
        return rules.percent(self.progress)


class Message(models.Model):
    # No database-level foreign keys here, on purpose: their per-row triggers were 7 of the
    # 18 seconds of a million-message fan-out. Integrity holds by construction: messages are
    # only inserted by fan-out, from existing clients, under the mailing's row lock, and
    # deletions go through the ORM (cascade to messages, SET NULL on the client).
    mailing = models.ForeignKey(
        Mailing,
        on_delete=models.CASCADE,
        related_name="messages",
        db_index=False,
        db_constraint=False,
    )
    client = models.ForeignKey(
        Client,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="messages",
        db_constraint=False,
    )
    # Copies, so statistics and sending survive the client's deletion (the format is
    # enforced where the phone is first written, on Client).
    phone = models.CharField(max_length=rules.PHONE_LENGTH)
    timezone = models.CharField(max_length=rules.TIMEZONE_MAX_LENGTH)
    status = models.CharField(
        max_length=rules.STATUS_MAX_LENGTH,
        choices=MessageStatus.choices,
        default=MessageStatus.PENDING,
    )
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=rules.ERROR_MAX_LENGTH, blank=True, default="")
    # When the message may next be tried: retry backoff, the client's window, and the
    # lease of a worker that claimed it (a claim pushes it forward by the lease length,
    # so an abandoned claim becomes due again by itself).
    next_attempt_at = models.DateTimeField()
    # NULL, not "", means unclaimed: the claim and lease checks test it with IS NULL.
    claimed_by = models.CharField(  # noqa: DJ001
        max_length=rules.WORKER_ID_MAX_LENGTH, null=True, blank=True
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["mailing", "client"], name="message_one_per_client"),
            models.CheckConstraint(
                condition=Q(status__in=MessageStatus.values), name="message_status_valid"
            ),
        ]
        indexes = [
            # The queue: one range scan per running mailing finds its due messages.
            models.Index(
                fields=["mailing", "next_attempt_at"],
                condition=Q(status="pending"),
                name="message_due_idx",
            ),
            models.Index(fields=["mailing", "status", "id"], name="message_mailing_status_idx"),
        ]

    def __str__(self) -> str:
        return f"Message {self.pk}"

    @property
    def is_pending(self) -> bool:
        return self.status == MessageStatus.PENDING


class ApiToken(models.Model):
    """A bearer token of the JSON API. Only a SHA-256 of the key is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=rules.TOKEN_NAME_MAX_LENGTH)
    prefix = models.CharField(max_length=rules.TOKEN_PREFIX_MAX_LENGTH)
    key_hash = models.CharField(max_length=rules.KEY_HASH_LENGTH, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())

    @property
    def state(self) -> str:
        """revoked, expired or active: what the tokens page shows."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired() else "active"


class DispatcherSlot(models.Model):
    """The row a running dispatcher holds under a lease: its heartbeat, circuit state and
    send health, for the staff UI and the metrics (mailing/engine/runtime/slots.py)."""

    slot = models.PositiveSmallIntegerField(unique=True)
    owner = models.CharField(max_length=rules.WORKER_ID_MAX_LENGTH, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    circuit_state = models.CharField(max_length=rules.STATUS_MAX_LENGTH, default="closed")
    # The send API over the owner's last minute (mailing.engine.send_health), for the UI.
    send_requests = models.PositiveIntegerField(default=0)
    send_p50_ms = models.FloatField(null=True, blank=True)
    send_p95_ms = models.FloatField(null=True, blank=True)
    send_error_rate = models.FloatField(null=True, blank=True)
    send_health_at = models.DateTimeField(null=True, blank=True)
    # The owner's concurrency window (calls it may keep in flight), renewed every tick.
    send_window = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["slot"]

    def __str__(self) -> str:
        return f"Dispatcher slot {self.slot}"


class ProviderState(models.Model):
    """Shared facts about the send API that every worker must honour (one row, id=1)."""

    auth_failed_at = models.DateTimeField(null=True, blank=True)
    auth_error = models.CharField(max_length=rules.ERROR_MAX_LENGTH, blank=True, default="")
    # Shared token bucket of the send-rate limit.
    rate_tokens = models.FloatField(default=0.0)
    rate_refreshed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return "Send API state"


class ReportRun(models.Model):
    """One row per day whose report was claimed: inserted before sending, so with several
    workers (or after a restart) only the one whose insert succeeds sends that day's. The
    claim is a lease: unsent when ``lease_until`` has passed, any worker may take it over."""

    day = models.DateField(unique=True)
    started_at = models.DateTimeField()
    lease_until = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=1)
    sent_at = models.DateTimeField(null=True, blank=True)
    recipients = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"Report of {self.day}"


class Event(models.Model):
    """What happened to a mailing, a message or a client: their timelines.

    Plain id columns, no foreign keys: the events of a deleted client or mailing remain, and
    the engine writes message events in bulk without per-row triggers. A mailing's own
    events have no message_id; a message's events carry its mailing and client ids too.
    """

    kind = models.CharField(max_length=rules.EVENT_KIND_MAX_LENGTH)
    mailing_id = models.BigIntegerField(null=True, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    client_id = models.BigIntegerField(null=True, blank=True)
    at = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)
    # Who did it (mailing.actors.Actor): the staff member, and the API token if one was used.
    # Empty for what the service does by itself. Database defaults, so the engine's
    # hand-written bulk INSERTs (mailing.sql) need not name these columns.
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(
        max_length=rules.ACTOR_NAME_MAX_LENGTH, blank=True, default="", db_default=""
    )
    actor_token = models.CharField(
        max_length=rules.TOKEN_NAME_MAX_LENGTH, blank=True, default="", db_default=""
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            # The Activity page: staff actions only (few), newest first, or one person's.
            models.Index(
                fields=["-id"], condition=Q(actor_id__isnull=False), name="event_staff_idx"
            ),
            models.Index(
                fields=["actor_id", "-id"],
                condition=Q(actor_id__isnull=False),
                name="event_actor_idx",
            ),
            # Partial indexes: the mailing timeline skips its (many) message events, so the
            # engine's per-attempt inserts only touch the message and client indexes.
            models.Index(
                fields=["mailing_id", "id"],
                condition=Q(message_id__isnull=True, mailing_id__isnull=False),
                name="event_mailing_idx",
            ),
            models.Index(
                fields=["message_id", "id"],
                condition=Q(message_id__isnull=False),
                name="event_message_idx",
            ),
            models.Index(
                fields=["client_id", "id"],
                condition=Q(client_id__isnull=False),
                name="event_client_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"


class ClientImport(models.Model):
    """A CSV file of clients being checked or imported by a q2 job (``mailing.imports``).

    The file's bytes are kept here (at most the CLIENT_IMPORT_MAX_BYTES setting), so the
    worker that runs the job needs no shared disk; its page shows the row counters live.
    """

    status = models.CharField(
        max_length=rules.STATUS_MAX_LENGTH,
        choices=rules.ImportStatus.choices,
        default=rules.ImportStatus.CHECKING,
    )
    filename = models.CharField(max_length=rules.FILENAME_MAX_LENGTH, blank=True, default="")
    data = models.BinaryField()
    size = models.PositiveBigIntegerField(default=0)
    update_existing = models.BooleanField(default=False)
    # What the check found: the text's encoding and delimiter, the header's columns, the
    # first rows with their errors, and why the whole file cannot be imported, if so.
    encoding = models.CharField(max_length=rules.STATUS_MAX_LENGTH, blank=True, default="")
    delimiter = models.CharField(max_length=rules.STATUS_MAX_LENGTH, blank=True, default="")
    columns = models.JSONField(default=list, blank=True)
    preview = models.JSONField(default=list, blank=True)
    file_error = models.TextField(blank=True, default="")
    # Counters: of the check (rows, new, existing, invalid), then of the import.
    rows = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    new = models.PositiveIntegerField(default=0)
    existing = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=rules.ACTOR_NAME_MAX_LENGTH, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.status})"

    @property
    def is_working(self) -> bool:
        return self.status in rules.IMPORT_WORKING_STATUSES

    @property
    def is_checking(self) -> bool:
        return self.status == rules.ImportStatus.CHECKING

    @property
    def can_confirm(self) -> bool:
        return self.status == rules.ImportStatus.CHECKED and not self.file_error

    @property
    def progress(self) -> float:
        return self.rows_done / self.rows if self.rows else 0.0


class ClientImportError(models.Model):
    """One invalid row of an import: its line in the file, its phone as written, why."""

    client_import = models.ForeignKey(
        ClientImport, on_delete=models.CASCADE, related_name="row_errors"
    )
    line = models.PositiveIntegerField()
    phone = models.CharField(max_length=rules.IMPORT_CELL_MAX_LENGTH, blank=True, default="")
    reason = models.TextField()

    class Meta:
        ordering = ["client_import", "line"]
        indexes = [models.Index(fields=["client_import", "line"], name="import_error_line_idx")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"
