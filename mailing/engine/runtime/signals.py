"""Hooks that start dispatchers: the keeper schedule after migrations, dispatchers as q2
workers start."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.db.models.signals import post_migrate
from django.dispatch import receiver
from django_q.signals import post_spawn

logger = logging.getLogger("mailing.engine")


@receiver(post_migrate)
def create_keeper_schedule(sender, app_config=None, **kwargs) -> None:
    if app_config is not None and app_config.label == "mailing":
        from mailing.engine.runtime.tasks import ensure_schedule

        ensure_schedule()


@receiver(post_spawn)
def start_dispatchers_with_worker(sender, proc_name=None, **kwargs) -> None:
    # The q2 scheduler first runs 30 s after the cluster starts; starting here gives seconds.
    from mailing.engine.runtime.tasks import ensure_dispatchers

    try:
        ensure_dispatchers()
    except DatabaseError:
        logger.exception("could not enqueue dispatchers at worker start")
