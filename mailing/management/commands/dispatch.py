"""Run one dispatcher in the foreground (what a q2 dispatcher task runs), for debugging,
tests and benchmarks. SIGTERM or Ctrl-C stops it after recording what is in flight."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailing.engine.dispatcher import Dispatcher, DispatcherConfig


class Command(BaseCommand):
    help = "Claim, send and record messages until stopped (or for --seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
        parser.add_argument("--concurrency", type=int, default=None, help="in-flight sends")
        parser.add_argument("--worker-id", default=None, help="name of this worker's claims")

    def handle(self, *args, seconds=None, concurrency=None, worker_id=None, **options) -> None:
        config = DispatcherConfig.from_settings()
        if concurrency is not None:
            if concurrency < 1:
                raise CommandError("--concurrency must be at least 1")
            config = dataclasses.replace(config, concurrency=concurrency)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        dispatcher = Dispatcher(config, worker_id=worker_id, stop_event=stop)
        report = dispatcher.run(duration=seconds)
        self.stdout.write(json.dumps({"claimed": report.claimed, "outcomes": report.outcomes}))
