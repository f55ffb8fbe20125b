"""One message: its details and timeline."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard.views.common import staff_required
from mailing import selectors


@staff_required
@require_GET
def message_detail(request, pk: int):
    message = get_object_or_404(selectors.messages_with_mailing(), pk=pk)
    events = selectors.latest_events(selectors.events_for(message_id=message.pk))
    return render(request, "dashboard/messages/detail.html", {"message": message, "events": events})
