from __future__ import annotations

import copy

import django_tables2 as tables
from django.http import HttpRequest, QueryDict
from django.utils.html import format_html
from django_tables2 import A, RequestConfig

from dashboard.templatetags.badges import status_badge
from mailing.models import Client, Mailing, Message
from mailing.rules import UI_PAGE_MAX, UI_PAGE_SIZE


def configure(request: HttpRequest, table: tables.Table, per_page: int = UI_PAGE_SIZE) -> None:
    """Sort and paginate a table from the query string, with ``per_page`` kept within
    1..UI_PAGE_MAX whatever the query asks (?per_page=1000000 gives UI_PAGE_MAX rows)."""
    query = request.GET.copy()
    field = table.prefixed_per_page_field
    try:
        asked = int(query.get(field, per_page))
    except ValueError:
        asked = per_page
    query[field] = str(min(max(asked, 1), UI_PAGE_MAX))
    bounded = copy.copy(request)
    bounded.GET = QueryDict(query.urlencode())  # (immutable, like any request's)
    RequestConfig(bounded, paginate={"per_page": per_page}).configure(table)
    table.request = request  # links keep the query as it was written


class StatusColumn(tables.Column):
    def render(self, value):
        return status_badge(value)


class MailingTable(tables.Table):
    id = tables.Column(verbose_name="#")
    name = tables.Column(linkify=("dashboard:mailing_detail", [tables.A("pk")]))
    status = StatusColumn()
    text = tables.Column(orderable=False)
    start_at = tables.DateTimeColumn(verbose_name="Start", format="j M Y, H:i")
    end_at = tables.DateTimeColumn(verbose_name="End", format="j M Y, H:i")
    total = tables.Column(verbose_name="Audience")
    progress = tables.Column(empty_values=(), orderable=False, verbose_name="Done")

    class Meta:
        model = Mailing
        fields = ("id", "name", "status", "text", "start_at", "end_at", "total", "sent", "failed")
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


class SelectColumn(tables.CheckBoxColumn):
    """A checkbox per row for the bulk form (``form="bulk"``: the table need not be inside
    it); the header's box selects the page's rows when JavaScript runs."""

    def __init__(self, **kwargs):
        attrs = {"th__input": {"data-select-all": "ids", "aria-label": "Select every row shown"}}
        super().__init__(accessor="pk", attrs=attrs, **kwargs)

    def render(self, value, bound_column, record):
        return format_html(
            '<input type="checkbox" name="ids" value="{}" form="bulk" aria-label="Select {}">',
            value,
            record,
        )


class ClientTable(tables.Table):
    selected = SelectColumn()
    id = tables.Column(verbose_name="#")
    created_at = tables.DateTimeColumn(verbose_name="Added", format="j M Y, H:i")
    actions = tables.TemplateColumn(
        template_name="dashboard/clients/_actions.html", orderable=False, verbose_name=""
    )

    class Meta:
        model = Client
        fields = ("selected", "id", "phone", "operator_code", "tag", "timezone", "created_at")
        order_by = ("-id",)
        attrs = {"class": "table"}
        empty_text = "No client matches. Change the filter, add a client or import a CSV file."


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
