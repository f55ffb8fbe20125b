"""The web process as production runs it (gunicorn with the image's deploy/gunicorn.conf.py):
SIGTERM stops it within 10 s even with a request in flight; killed in the middle of
``POST /mailings``, it leaves no half-made mailing."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from mailing import services
from mailing.models import Event, Mailing, MailingStatus
from mailing.tokens import issue_token
from tests.conftest import (
    ChildProcess,
    free_port,
    make_clients,
    needs_postgres,
    now_plus,
    subprocess_env,
    wait_for,
)
from tests.test_resilience import save_figures
from tests.test_runtime import seconds_until_exit
from tests.test_workers import alive, answers, descendants, stop_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def start_web(port: int, **env: str) -> ChildProcess:
    """The image's command (see Dockerfile), bound to a free loopback port."""
    return ChildProcess(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            *("--config", "deploy/gunicorn.conf.py"),
            *("--bind", f"127.0.0.1:{port}"),
            "project.wsgi:application",
        ],
        cwd=settings.BASE_DIR,
        env=subprocess_env(LOG_LEVEL="WARNING", **env),
        start_new_session=True,
    )


def started_web(**env: str) -> tuple[ChildProcess, str]:
    port = free_port()
    web = start_web(port, **env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/api/v1/openapi.json"), 60, 0.2)
    except AssertionError:
        web.close()
        raise
    return web, base


@pytest.mark.parametrize(
    "threads",
    # The image's default (gunicorn's gthread worker), and one thread (its sync worker).
    ["2", "1"],
    ids=["gthread", "sync"],
)
def test_sigterm_stops_the_web_within_10_s_with_a_request_in_flight(
    provider, dispatcher_factory, threads
):
    make_clients(300)
    provider.update_config(latency_ms=20)
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="Web")
    worker = dispatcher_factory(concurrency=5)
    _, key = issue_token(get_user_model().objects.create_user("web", is_staff=True), "web test")
    auth = {"Authorization": f"Bearer {key}"}

    web, base = started_web(GUNICORN_THREADS=threads)
    port = int(base.rsplit(":", 1)[1])
    with web, socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        try:
            # A client in the middle of its request: the headers and part of the body sent,
            # the rest never comes (a slow upload, a stalled mobile client). The complete
            # request after it is answered: the web was serving when the signal came.
            slow.sendall(
                b"POST /api/v1/mailings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
            detail = requests.get(f"{base}/api/v1/mailings/{mailing.pk}", headers=auth, timeout=10)
            assert detail.status_code == 200
            children = descendants(web.pid)
            os.kill(web.pid, signal.SIGTERM)  # as `docker stop` and Kubernetes do
            took = seconds_until_exit(web, 40)
        finally:
            _out, err = stop_process(web, signal.SIGKILL)
    assert took < 10.0, f"the web took {took:.1f} s to stop:\n{err[-3000:]}"
    assert len(children) >= 1 and [pid for pid in children if alive(pid)] == []

    # Sending never depended on the web; a new web shows the mailing completed.
    web, base = started_web()
    with web:
        try:

            def finished() -> dict | None:
                body = requests.get(
                    f"{base}/api/v1/mailings/{mailing.pk}", headers=auth, timeout=10
                ).json()
                return body if body["status"] == MailingStatus.FINISHED else None

            body = wait_for(finished, 60, 0.2)
        finally:
            stop_process(web, signal.SIGTERM)
    worker.stop()
    assert body["stats"]["sent"] == 300 == Mailing.objects.get(pk=mailing.pk).sent
    save_figures(f"sigterm-web-{threads}-threads", {"stop_seconds": took})


def waiting_for_the_event_table() -> int | None:
    """The backend of a request blocked inside create_mailing's transaction: its mailing
    row is written and it waits to write the mailing.created event."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_locks WHERE relation = 'mailing_event'::regclass AND NOT granted"
        )
        row = cursor.fetchone()
    return row[0] if row else None


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


@needs_postgres()  # the known point inside the transaction is a PostgreSQL table lock
def test_a_web_killed_during_post_mailings_leaves_no_half_made_mailing():
    _, key = issue_token(get_user_model().objects.create_user("kill", is_staff=True), "kill")
    auth = {"Authorization": f"Bearer {key}"}
    payload = {"start_at": timezone.now().isoformat(), "end_at": now_plus(600).isoformat()}
    web, base = started_web()
    answered: list[object] = []

    def post() -> None:
        try:
            answered.append(
                requests.post(
                    f"{base}/api/v1/mailings",
                    json={**payload, "text": "Half"},
                    headers=auth,
                    timeout=30,
                )
            )
        except requests.RequestException as error:
            answered.append(error)

    with web:
        try:
            with transaction.atomic():
                # Hold the event table: the request stops between its two writes.
                with connection.cursor() as cursor:
                    cursor.execute("LOCK TABLE mailing_event IN EXCLUSIVE MODE")
                request = threading.Thread(target=post)
                request.start()
                backend = wait_for(waiting_for_the_event_table, 30)
                os.killpg(web.pid, signal.SIGKILL)  # the whole web: arbiter and workers
                seconds_until_exit(web, 10)
            # The lock is gone; the dead request's transaction can only roll back.
            wait_for(lambda: not backend_alive(backend), 30)
            request.join(30)
        finally:
            web.close()
    assert len(answered) == 1 and isinstance(answered[0], requests.ConnectionError)
    assert not Mailing.objects.filter(text="Half").exists()
    orphans = Event.objects.filter(mailing_id__isnull=False).exclude(
        mailing_id__in=Mailing.objects.values("id")
    )
    assert not orphans.exists()

    # A new web creates the same mailing whole: the row, its event, its start.
    web, base = started_web()
    with web:
        try:
            created = requests.post(
                f"{base}/api/v1/mailings",
                json={**payload, "text": "Whole"},
                headers=auth,
                timeout=30,
            )
        finally:
            stop_process(web, signal.SIGTERM)
    assert created.status_code == 201, created.text
    mailing = Mailing.objects.get(text="Whole")
    assert mailing.status == MailingStatus.RUNNING
    assert set(Event.objects.filter(mailing_id=mailing.pk).values_list("kind", flat=True)) >= {
        "mailing.created",
        "mailing.started",
    }
