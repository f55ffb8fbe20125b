"""``manage.py fake_provider``: run the local stand-in of the external send API.

A thin wrapper: the stand-in lives in devtools.provider (usable without Django, see
``python -m devtools.provider``, whose options and token defaults it shares: STAND_IN_TOKEN
and STAND_IN_ADMIN_TOKEN, never the real PROBE_TOKEN); this only adds Django's error
reporting.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.provider import cli


class Command(BaseCommand):
    help = (
        "Run the local stand-in of the external send API, with fault injection, "
        "until SIGINT/SIGTERM."
    )
    # It touches neither the database nor the models, so it should start even while the
    # project's checks fail (e.g. mid-migration in a demo).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = cli.prepare(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

        def announce(base_url: str) -> None:
            self.stdout.write(cli.format_banner(base_url, config))
            self.stdout.flush()  # stdout is a pipe under a supervisor or a test.

        try:
            cli.serve(config, options, announce)
        except OSError as exc:  # A taken port or an unwritable --record file: no traceback.
            raise CommandError(str(exc)) from exc
