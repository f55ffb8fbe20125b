"""``manage.py dispatch``: one dispatcher in the foreground. The supervisor runs it
(DISPATCHER_SLOTS of them per qcluster); tests and benchmarks run it directly. SIGTERM or
Ctrl-C stops it after it recorded or handed back what is in flight."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailing.engine.dispatcher import DispatcherConfig
from mailing.engine.runtime.keeper import run_dispatcher, stop_on_signals


class Command(BaseCommand):
    help = "Claim, send and record messages until stopped (or for --seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
        parser.add_argument("--concurrency", type=int, default=None, help="in-flight sends")
        parser.add_argument("--worker-id", default=None, help="name of this worker's claims")

    def handle(
        self,
        *args: Any,
        seconds: float | None = None,
        concurrency: int | None = None,
        worker_id: str | None = None,
        **options: Any,
    ) -> None:
        config = DispatcherConfig.from_settings()
        if concurrency is not None:
            if concurrency < 1:
                raise CommandError("--concurrency must be at least 1")
            config = dataclasses.replace(config, concurrency=concurrency)
        stop = threading.Event()
        with stop_on_signals(stop):
            report = run_dispatcher(config, stop=stop, worker_id=worker_id, seconds=seconds)
        self.stdout.write(json.dumps({"claimed": report.claimed, "outcomes": report.outcomes}))
