"""``manage.py create_api_token USERNAME [--name NAME] [--create-user]``.

Prints only the new key on stdout (so scripts can capture it); it is shown this once.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailing import selectors, services
from mailing.rules import TOKEN_MAX_DAYS
from mailing.tokens import issue_token


class Command(BaseCommand):
    help = "Issue a JSON API token for a staff user and print it (only the token, on stdout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="An existing active staff user.")
        parser.add_argument("--name", default="cli", help="A label for the token (default: cli).")
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"Days until it expires (1 to {TOKEN_MAX_DAYS}; default: API_TOKEN_DAYS).",
        )
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the user as staff (with no usable password) if it does not exist.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        user = selectors.find_user(username)
        if user is None:
            if not options["create_user"]:
                raise CommandError(
                    f"No user {username!r}. Create one first (manage.py createsuperuser) "
                    "or pass --create-user."
                )
            user = services.create_staff_user(username)
            self.stderr.write(f"Created staff user {username!r}.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is not active.")
        if not user.is_staff:
            raise CommandError(
                f"User {username!r} is not staff; API tokens belong to staff users only."
            )
        try:
            token, key = issue_token(user, options["name"], days=options["days"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stderr.write(
            f"Token {token.prefix}… ({token.name}) issued for {username!r}, "
            f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC."
        )
        self.stdout.write(key)
