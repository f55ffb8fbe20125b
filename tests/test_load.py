"""Load: 50 concurrent API clients for 60 s while a 100,000-message mailing sends through
a provider that fails 10% of the time. The service answers no 5xx and the mailing completes.

Runs against PostgreSQL, the production database: SQLite's single writer is for
development, not for fifty concurrent writers beside the sending engine."""

from __future__ import annotations

import json
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from mailing import services
from mailing.models import Mailing, MailingStatus
from mailing.tokens import issue_token
from tests.conftest import (
    ChildProcess,
    free_port,
    needs_postgres,
    now_plus,
    subprocess_env,
    wait_for,
)
from tests.test_workers import answers, outcomes_of, run_dispatchers, stop_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, needs_postgres()]

USERS = 50
SECONDS = 60
MESSAGES = 100_000


def insert_clients(count: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO mailing_client (phone, operator_code, tag, timezone, created_at, "
            "updated_at) SELECT '79' || lpad(g::text, 9, '0'), '9' || lpad((g %% 100)::text, "
            "2, '0'), 'load', 'Europe/Moscow', now(), now() FROM generate_series(1, %s) g",
            [count],
        )


def api_user(base: str, token: str, stop: threading.Event, results: list, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    number = 0
    while not stop.is_set():
        started = time.monotonic()
        if rng.random() < 0.5:
            number += 1
            response = session.post(
                f"{base}/api/v1/clients",
                json={"phone": f"78{seed:03d}{number:06d}", "timezone": "Europe/Moscow"},
                timeout=30,
            )
            kind = "create client"
        else:
            response = session.get(f"{base}/api/v1/mailings?limit=10", timeout=30)
            kind = "read mailings"
        results.append((kind, response.status_code, time.monotonic() - started))


def start_gunicorn(port: int) -> ChildProcess:
    """The production web server on the test database, as in the Docker image."""
    return ChildProcess(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "project.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "3",
            "--threads",
            "8",
            "--worker-class",
            "gthread",
        ],
        cwd=settings.BASE_DIR,
        env=subprocess_env(LOG_LEVEL="WARNING"),
        start_new_session=True,
    )


# The test's own waits (60 s of load, up to 600 s for the mailing to finish) must be able to
# fire before pytest-timeout's default of 300 s ends the test without its figures.
@pytest.mark.timeout(900)
def test_fifty_api_clients_while_a_large_mailing_sends(provider):
    insert_clients(MESSAGES)
    provider.update_config(error_rate=0.10, latency_ms=20)
    user = get_user_model().objects.create_user("load", is_staff=True)
    _, token = issue_token(user, "load test")
    port = free_port()
    web = start_gunicorn(port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/api/v1/openapi.json"), 60, 0.2)
        mailing = services.create_mailing(
            start_at=timezone.now(), end_at=now_plus(1800), text="Under load"
        )
        workers = run_dispatchers(provider, 2, seconds=900, SEND_CONCURRENCY="100")
        stop, results = threading.Event(), []
        users = [
            threading.Thread(target=api_user, args=(base, token, stop, results, n))
            for n in range(USERS)
        ]
        for thread in users:
            thread.start()
        # The load lasts SECONDS by design (not a wait for something to happen).
        stop.wait(SECONDS)
        stop.set()
        for thread in users:
            thread.join(60)
        wait_for(
            lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED,
            600,
            1.0,
        )
        outcomes_of(workers)
    finally:
        stop_process(web, signal.SIGTERM)
    statuses = Counter(status for _, status, _ in results)
    server_errors = {status: n for status, n in statuses.items() if status >= 500}
    latencies = sorted(seconds for _, _, seconds in results)
    mailing.refresh_from_db()
    figures = {
        "requests": len(results),
        "statuses": dict(statuses),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 1),
        "mailing": mailing.counters(),
    }
    artifacts = Path(settings.BASE_DIR) / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "resilience-load.json").write_text(json.dumps(figures, indent=2))
    assert server_errors == {}, figures
    assert statuses[201] > 0 and statuses[200] > 0
    # Clients created by the load before the fan-out joined the audience.
    assert mailing.total >= MESSAGES and mailing.sent == mailing.total, figures
