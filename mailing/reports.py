"""The daily e-mail report: statistics of the mailings processed in the last 24 hours.

A django-q2 schedule (``daily-report``, created idempotently after migrations) runs
``send_daily_report`` every day at REPORT_TIME in TIME_ZONE. Exactly one report a day,
whatever the number of workers and restarts: a ``ReportRun`` row for the day is inserted
before sending, and a worker whose insert hits the unique day does not send.

The row is a lease, not a one-off claim: it is the sender's until ``lease_until``
(REPORT_LEASE_SECONDS after the claim). A worker that dies between the claim and the SMTP
handover leaves an unsent row whose lease runs out; the ``report-catch-up`` schedule (every
minute) or the next ``send_report`` then takes it over with a conditional UPDATE (one winner)
and sends that day's report, built for the same period. A send that fails releases the lease
at once, so the next catch-up retries it. The price of never losing a day: a sender slower
than its lease may be overtaken, and that day's report sent twice; the lease is far longer
than an SMTP exchange bounded by EMAIL_TIMEOUT.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from mailing import selectors
from mailing.models import COUNTER_FIELDS, ReportRun
from mailing.rules import (
    DRAFT_STATUSES,
    FAILURE_REASONS_IN_REPORT,
    IN_PROGRESS_STATUSES,
    UNSTARTED_STATUSES,
)

logger = logging.getLogger("mailing.reports")

SCHEDULE_NAME = "daily-report"
CATCH_UP_SCHEDULE_NAME = "report-catch-up"
CATCH_UP_MINUTES = 1
PERIOD = timedelta(hours=24)


def processed_mailings(since: datetime, until: datetime):
    """Mailings that were sending at some time in [since, until): started, and running,
    paused, finished or cancelled during the period."""
    return (
        selectors.visible_mailings()
        .filter(start_at__lt=until)
        .exclude(status__in=UNSTARTED_STATUSES | DRAFT_STATUSES)
        .filter(
            Q(end_at__gt=since)
            | Q(finished_at__gte=since)
            | Q(updated_at__gte=since)
            | Q(status__in=IN_PROGRESS_STATUSES)
        )
        .order_by("id")
    )


def build_report(now: datetime | None = None) -> dict[str, Any]:
    """The report's numbers: per mailing its counts by status and most common failure
    reasons (counters and a bounded sample: cheap however many messages), and totals."""
    now = now or timezone.now()
    since = now - PERIOD
    rows = []
    totals = {"total": 0} | dict.fromkeys(COUNTER_FIELDS, 0)
    for mailing in processed_mailings(since, now):
        counts = mailing.counters()
        for name, value in counts.items():
            totals[name] += value
        rows.append(
            {
                "id": mailing.pk,
                "name": mailing.name,
                "text": mailing.text,
                "status": mailing.status,
                "start_at": mailing.start_at,
                "end_at": mailing.end_at,
                "counts": counts,
                "failure_reasons": (
                    selectors.failure_reasons(mailing, limit=FAILURE_REASONS_IN_REPORT)
                    if counts["failed"]
                    else []
                ),
            }
        )
    return {
        "since": since,
        "until": now,
        "day": timezone.localdate(now),
        "mailings": rows,
        "totals": totals,
        "statuses": list(COUNTER_FIELDS),
    }


def subject_of(report: dict[str, Any]) -> str:
    totals = report["totals"]
    return (
        f"Mailing report {report['day']:%Y-%m-%d}: {len(report['mailings'])} mailings, "
        f"{totals['sent']} sent, {totals['failed']} failed"
    )


def render_email(report: dict[str, Any], recipients: list[str]) -> EmailMultiAlternatives:
    context = {"report": report, "time_zone": settings.TIME_ZONE}
    message = EmailMultiAlternatives(
        subject=subject_of(report),
        body=render_to_string("emails/daily_report.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string("emails/daily_report.html", context), "text/html")
    return message


def _lease_end(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.REPORT_LEASE_SECONDS)


def _take_over(day: date, now: datetime) -> ReportRun | None:
    """The unsent run of ``day`` if its lease has run out and this worker's UPDATE won it."""
    taken = ReportRun.objects.filter(day=day, sent_at__isnull=True, lease_until__lte=now).update(
        lease_until=_lease_end(now), attempts=F("attempts") + 1
    )
    return ReportRun.objects.get(day=day) if taken else None


def _claim_day(day: date, now: datetime, recipients: int) -> ReportRun | None:
    """The day's run, leased to this worker: a new row, or an unsent one whose lease expired.
    None when the day was sent, or is being sent under a live lease."""
    try:
        with transaction.atomic():
            return ReportRun.objects.create(
                day=day, started_at=now, lease_until=_lease_end(now), recipients=recipients
            )
    except IntegrityError:
        return _take_over(day, now)


def _send(run: ReportRun | None, report: dict[str, Any], recipients: list[str]) -> None:
    """Hand the report to SMTP; mark the run sent, or release its lease when that failed."""
    day = report["day"]
    try:
        render_email(report, recipients).send(fail_silently=False)
    except Exception:
        if run is not None:
            ReportRun.objects.filter(pk=run.pk, sent_at__isnull=True).update(
                lease_until=timezone.now()
            )
        logger.exception("daily report of %s could not be sent", day)
        raise
    ReportRun.objects.filter(day=day).update(sent_at=timezone.now())
    logger.info(
        "daily report of %s sent to %d recipients (%d mailings)",
        day,
        len(recipients),
        len(report["mailings"]),
    )


def send_daily_report(now: datetime | None = None, *, force: bool = False) -> str:
    """Send the report unless today's was already sent (``force`` sends regardless).

    Returns what happened: "sent", "skipped: no recipients", "skipped: already sent",
    "skipped: being sent" (another worker holds the day's live lease).
    """
    now = now or timezone.now()
    recipients = list(settings.REPORT_RECIPIENTS)
    if not recipients:
        logger.warning("daily report skipped: REPORT_RECIPIENTS is empty")
        return "skipped: no recipients"
    day = timezone.localdate(now)
    run = _claim_day(day, now, len(recipients))
    if run is None and not force:
        if ReportRun.objects.filter(day=day, sent_at__isnull=False).exists():
            logger.info("daily report of %s already sent by another worker", day)
            return "skipped: already sent"
        logger.info("daily report of %s is being sent by another worker", day)
        return "skipped: being sent"
    # A run taken over from a dead worker reports the period it claimed.
    _send(run, build_report(run.started_at if run is not None else now), recipients)
    return "sent"


def send_overdue_reports(now: datetime | None = None) -> list[date]:
    """Send every claimed but unsent report whose lease has run out (its sender died or
    failed); returns the days sent. The ``report-catch-up`` schedule's task."""
    now = now or timezone.now()
    recipients = list(settings.REPORT_RECIPIENTS)
    if not recipients:
        return []
    sent = []
    overdue = ReportRun.objects.filter(sent_at__isnull=True, lease_until__lte=now)
    for day in overdue.order_by("day").values_list("day", flat=True):
        run = _take_over(day, now)
        if run is None:
            continue  # another worker took it first
        logger.warning("daily report of %s: lease expired unsent, sending it now", day)
        _send(run, build_report(run.started_at), recipients)
        sent.append(day)
    return sent


def run_scheduled_report() -> str:
    """The q2 task of the schedule."""
    return send_daily_report()


def report_time() -> time:
    try:
        hours, minutes = (int(part) for part in settings.REPORT_TIME.split(":"))
        return time(hours, minutes)
    except ValueError as exc:
        raise ValueError(f"REPORT_TIME must be HH:MM, got {settings.REPORT_TIME!r}") from exc


def next_run_at(now: datetime | None = None) -> datetime:
    """The next REPORT_TIME in TIME_ZONE after ``now``."""
    now = timezone.localtime(now or timezone.now())
    at = report_time()
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if candidate <= now:
        candidate = timezone.make_aware(datetime.combine(candidate.date() + timedelta(days=1), at))
    return candidate


def ensure_schedule() -> None:
    """The daily schedule and its catch-up, created once (post_migrate); the daily one
    moves when REPORT_TIME changes.

    DAILY schedules keep their local time of day across daylight-saving changes (q2 corrects
    next_run in TIME_ZONE); a missed run (the cluster was down) runs once at restart.
    """
    from django_q.models import Schedule

    Schedule.objects.get_or_create(
        name=CATCH_UP_SCHEDULE_NAME,
        defaults={
            "func": "mailing.reports.send_overdue_reports",
            "schedule_type": Schedule.MINUTES,
            "minutes": CATCH_UP_MINUTES,
            "repeats": -1,
        },
    )
    wanted = report_time()
    schedule = Schedule.objects.filter(name=SCHEDULE_NAME).first()
    if schedule is not None:
        current = timezone.localtime(schedule.next_run) if schedule.next_run else None
        if current is not None and (current.hour, current.minute) == (wanted.hour, wanted.minute):
            return
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "mailing.reports.run_scheduled_report",
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
            "next_run": next_run_at(),
        },
    )
