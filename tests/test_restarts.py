"""A PostgreSQL restart and a Redis restart in the middle of a mailing: sending resumes by
itself and nothing is lost. These restart this machine's own servers (as CI does have
them), so they only run where the servers are local and the restart commands exist."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import uuid
from urllib.parse import urlparse

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from mailing import services
from mailing.models import Mailing, MailingStatus
from tests.conftest import make_clients, needs_postgres, needs_redis, now_plus, wait_for
from tests.test_workers import (
    outcomes_of,
    run_dispatchers,
    start_process,
    stop_process,
    worker_env,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def local_postgres_cluster() -> tuple[str, str] | None:
    """(version, cluster) of the local PostgreSQL that pg_ctlcluster can restart."""
    if not shutil.which("pg_ctlcluster"):
        return None
    host = urlparse(os.environ.get("DATABASE_URL", "")).hostname
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    if host not in LOCAL_HOSTS or not versions:
        return None
    return versions[-1], "main"


def restart_postgres() -> None:
    version, cluster = local_postgres_cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def restart_redis() -> None:
    url = urlparse(os.environ["REDIS_URL"])
    port = str(url.port or 6379)
    subprocess.run(["redis-cli", "-p", port, "shutdown", "nosave"], capture_output=True, timeout=30)
    # The machine's documented start command; it keeps nothing on disk.
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            port,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    wait_for(
        lambda: (
            subprocess.run(
                ["redis-cli", "-p", port, "ping"], capture_output=True, text=True
            ).stdout.strip()
            == "PONG"
        ),
        30,
        0.2,
    )


def mailing_status(mailing_id: int) -> str | None:
    """The status, riding out the moments when the database is away."""
    try:
        return Mailing.objects.get(pk=mailing_id).status
    except DatabaseError:
        connection.close()
        return None


needs_local_postgres = pytest.mark.skipif(
    local_postgres_cluster() is None,
    reason="needs a local PostgreSQL that pg_ctlcluster can restart",
)
needs_local_redis = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli"))
    or urlparse(os.environ.get("REDIS_URL", "")).hostname not in LOCAL_HOSTS,
    reason="needs a local Redis that redis-server/redis-cli can restart",
)


@needs_postgres()
@needs_local_postgres
def test_sending_resumes_by_itself_after_a_postgresql_restart(provider):
    make_clients(3000)
    provider.update_config(latency_ms=50)
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="PG")
    workers = run_dispatchers(provider, 1, seconds=300, SEND_CONCURRENCY="10")
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent >= 300, 60, 0.2)
    connection.close()
    restart_postgres()
    wait_for(lambda: mailing_status(mailing.pk) == MailingStatus.FINISHED, 180, 0.5)
    outcomes_of(workers)
    mailing.refresh_from_db()
    assert mailing.sent == 3000
    assert provider.recorder.unique_accepted == 3000
    assert provider.recorder.duplicates() == {}


@needs_redis()
@needs_local_redis
def test_sending_resumes_by_itself_after_a_redis_restart(provider):
    make_clients(1500)
    provider.update_config(latency_ms=50)
    env = worker_env(
        provider,
        Q_CLUSTER_NAME=f"test-{uuid.uuid4().hex[:8]}",
        Q_WORKERS="2",
        DISPATCHER_SLOTS="1",
        # Short dispatcher runs, so handovers go through the broker around the restart.
        DISPATCHER_RUN_SECONDS="4",
        SEND_CONCURRENCY="5",
    )
    cluster = start_process(["qcluster"], env)
    try:
        first = services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="R1")
        wait_for(lambda: Mailing.objects.get(pk=first.pk).sent >= 100, 60, 0.2)
        restart_redis()
        wait_for(lambda: mailing_status(first.pk) == MailingStatus.FINISHED, 240, 0.5)
        second = services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="R2")
        wait_for(lambda: mailing_status(second.pk) == MailingStatus.FINISHED, 240, 0.5)
    finally:
        stop_process(cluster, signal.SIGINT)
    assert provider.recorder.unique_accepted == 3000
    assert provider.recorder.duplicates() == {}
