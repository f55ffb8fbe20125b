"""``manage.py serve_metrics``: serve this host's multiprocess metrics on their own port.

For worker pods, which have no web server: a sidecar running this over the same
PROMETHEUS_MULTIPROC_DIR as the q2 cluster exposes the send API counters and latencies.
The database gauges are left to the web app's /metrics (they would repeat it).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from prometheus_client import CONTENT_TYPE_LATEST

from ops import health, metrics


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/healthz":
            ok, report = health.health()
            connection.close()  # this thread's connection; probes come every few seconds
            self._answer(200 if ok else 503, json.dumps(report).encode(), "application/json")
            return
        if self.path.split("?")[0] != "/metrics" or not settings.METRICS_TOKEN:
            self._answer(404, b"Not found.\n", "text/plain")
            return
        header = self.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        if not metrics.token_matches(given):
            self._answer(401, b"A valid metrics token is required.\n", "text/plain")
            return
        self._answer(200, metrics.exposition(with_database=False), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class Command(BaseCommand):
    help = "Serve the multiprocess metrics of this host (worker pods) on --port."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=9100)

    def handle(self, *args, host: str, port: int, **options) -> None:
        server = ThreadingHTTPServer((host, port), Handler)
        self.stdout.write(f"metrics on http://{host}:{port}/metrics")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
