"""CSV downloads, with cells a spreadsheet will not run as formulas."""

from __future__ import annotations

import csv

from django.http import StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET

from dashboard.filters import filter_query, filtered_clients
from dashboard.views.common import staff_required
from mailing import selectors

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value) -> str:
    """A cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_response(columns: tuple[str, ...], rows, filename: str) -> StreamingHttpResponse:
    """Rows streamed as CSV (a million rows never sit in memory), formula-safe cells."""
    writer = csv.writer(_Echo())

    def stream():
        yield writer.writerow(columns)
        for row in rows.iterator(chunk_size=2000):
            yield writer.writerow(
                [csv_safe(v.isoformat() if hasattr(v, "isoformat") else v) for v in row]
            )

    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@staff_required
@require_GET
def client_export(request):
    """The clients the list's filter matches, as CSV."""
    filterset, clients = filtered_clients(request.GET)
    if not filterset.is_valid():
        # The list page words what is wrong with the filter.
        return redirect(reverse("dashboard:client_list") + "?" + filter_query(request.GET))
    columns = ("id", "phone", "operator_code", "tag", "timezone", "created_at")
    rows = clients.order_by("-id").values_list(*columns)
    return _csv_response(columns, rows, "clients.csv")


@staff_required
@require_GET
def mailing_export(request, pk: int):
    mailing = selectors.get_mailing(pk)
    columns = (
        "id",
        "client_id",
        "phone",
        "status",
        "created_at",
        "sent_at",
        "attempts",
        "last_error",
    )
    rows = selectors.message_rows(mailing, columns)
    return _csv_response(columns, rows, f"mailing-{mailing.pk}-messages.csv")


@staff_required
@require_GET
def client_import_errors(request, pk: int):
    """Every invalid row of an import, with its line and reason."""
    record = selectors.get_client_import(pk)
    columns = ("line", "phone", "reason")
    rows = selectors.client_import_errors(record).values_list(*columns)
    return _csv_response(columns, rows, f"client-import-{record.pk}-errors.csv")
