"""The worker process (``manage.py qcluster``): the q2 cluster and the dispatcher
supervisor side by side, started together and stopped together.

SIGTERM or SIGINT (``docker stop``, Kubernetes, Ctrl-C) only sets a flag; the main thread
then asks the dispatchers to stop, stops the q2 cluster meanwhile, and waits for the
dispatchers (bounded by DISPATCHER_STOP_SECONDS, then they are killed). Stopping the q2
cluster is bounded by the same time (see ``stop_cluster``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from django.conf import settings
from django_q.cluster import Cluster

from mailing.engine.runtime.supervisor import DispatcherSupervisor

logger = logging.getLogger("mailing.engine")


def run_worker(*, run_once: bool = False) -> int:
    """Run until signalled (or at once stop, with ``run_once``); the exit status."""
    stop = threading.Event()
    cluster = Cluster()
    # Replaces q2's handlers, which would stop the cluster inside the signal handler and
    # know nothing of the dispatchers.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster.start()
    stop_seconds = settings.DISPATCHER_STOP_SECONDS + 3
    supervisor = DispatcherSupervisor(settings.DISPATCHER_SLOTS, stop_seconds=stop_seconds).start()
    status = 0
    try:
        while not run_once and not stop.wait(0.5):
            if not cluster.sentinel.is_alive():
                logger.error("the q2 sentinel died; stopping the worker")
                status = 1
                break
    finally:
        supervisor.stop()
        stop_cluster(cluster, stop_seconds)
        supervisor.join()
    return status


def stop_cluster(cluster: Cluster, timeout: float) -> None:
    """``cluster.stop()``, bounded: done once the sentinel has exited, or ``timeout`` passed
    (then the sentinel is killed).

    q2's stop sets an event the sentinel waits on and then joins it. When the whole process
    group got the signal (``kill -TERM -<pgid>``, systemd's default, an init that forwards
    to the group), the sentinel has already died of it, in the middle of that wait, and
    setting the event then blocks for ever (multiprocessing's condition waits for the dead
    waiter to wake). So the stop runs in a daemon thread and the sentinel is watched instead.
    """
    stopper = threading.Thread(target=cluster.stop, name="q2-cluster-stop", daemon=True)
    stopper.start()
    deadline = time.monotonic() + timeout
    while stopper.is_alive() and cluster.sentinel.is_alive():
        if time.monotonic() >= deadline:
            logger.error("the q2 sentinel did not stop within %.0f s; killed", timeout)
            cluster.sentinel.kill()
            break
        stopper.join(0.1)
    cluster.sentinel.join(1.0)
