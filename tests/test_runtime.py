"""Keeping dispatchers alive (mailing/engine/runtime/): the supervisor on stand-in child
processes, and a real qcluster whose dispatcher is killed."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from mailing import services
from mailing.engine.runtime.supervisor import POLL_SECONDS, DispatcherSupervisor
from mailing.models import DispatcherSlot, Mailing, MailingStatus, Message, MessageStatus
from tests.conftest import ChildProcess, make_clients, now_plus, wait_for
from tests.test_resilience import save_figures
from tests.test_workers import alive, descendants, start_process, stop_process, worker_env

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# Ignores SIGTERM, as a dispatcher stuck in a call would not answer it in time.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
]


def test_supervisor_keeps_its_count_running_and_replaces_a_dead_one():
    supervisor = DispatcherSupervisor(2, stop_seconds=5, command=SLEEPER).start()
    try:
        first = wait_for(lambda: len(supervisor.pids()) == 2 and supervisor.pids(), 10)
        os.kill(first[0], signal.SIGKILL)

        def replaced() -> list[int]:
            pids = supervisor.pids()
            return pids if len(pids) == 2 and first[0] not in pids else []

        now_running = wait_for(replaced, 10)
        assert first[1] in now_running
    finally:
        supervisor.stop()
        supervisor.join()
    assert supervisor.pids() == []
    assert not any(alive(pid) for pid in [*first, *now_running])


def test_supervisor_stop_is_bounded_even_for_a_child_that_ignores_sigterm():
    supervisor = DispatcherSupervisor(1, stop_seconds=1.0, command=STUBBORN).start()
    (pid,) = wait_for(lambda: supervisor.pids(), 10)
    wait_for(lambda: ignores_sigterm(pid), 10)  # the child has installed its handler
    stopping = time.monotonic()
    supervisor.stop()
    supervisor.join()
    took = time.monotonic() - stopping
    assert not alive(pid)
    assert 1.0 <= took < 4.0, took


def ignores_sigterm(pid: int) -> bool:
    """Whether ``pid`` ignores SIGTERM, from the kernel's own record of its signals."""
    status = Path(f"/proc/{pid}/status").read_text()
    (mask,) = (line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def test_supervisor_with_no_dispatchers_starts_nothing():
    before = descendants(os.getpid())
    supervisor = DispatcherSupervisor(0, stop_seconds=1.0, command=SLEEPER).start()
    # Absence can only be watched for a while: two of the supervisor's polls.
    supervisor_polled = time.monotonic() + 2 * POLL_SECONDS
    wait_for(lambda: time.monotonic() >= supervisor_polled, 5)
    assert supervisor.pids() == []
    assert descendants(os.getpid()) - before == set()
    supervisor.stop()
    supervisor.join()


def dispatcher_pids() -> set[int]:
    """Live dispatchers by their slot rows (a worker id is host:pid:random)."""
    recent = timezone.now() - timedelta(seconds=2)
    owners = DispatcherSlot.objects.filter(heartbeat_at__gte=recent, lease_until__isnull=False)
    return {int(owner.split(":")[1]) for owner in owners.values_list("owner", flat=True)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_qcluster_replaces_a_killed_dispatcher_and_loses_nothing(provider):
    make_clients(600)
    provider.update_config(latency_ms=100)
    env = worker_env(
        provider,
        Q_CLUSTER_NAME=f"test-{uuid.uuid4().hex[:8]}",
        Q_WORKERS="1",
        DISPATCHER_SLOTS="1",
        CLAIM_LEASE_SECONDS="3",
        SEND_CONCURRENCY="20",
    )
    cluster = start_process(["qcluster"], env)
    with cluster:
        try:
            (victim,) = wait_for(dispatcher_pids, 30, 0.1)
            mailing = services.create_mailing(
                start_at=timezone.now(), end_at=now_plus(300), text="Replace"
            )
            wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent >= 50, 30, 0.1)
            os.kill(victim, signal.SIGKILL)
            in_flight = set(
                Message.objects.filter(
                    mailing=mailing, status=MessageStatus.PENDING, claimed_by__isnull=False
                ).values_list("id", flat=True)
            )
            (successor,) = wait_for(lambda: dispatcher_pids() - {victim}, 30, 0.1)
            assert successor != victim
            wait_for(
                lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 90, 0.2
            )
        finally:
            stop_process(cluster, signal.SIGINT)
    mailing.refresh_from_db()
    assert mailing.sent == 600
    assert set(provider.recorder.duplicates()) <= in_flight
    assert set(provider.recorder.first_accepted_at()) == set(
        Message.objects.filter(mailing=mailing).values_list("id", flat=True)
    )


def claimed_messages(mailing: Mailing) -> int:
    """Pending messages some dispatcher still holds."""
    return Message.objects.filter(
        mailing=mailing, status=MessageStatus.PENDING, claimed_by__isnull=False
    ).count()


def seconds_until_exit(process: ChildProcess, timeout: float) -> float:
    """Seconds from now until ``process`` exits (fails the test at ``timeout``)."""
    started = time.monotonic()
    wait_for(lambda: process.poll() is not None, timeout, 0.01)
    return time.monotonic() - started


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.parametrize(
    "to_group",
    # `docker stop` and Kubernetes signal the main process; systemd and `kill -TERM -<pgid>`
    # signal every process of the tree at once.
    [False, True],
    ids=["main-process", "process-group"],
)
def test_sigterm_stops_the_worker_within_10_s_and_a_restart_sends_the_rest(provider, to_group):
    make_clients(1500)
    provider.update_config(latency_ms=100)
    env = worker_env(
        provider,
        Q_CLUSTER_NAME=f"test-{uuid.uuid4().hex[:8]}",
        Q_WORKERS="1",
        DISPATCHER_SLOTS="2",
        # A long lease: a claim left behind would hold its message for a minute.
        CLAIM_LEASE_SECONDS="60",
        SEND_CONCURRENCY="20",
    )
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="Stop")
    with start_process(["qcluster"], env) as cluster:
        try:
            wait_for(lambda: len(dispatcher_pids()) == 2, 30, 0.1)
            wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent >= 200, 60, 0.1)
            children = descendants(cluster.pid)
            (os.killpg if to_group else os.kill)(cluster.pid, signal.SIGTERM)
            took = seconds_until_exit(cluster, 30)
        finally:
            _out, err = stop_process(cluster, signal.SIGKILL)
    assert took < 10.0, f"the worker took {took:.1f} s to stop:\n{err[-3000:]}"
    assert cluster.returncode == 0, err[-3000:]
    assert len(children) >= 4  # the sentinel, its q2 processes, the dispatchers
    assert [pid for pid in children if alive(pid)] == []
    # Everything in flight was recorded or handed back: nothing waits out a lease.
    assert claimed_messages(mailing) == 0
    assert 0 < Mailing.objects.get(pk=mailing.pk).sent < 1500

    with start_process(["qcluster"], env) as successor:
        try:
            wait_for(
                lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 60, 0.2
            )
        finally:
            stop_process(successor, signal.SIGINT)
    mailing.refresh_from_db()
    assert mailing.sent == 1500
    assert provider.recorder.unique_accepted == 1500
    # A clean stop loses no answer, so nothing was delivered twice.
    assert provider.recorder.duplicates() == {}
    save_figures(f"sigterm-worker-{'group' if to_group else 'main'}", {"stop_seconds": took})


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_sigkill_of_the_whole_qcluster_tree_loses_nothing(provider):
    make_clients(1000)
    provider.update_config(latency_ms=100)
    env = worker_env(
        provider,
        Q_CLUSTER_NAME=f"test-{uuid.uuid4().hex[:8]}",
        Q_WORKERS="1",
        DISPATCHER_SLOTS="2",
        CLAIM_LEASE_SECONDS="3",
        SEND_CONCURRENCY="20",
    )
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="OOM")
    with start_process(["qcluster"], env) as cluster:
        wait_for(lambda: len(dispatcher_pids()) == 2, 30, 0.1)
        wait_for(lambda: Mailing.objects.get(pk=mailing.pk).sent >= 100, 60, 0.1)
        tree = descendants(cluster.pid)
        # As an OOM kill of the container: sentinel, q2 workers and dispatchers at once.
        os.killpg(cluster.pid, signal.SIGKILL)
        seconds_until_exit(cluster, 10)
        wait_for(lambda: not any(alive(pid) for pid in tree), 10)
    in_flight = set(
        Message.objects.filter(
            mailing=mailing, status=MessageStatus.PENDING, claimed_by__isnull=False
        ).values_list("id", flat=True)
    )
    assert in_flight, "the kill should have caught messages in flight"

    with start_process(["qcluster"], env) as successor:
        try:
            wait_for(
                lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 90, 0.2
            )
        finally:
            stop_process(successor, signal.SIGINT)
    mailing.refresh_from_db()
    assert mailing.sent == 1000
    assert set(provider.recorder.first_accepted_at()) == set(
        Message.objects.filter(mailing=mailing).values_list("id", flat=True)
    )
    # At-least-once, bounded: only what was in flight at the kill was delivered twice.
    duplicates = provider.recorder.duplicates()
    assert set(duplicates) <= in_flight
    save_figures(
        "qcluster-tree-killed",
        {"messages": 1000, "in_flight_at_kill": len(in_flight), "delivered_twice": len(duplicates)},
    )
