"""Real worker processes against the test database: the q2 cluster, parallel dispatchers."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from mailing import services
from mailing.models import DispatcherSlot, Mailing, MailingStatus, Message
from tests.conftest import (
    TOKEN,
    ChildProcess,
    free_port,
    make_clients,
    needs_postgres,
    needs_redis,
    now_plus,
    subprocess_env,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


def start_process(args: list[str], env: dict[str, str]) -> ChildProcess:
    """``manage.py <args>`` in a process group of its own (its children stop with it)."""
    return ChildProcess([sys.executable, MANAGE, *args], env=env, start_new_session=True)


def stop_process(process: ChildProcess, sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Signal the group, wait at most 40 s (then kill and fail); (stdout, stderr)."""
    return process.stop(sig, timeout=40)


def worker_env(provider, **extra: str) -> dict[str, str]:
    return subprocess_env(
        PROBE_URL=provider.base_url,
        PROBE_TOKEN=TOKEN,
        LOG_LEVEL="WARNING",
        **extra,
    )


@pytest.fixture
def q2_cluster(provider) -> Iterator[ChildProcess]:
    env = worker_env(
        provider,
        Q_CLUSTER_NAME=f"test-{uuid.uuid4().hex[:8]}",
        Q_WORKERS="2",
        DISPATCHER_SLOTS="1",
    )
    cluster = start_process(["qcluster"], env)
    yield cluster
    # Ctrl-C reaches the whole group in a terminal; the dispatcher stops gracefully on it.
    stop_process(cluster, signal.SIGINT)


def dispatcher_alive() -> bool:
    recent = timezone.now() - timedelta(seconds=2)
    return DispatcherSlot.objects.filter(heartbeat_at__gte=recent).exists()


def test_q2_cluster_starts_mailings_on_time_with_no_one_acting(provider, q2_cluster):
    make_clients(20)
    wait_for(dispatcher_alive, timeout=30, interval=0.1)

    created_at = timezone.now()
    services.create_mailing(start_at=created_at, end_at=now_plus(60), text="Now")
    wait_for(lambda: provider.recorder.unique_accepted >= 1, timeout=10)
    first = min(provider.recorder.first_arrived_at().values())
    assert first - created_at.timestamp() < 2.0, "first message later than 2 s after creation"

    start_at = now_plus(3)
    later = services.create_mailing(start_at=start_at, end_at=now_plus(60), text="Later")
    later_ids = set(Message.objects.filter(mailing=later).values_list("id", flat=True))
    assert later_ids == set()  # nothing before its start
    wait_for(lambda: Mailing.objects.get(pk=later.pk).status == MailingStatus.FINISHED, 20)
    later_ids = set(Message.objects.filter(mailing=later).values_list("id", flat=True))
    first_times = provider.recorder.first_arrived_at()
    first_later = min(first_times[i] for i in later_ids)
    delay = first_later - start_at.timestamp()
    assert 0 <= delay < 2.0, f"future mailing's first message {delay:.2f} s after start_at"
    assert provider.recorder.unique_accepted == 40 and provider.recorder.duplicates() == {}


def run_dispatchers(provider, count: int, seconds: float, **extra: str) -> list[ChildProcess]:
    env = worker_env(provider, **extra)
    return [
        start_process(["dispatch", "--seconds", str(seconds), "--worker-id", f"w{n}"], env)
        for n in range(count)
    ]


def outcomes_of(processes: list[ChildProcess]) -> list[dict]:
    reports = []
    for process in processes:
        out, err = stop_process(process)
        assert process.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@needs_postgres()
def test_two_workers_never_send_the_same_message(provider):
    make_clients(10_000)
    provider.update_config(latency_ms=5)
    mailing = services.create_mailing(
        start_at=timezone.now(), end_at=now_plus(600), text="Parallel"
    )
    workers = run_dispatchers(provider, 2, seconds=300)
    wait_for(
        lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED,
        timeout=240,
        interval=0.5,
    )
    reports = outcomes_of(workers)
    assert provider.recorder.unique_accepted == 10_000
    assert provider.recorder.duplicates() == {}
    assert provider.recorder.accepted == 10_000
    # Both workers really took part.
    assert all(report["outcomes"].get("accepted", 0) > 500 for report in reports), reports
    assert sum(report["outcomes"]["accepted"] for report in reports) == 10_000


def test_send_rate_limit_holds_across_workers(provider):
    make_clients(120)
    rate = 20
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(120), text="Slow")
    workers = run_dispatchers(provider, 2, seconds=120, SEND_RATE_LIMIT=str(rate))
    wait_for(
        lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED,
        timeout=60,
        interval=0.2,
    )
    outcomes_of(workers)
    # When each request reached the stand-in: what the rate limit governs.
    times = sorted(provider.recorder.first_arrived_at().values())
    assert len(times) == 120
    burst = rate * 0.5
    # In every one-second window: at most a second's worth plus the bucket's burst.
    for index, started in enumerate(times):
        within = sum(1 for t in times[index:] if t < started + 1.0)
        assert within <= rate + burst + 1, f"{within} sends in one second"
    assert times[-1] - times[0] >= (120 - burst) / rate - 0.5


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False


def test_run_stack_starts_everything_and_ctrl_c_stops_it_all():
    # Every port it binds is a free one: a `make run` may be up on the defaults.
    web_port, probe_port, oidc_port = free_port(), free_port(), free_port()
    stack = start_process(
        [
            "run_stack",
            *("--port", str(web_port), "--probe-port", str(probe_port)),
            *("--oidc-port", str(oidc_port)),
        ],
        # As make run starts it: DEBUG on, the development tokens and identity provider.
        subprocess_env(DEBUG="1", Q_CLUSTER_NAME=f"test-{uuid.uuid4().hex[:8]}", Q_WORKERS="2"),
    )
    with stack:
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{web_port}/api/v1/openapi.json"), 60, 0.2)
            wait_for(lambda: answers(f"http://127.0.0.1:{probe_port}/_admin/stats"), 30, 0.2)
            oidc = f"http://127.0.0.1:{oidc_port}/.well-known/openid-configuration"
            wait_for(lambda: answers(oidc), 30, 0.2)
            wait_for(dispatcher_alive, 30, 0.2)
            children = descendants(stack.pid)
            # web, q2 (sentinel, workers), the stand-in and the OIDC provider, at least.
            assert len(children) >= 5, children
        finally:
            _out, err = stop_process(stack, signal.SIGINT)
    assert stack.returncode == 0, err[-3000:]
    assert "did not stop in time" not in err
    assert [pid for pid in children if alive(pid)] == []


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children in sessions of their own included)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_redis()
def test_q2_uses_redis_as_broker_when_redis_url_is_set():
    from django_q.brokers import get_broker
    from django_q.brokers.redis_broker import Redis

    broker = get_broker(f"test-{uuid.uuid4().hex[:8]}")
    assert isinstance(broker, Redis)
    assert broker.ping()
    broker.enqueue("probe")
    assert broker.queue_size() == 1
    broker.delete_queue()
