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

    def handle(self, *args, force: bool = False, **options) -> None:
        self.stdout.write(reports.send_daily_report(force=force))
