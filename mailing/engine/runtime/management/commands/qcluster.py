"""``manage.py qcluster``: django-q2's cluster, with DISPATCHER_SLOTS dispatchers beside it
(see mailing/engine/runtime/README.md)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django_q.management.commands.qcluster import Command as Q2ClusterCommand

from mailing.engine.runtime.worker import run_worker


class Command(Q2ClusterCommand):
    help = (
        "Starts a django-q2 cluster and DISPATCHER_SLOTS dispatchers beside it; SIGTERM or "
        "SIGINT stops both within DISPATCHER_STOP_SECONDS plus a few seconds."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        settings.SECRET_KEY  # noqa: B018  (as q2: refuse to start without a signing key)
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        status = run_worker(run_once=options.get("run_once", False))
        if status:
            raise SystemExit(status)
