"""The worker process (``manage.py qcluster``): the q2 cluster and the dispatcher
supervisor side by side, started together and stopped together.

SIGTERM or SIGINT (``docker stop``, Kubernetes, Ctrl-C) only sets a flag; the main thread
then asks the dispatchers to stop, stops the q2 cluster meanwhile, and waits for the
dispatchers (bounded by DISPATCHER_STOP_SECONDS, then they are killed).
"""

from __future__ import annotations

import logging
import signal
import threading

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
    supervisor = DispatcherSupervisor(
        settings.DISPATCHER_SLOTS, stop_seconds=settings.DISPATCHER_STOP_SECONDS + 3
    ).start()
    status = 0
    try:
        while not run_once and not stop.wait(0.5):
            if not cluster.sentinel.is_alive():
                logger.error("the q2 sentinel died; stopping the worker")
                status = 1
                break
    finally:
        supervisor.stop()
        cluster.stop()
        supervisor.join()
    return status
