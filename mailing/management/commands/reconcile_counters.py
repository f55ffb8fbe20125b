"""Recount messages and correct the per-status counters of mailings (normally a no-op)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from mailing import selectors
from mailing.transitions import reconcile_counters


class Command(BaseCommand):
    help = "Check every mailing's counters against its messages and correct any drift."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--mailing", type=int, action="append", help="only these ids")

    def handle(self, *args, mailing=None, **options) -> None:
        ids = mailing or selectors.mailing_ids()
        corrected = 0
        for mailing_id in ids:
            corrections = reconcile_counters(mailing_id)
            if corrections:
                corrected += 1
                self.stdout.write(f"mailing {mailing_id}: corrected {corrections}")
        self.stdout.write(f"{len(ids)} mailings checked, {corrected} corrected")
