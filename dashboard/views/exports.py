"""CSV downloads, with cells a spreadsheet will not run as formulas."""

from __future__ import annotations

import csv

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from dashboard.views.common import staff_required
from mailing.models import Mailing, Message

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value) -> str:
    """A cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


@staff_required
@require_GET
def mailing_export(request, pk: int):
    mailing = get_object_or_404(Mailing, pk=pk)
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
    rows = Message.objects.filter(mailing=mailing).order_by("id").values_list(*columns)
    writer = csv.writer(_Echo())

    def stream():
        yield writer.writerow(columns)
        for row in rows.iterator(chunk_size=2000):
            yield writer.writerow(
                [csv_safe(v.isoformat() if hasattr(v, "isoformat") else v) for v in row]
            )

    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="mailing-{mailing.pk}-messages.csv"'
    return response
