from django.apps import AppConfig


class MailingConfig(AppConfig):
    name = "mailing"
    verbose_name = "Mailings"

    def ready(self) -> None:
        from mailing import signals  # noqa: F401  (connects the report schedule hook)
