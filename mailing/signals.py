"""Hooks: the schedules (daily report, purge of deleted mailings) after migrations."""

from __future__ import annotations

from django.db.models.signals import post_migrate
from django.dispatch import receiver


@receiver(post_migrate)
def create_report_schedule(sender, app_config=None, **kwargs) -> None:
    if app_config is not None and app_config.label == "mailing":
        from mailing import cleanup, reports

        reports.ensure_schedule()
        cleanup.ensure_schedules()
