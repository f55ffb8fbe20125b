from django.apps import AppConfig


class DispatcherRuntimeConfig(AppConfig):
    """Listed before django_q in INSTALLED_APPS, so that its ``qcluster`` command (q2's,
    with the dispatchers beside it) is the one ``manage.py qcluster`` runs."""

    name = "mailing.engine.runtime"
    label = "dispatcher_runtime"
    verbose_name = "Dispatcher runtime"
