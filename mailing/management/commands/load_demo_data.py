"""Demo data for `make run`: a few hundred clients across operators, tags and zones, and a
staff user for API tokens. Running it again adds nothing."""

from __future__ import annotations

import itertools

from django.core.management.base import BaseCommand, CommandParser

from mailing import selectors, services

DEMO_USER = "demo"
OPERATOR_CODES = ("900", "903", "916", "926", "977")
TAGS = ("vip", "new", "regular", "")
ZONES = (
    "Europe/Moscow",
    "Europe/Kaliningrad",
    "Asia/Yekaterinburg",
    "Asia/Novosibirsk",
    "Asia/Vladivostok",
)


class Command(BaseCommand):
    help = "Load demo clients and the demo staff user (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=300)

    def handle(self, *args, clients: int, **options) -> None:
        combos = itertools.cycle(itertools.product(OPERATOR_CODES, TAGS, ZONES))
        rows = [
            {"phone": f"7{code}{number:07d}", "operator_code": code, "tag": tag, "timezone": zone}
            for number, (code, tag, zone) in zip(range(clients), combos, strict=False)
        ]
        taken = selectors.existing_phones([row["phone"] for row in rows])
        services.create_clients([row for row in rows if row["phone"] not in taken])
        user = selectors.find_user(DEMO_USER) or services.create_staff_user(
            DEMO_USER, email="demo@example.com"
        )
        self.stdout.write(
            f"Demo data: {selectors.client_count()} clients; staff user '{user.username}'."
        )
