from __future__ import annotations

import django_tables2 as tables
from django.utils.html import format_html
from django_tables2 import A

from dashboard.templatetags.badges import status_badge
from mailing.models import Client, Mailing, Message


class StatusColumn(tables.Column):
    def render(self, value):
        return status_badge(value)


class MailingTable(tables.Table):
    id = tables.Column(linkify=("dashboard:mailing_detail", [tables.A("pk")]), verbose_name="#")
    status = StatusColumn()
    text = tables.Column(orderable=False)
    start_at = tables.DateTimeColumn(verbose_name="Start", format="j M Y, H:i")
    end_at = tables.DateTimeColumn(verbose_name="End", format="j M Y, H:i")
    total = tables.Column(verbose_name="Audience")
    progress = tables.Column(empty_values=(), orderable=False, verbose_name="Done")

    class Meta:
        model = Mailing
        fields = ("id", "status", "text", "start_at", "end_at", "total", "sent", "failed")
        order_by = ("-id",)
        attrs = {"class": "table"}

    def render_text(self, value):
        return value if len(value) <= 60 else value[:57] + "…"

    def render_progress(self, record):
        return format_html(
            '<progress max="1" value="{}" aria-label="{}% done"></progress> {}%',
            record.progress,
            record.progress_percent,
            record.progress_percent,
        )


class ClientTable(tables.Table):
    id = tables.Column(verbose_name="#")
    actions = tables.TemplateColumn(
        template_name="dashboard/clients/_actions.html", orderable=False, verbose_name=""
    )

    class Meta:
        model = Client
        fields = ("id", "phone", "operator_code", "tag", "timezone")
        order_by = ("id",)
        attrs = {"class": "table"}


class MessageTable(tables.Table):
    id = tables.Column(verbose_name="Message", linkify=("dashboard:message_detail", [A("pk")]))
    status = StatusColumn()
    sent_at = tables.DateTimeColumn(format="j M Y, H:i:s")
    last_error = tables.Column(verbose_name="Last error", orderable=False)

    class Meta:
        model = Message
        fields = ("id", "phone", "status", "attempts", "sent_at", "last_error")
        order_by = ("id",)
        attrs = {"class": "table"}
