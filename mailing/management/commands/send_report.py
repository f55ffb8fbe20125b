"""``manage.py send_report``: send the daily report now (once a day unless --force)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from mailing import reports


class Command(BaseCommand):
    help = (
        "Send the daily statistics report to REPORT_RECIPIENTS now. Without --force it is "
        "the scheduled job: nothing is sent if today's report already went out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="send even if today's report was sent"
        )
        parser.add_argument(
            "--catch-up",
            action="store_true",
            help="instead, send the claimed reports whose lease ran out unsent (what the "
            "report-catch-up schedule does every minute)",
        )

    def handle(self, *args, force: bool = False, catch_up: bool = False, **options) -> None:
        if catch_up:
            days = reports.send_overdue_reports()
            self.stdout.write("sent: " + (", ".join(f"{day:%Y-%m-%d}" for day in days) or "none"))
            return
        self.stdout.write(reports.send_daily_report(force=force))
