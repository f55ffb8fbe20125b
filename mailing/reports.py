"""The daily e-mail report: statistics of the mailings processed in the last 24 hours.

A django-q2 schedule (``daily-report``, created idempotently after migrations) runs
``send_daily_report`` every day at REPORT_TIME in TIME_ZONE. Exactly one report a day,
whatever the number of workers and restarts: a ``ReportRun`` row for the day is inserted
before sending, and a worker whose insert hits the unique day does not send. A send that
fails removes the row again, so the next run (or ``send_report``) can retry; a worker that
dies between the insert and the send loses that day's report (at most once, never twice).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from mailing import selectors
from mailing.models import COUNTER_FIELDS, Mailing, ReportRun
from mailing.rules import FAILURE_REASONS_IN_REPORT, IN_PROGRESS_STATUSES, UNSTARTED_STATUSES

logger = logging.getLogger("mailing.reports")

SCHEDULE_NAME = "daily-report"
PERIOD = timedelta(hours=24)


def processed_mailings(since: datetime, until: datetime):
    """Mailings that were sending at some time in [since, until): started, and running,
    paused, finished or cancelled during the period."""
    return (
        Mailing.objects.filter(start_at__lt=until)
        .exclude(status__in=UNSTARTED_STATUSES)
        .filter(
            Q(end_at__gt=since)
            | Q(finished_at__gte=since)
            | Q(updated_at__gte=since)
            | Q(status__in=IN_PROGRESS_STATUSES)
        )
        .order_by("id")
    )


def build_report(now: datetime | None = None) -> dict[str, object]:
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


def subject_of(report: dict[str, object]) -> str:
    totals = report["totals"]
    return (
        f"Mailing report {report['day']:%Y-%m-%d}: {len(report['mailings'])} mailings, "
        f"{totals['sent']} sent, {totals['failed']} failed"
    )


def render_email(report: dict[str, object], recipients: list[str]) -> EmailMultiAlternatives:
    context = {"report": report, "time_zone": settings.TIME_ZONE}
    message = EmailMultiAlternatives(
        subject=subject_of(report),
        body=render_to_string("emails/daily_report.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string("emails/daily_report.html", context), "text/html")
    return message


def _claim_day(day: date, now: datetime, recipients: int) -> bool:
    try:
        with transaction.atomic():
            ReportRun.objects.create(day=day, started_at=now, recipients=recipients)
    except IntegrityError:
        return False
    return True


def send_daily_report(now: datetime | None = None, *, force: bool = False) -> str:
    """Send the report unless today's was already sent (``force`` sends regardless).

    Returns what happened: "sent", "skipped: no recipients", "skipped: already sent".
    """
    now = now or timezone.now()
    recipients = list(settings.REPORT_RECIPIENTS)
    if not recipients:
        logger.warning("daily report skipped: REPORT_RECIPIENTS is empty")
        return "skipped: no recipients"
    day = timezone.localdate(now)
    claimed = _claim_day(day, now, len(recipients))
    if not claimed and not force:
        logger.info("daily report of %s already sent by another worker", day)
        return "skipped: already sent"
    report = build_report(now)
    try:
        render_email(report, recipients).send(fail_silently=False)
    except Exception:
        if claimed:
            ReportRun.objects.filter(day=day, sent_at__isnull=True).delete()
        logger.exception("daily report of %s could not be sent", day)
        raise
    ReportRun.objects.filter(day=day).update(sent_at=timezone.now())
    logger.info(
        "daily report of %s sent to %d recipients (%d mailings)",
        day,
        len(recipients),
        len(report["mailings"]),
    )
    return "sent"


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
    """The daily schedule, created once (post_migrate); moved when REPORT_TIME changes.

    DAILY schedules keep their local time of day across daylight-saving changes (q2 corrects
    next_run in TIME_ZONE); a missed run (the cluster was down) runs once at restart.
    """
    from django_q.models import Schedule

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
