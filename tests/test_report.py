"""The daily report: its numbers, once a day across workers, and a real SMTP round trip."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from mailing import reports, services
from mailing.models import Mailing, MailingStatus, Message, MessageStatus, ReportRun
from tests.conftest import (
    ChildProcess,
    RefusedPort,
    free_port,
    make_clients,
    subprocess_env,
    wait_for,
)

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
SKIPPED_FOR_ANOTHER_WORKER = {"skipped: already sent", "skipped: being sent"}


def mailing_with_results(text: str, *, sent: int, failed: list[str], pending: int = 0) -> Mailing:
    """A running mailing whose messages have the given outcomes (counters kept exact)."""
    now = timezone.now()
    code = f"9{Mailing.objects.count():02d}"
    make_clients(sent + len(failed) + pending, operator_code=code)
    mailing = services.create_mailing(
        start_at=now - timedelta(hours=2),
        end_at=now + timedelta(hours=2),
        text=text,
        operator_codes=[code],
    )
    from mailing.engine import lifecycle

    lifecycle.fan_out_started_mailings(now)
    ids = list(Message.objects.filter(mailing=mailing).values_list("id", flat=True))
    Message.objects.filter(id__in=ids[:sent]).update(status=MessageStatus.SENT, sent_at=now)
    for message_id, reason in zip(ids[sent:], failed, strict=False):
        Message.objects.filter(id=message_id).update(status=MessageStatus.FAILED, last_error=reason)
    Mailing.objects.filter(pk=mailing.pk).update(sent=sent, failed=len(failed), pending=pending)
    mailing.refresh_from_db()
    return mailing


@pytest.fixture
def recipients(settings):
    settings.REPORT_RECIPIENTS = ["boss@example.com", "ops@example.com"]
    return settings.REPORT_RECIPIENTS


@pytest.mark.django_db
def test_report_counts_per_mailing_failure_reasons_and_totals():
    first = mailing_with_results(
        "Spring sale", sent=5, failed=["code 7: bad phone", "code 7: bad phone", "HTTP 400"]
    )
    second = mailing_with_results("Welcome", sent=2, failed=[], pending=1)
    old = mailing_with_results("Old news", sent=1, failed=[])
    Mailing.objects.filter(pk=old.pk).update(
        status=MailingStatus.FINISHED,
        start_at=timezone.now() - timedelta(days=5),
        end_at=timezone.now() - timedelta(days=4),
        finished_at=timezone.now() - timedelta(days=4),
        updated_at=timezone.now() - timedelta(days=4),
    )
    services.create_mailing(  # scheduled: not processed yet
        start_at=timezone.now() + timedelta(hours=1),
        end_at=timezone.now() + timedelta(hours=2),
        text="Tomorrow",
    )
    report = reports.build_report()
    assert [row["id"] for row in report["mailings"]] == [first.pk, second.pk]
    row = report["mailings"][0]
    assert row["counts"] == {
        "total": 8,
        "pending": 0,
        "sent": 5,
        "failed": 3,
        "expired": 0,
        "cancelled": 0,
    }
    assert row["failure_reasons"] == [
        {"reason": "code 7: bad phone", "count": 2},
        {"reason": "HTTP 400", "count": 1},
    ]
    assert report["totals"] == {
        "total": 11,
        "pending": 1,
        "sent": 7,
        "failed": 3,
        "expired": 0,
        "cancelled": 0,
    }


@pytest.mark.django_db
def test_email_has_a_text_and_an_html_part(recipients):
    mailing_with_results("Spring <sale>", sent=4, failed=["code 7: bad phone"])
    assert reports.send_daily_report() == "sent"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == recipients and message.from_email == settings.DEFAULT_FROM_EMAIL
    assert message.subject.endswith(": 1 mailings, 4 sent, 1 failed")
    assert "sent 4, failed 1" in message.body and "1 x code 7: bad phone" in message.body
    assert "Spring <sale>" in message.body  # plain text is not HTML-escaped
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html" and "Spring &lt;sale&gt;" in html
    assert "1 &times; code 7: bad phone" in html


@pytest.mark.django_db
def test_no_recipients_means_no_report(settings, caplog):
    settings.REPORT_RECIPIENTS = []
    assert reports.send_daily_report() == "skipped: no recipients"
    assert mail.outbox == [] and not ReportRun.objects.exists()
    assert "REPORT_RECIPIENTS is empty" in caplog.text


@pytest.mark.django_db
def test_one_report_a_day_after_a_restart_unless_forced(recipients):
    assert reports.send_daily_report() == "sent"
    # A restarted worker (or the schedule catching up) runs the task again the same day.
    assert reports.send_daily_report() == "skipped: already sent"
    assert len(mail.outbox) == 1
    call_command("send_report", "--force", stdout=io.StringIO())
    assert len(mail.outbox) == 2
    tomorrow = timezone.now() + timedelta(days=1)
    assert reports.send_daily_report(tomorrow) == "sent"
    assert len(mail.outbox) == 3 and ReportRun.objects.count() == 2


@pytest.mark.django_db
def test_a_failed_send_can_be_retried(recipients, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    with RefusedPort() as port:
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
        with pytest.raises(OSError):
            reports.send_daily_report()
    run = ReportRun.objects.get()  # kept unsent, its lease released at once
    assert run.sent_at is None and run.lease_until <= timezone.now()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert reports.send_daily_report() == "sent"
    run.refresh_from_db()
    assert run.sent_at is not None and run.attempts == 2
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_live_lease_keeps_others_off_and_an_expired_one_is_taken_over(recipients):
    """A claimed, unsent day (its sender died after the claim) is nobody else's while its
    lease runs, then exactly one catch-up sends it, for the period first claimed."""
    mailing_with_results("Lease", sent=3, failed=[])
    lease = timedelta(seconds=settings.REPORT_LEASE_SECONDS)
    claimed_at = timezone.now() - timedelta(hours=1)
    if timezone.localdate(claimed_at) != timezone.localdate(claimed_at + lease):
        # The claim and its whole lease must fall on one local day, whatever the hour of
        # the run: a lease crossing midnight would meet the next day's report instead.
        claimed_at = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    day = timezone.localdate(claimed_at)
    ReportRun.objects.create(
        day=day, started_at=claimed_at, lease_until=claimed_at + lease, recipients=2
    )
    during_lease = claimed_at + lease - timedelta(seconds=1)
    assert reports.send_daily_report(during_lease) == "skipped: being sent"
    assert reports.send_overdue_reports(during_lease) == []
    assert mail.outbox == []
    assert reports.send_overdue_reports(claimed_at + lease) == [day]
    assert reports.send_overdue_reports() == []
    assert reports.send_daily_report(claimed_at) == "skipped: already sent"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == f"Mailing report {day:%Y-%m-%d}: 1 mailings, 3 sent, 0 failed"
    run = ReportRun.objects.get(day=day)
    assert run.sent_at is not None and run.attempts == 2 and run.started_at == claimed_at


def twice_at_once(task):
    """``task``'s results when two threads (two database connections) start it together."""
    barrier = threading.Barrier(2)
    results = []

    def worker() -> None:
        from django.db import connection

        try:
            barrier.wait(timeout=10)
            results.append(task())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    return results


@pytest.mark.django_db(transaction=True)
def test_two_catch_ups_at_once_send_an_expired_day_once(recipients):
    past = timezone.now() - timedelta(days=1)
    ReportRun.objects.create(
        day=timezone.localdate(past), started_at=past, lease_until=past, recipients=2
    )
    results = twice_at_once(reports.send_overdue_reports)
    assert sorted(len(days) for days in results) == [0, 1]
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_one_report(recipients):
    results = sorted(twice_at_once(reports.send_daily_report))
    # The loser finds the day sent, or still being sent under the winner's lease.
    assert results[0] == "sent" and results[1] in SKIPPED_FOR_ANOTHER_WORKER
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_schedule_is_created_once_and_follows_report_time(settings):
    Schedule.objects.filter(name=reports.SCHEDULE_NAME).delete()
    settings.TIME_ZONE = "Europe/Moscow"
    settings.REPORT_TIME = "07:30"
    with timezone.override("Europe/Moscow"):
        reports.ensure_schedule()
        reports.ensure_schedule()
        schedules = Schedule.objects.filter(name=reports.SCHEDULE_NAME)
        assert schedules.count() == 1
        schedule = schedules.get()
        assert schedule.func == "mailing.reports.run_scheduled_report"
        assert schedule.schedule_type == Schedule.DAILY and schedule.repeats == -1
        local = timezone.localtime(schedule.next_run)
        assert (local.hour, local.minute) == (7, 30)
        assert timezone.now() < schedule.next_run <= timezone.now() + timedelta(days=1)
        settings.REPORT_TIME = "08:15"
        reports.ensure_schedule()
        local = timezone.localtime(Schedule.objects.get(name=reports.SCHEDULE_NAME).next_run)
        assert (local.hour, local.minute) == (8, 15)


@pytest.mark.django_db
def test_migrations_create_the_schedules():
    # post_migrate ran when the test database was created.
    assert Schedule.objects.filter(name=reports.SCHEDULE_NAME).count() == 1
    catch_up = Schedule.objects.get(name=reports.CATCH_UP_SCHEDULE_NAME)
    assert catch_up.func == "mailing.reports.send_overdue_reports"
    assert catch_up.schedule_type == Schedule.MINUTES and catch_up.minutes == 1


class Inbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


class HoldingInbox(Inbox):
    """Holds the first message's DATA phase unanswered until ``release`` (the test kills the
    sender meanwhile), then refuses it: only later messages are received."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        if not self.holding.is_set():
            self.holding.set()
            deadline = asyncio.get_running_loop().time() + 60
            while not self.release.is_set() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            return "451 4.3.0 Sender gone, message dropped"
        return await super().handle_DATA(server, session, envelope)


def _smtp_controller(inbox: Inbox):
    from aiosmtpd.controller import Controller

    return Controller(inbox, hostname="127.0.0.1", port=free_port())


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = _smtp_controller(inbox)
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


@pytest.fixture
def holding_smtp_server():
    inbox = HoldingInbox()
    controller = _smtp_controller(inbox)
    controller.start()
    try:
        yield controller, inbox
    finally:
        inbox.release.set()
        controller.stop()


def smtp_env(port: int, **extra: str) -> dict[str, str]:
    return subprocess_env(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(port),
        EMAIL_USE_TLS="0",
        DEFAULT_FROM_EMAIL="reports@example.com",
        REPORT_RECIPIENTS="boss@example.com, ops@example.com",
        LOG_LEVEL="WARNING",
        **extra,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_send_report_end_to_end_through_a_real_smtp_server(smtp_server):
    """Two `send_report` processes at once, configured only by the environment, against a
    real SMTP server on loopback: one e-mail arrives, with both parts and the numbers."""
    controller, inbox = smtp_server
    mailing = mailing_with_results(
        "Autumn sale", sent=6, failed=["code 7: bad phone", "code 7: bad phone"]
    )
    env = smtp_env(controller.port)
    processes = [ChildProcess([sys.executable, MANAGE, "send_report"], env=env) for _ in range(2)]
    try:
        for process in processes:
            process.wait(timeout=120)
        outputs = sorted(process.output()[0].strip() for process in processes)
        errors = [process.output()[1][-2000:] for process in processes]
    finally:
        for process in processes:
            process.close()
    assert all(p.returncode == 0 for p in processes), errors
    assert outputs[0] == "sent" and outputs[1] in SKIPPED_FOR_ANOTHER_WORKER
    wait_for(lambda: inbox.messages, timeout=10)
    assert len(inbox.messages) == 1
    rcpt, raw = inbox.messages[0]
    assert sorted(rcpt) == ["boss@example.com", "ops@example.com"]
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert received["From"] == "reports@example.com"
    day = timezone.localdate()
    assert received["Subject"] == f"Mailing report {day:%Y-%m-%d}: 1 mailings, 6 sent, 2 failed"
    assert received.get_content_type() == "multipart/alternative"
    text = received.get_body(preferencelist=("plain",)).get_content()
    html = received.get_body(preferencelist=("html",)).get_content()
    assert f'Mailing {mailing.pk}, {mailing.name} (running): "Autumn sale"' in text
    assert "total 8, pending 0, sent 6, failed 2, expired 0, cancelled 0" in text
    assert "2 x code 7: bad phone" in text
    assert f'<tr id="mailing-{mailing.pk}">' in html and "<td>6</td>" in html
    assert "2 &times; code 7: bad phone" in html
    assert ReportRun.objects.get(day=day).sent_at is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_sender_killed_before_the_smtp_handover_does_not_lose_the_day(
    holding_smtp_server, recipients
):
    """`send_report` is SIGKILLed while the SMTP server holds its DATA phase (claimed, not
    handed over). Nobody else sends while its lease runs; once it has run out, the catch-up
    of another process sends that day's report: exactly one e-mail arrives."""
    controller, inbox = holding_smtp_server
    mailing_with_results("Killed", sent=2, failed=["HTTP 400"])
    lease = 2
    env = smtp_env(controller.port, REPORT_LEASE_SECONDS=str(lease))
    with ChildProcess([sys.executable, MANAGE, "send_report"], env=env) as sender:
        assert wait_for(inbox.holding.is_set, timeout=60)
        run = ReportRun.objects.get()
        assert run.sent_at is None
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
        assert sender.returncode == -signal.SIGKILL
    inbox.release.set()
    assert inbox.messages == []
    # Its lease still runs: asked at times inside it (whatever the machine's pace), the
    # day's claim at its own time (the same day, even at midnight).
    assert reports.send_daily_report(run.started_at) == "skipped: being sent"
    assert reports.send_overdue_reports(run.lease_until - timedelta(milliseconds=1)) == []
    assert wait_for(lambda: timezone.now() > run.lease_until, timeout=lease + 10)
    with ChildProcess([sys.executable, MANAGE, "send_report", "--catch-up"], env=env) as next_one:
        next_one.wait(timeout=120)
        output, errors = next_one.output()
    assert next_one.returncode == 0, errors[-3000:]
    assert output.strip() == f"sent: {run.day:%Y-%m-%d}"
    assert wait_for(lambda: inbox.messages, timeout=10)
    assert reports.send_overdue_reports() == []
    assert reports.send_daily_report(run.started_at) == "skipped: already sent"
    assert len(inbox.messages) == 1
    received = email.message_from_bytes(inbox.messages[0][1], policy=email.policy.default)
    assert received["Subject"] == f"Mailing report {run.day:%Y-%m-%d}: 1 mailings, 2 sent, 1 failed"
    run.refresh_from_db()
    assert run.sent_at is not None and run.attempts == 2
