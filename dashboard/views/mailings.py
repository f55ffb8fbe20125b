"""Mailings: list, create, edit, audience preview, detail with live progress, actions."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import forms as ui_forms
from dashboard.filters import MailingFilter, MessageFilter
from dashboard.tables import MailingTable, MessageTable, configure
from dashboard.views.common import redirect_page, staff_required
from mailing import rules, segments, selectors, services
from mailing.actors import Actor
from mailing.engine import test_send
from mailing.models import Mailing
from mailing.rules import TEXT_MAX_LENGTH, Action, EmptySendWindow, StateConflict


@staff_required
@require_GET
def mailing_list(request):
    filterset = MailingFilter(request.GET, queryset=selectors.list_mailings())
    table = MailingTable(filterset.qs)
    configure(request, table)
    return render(request, "dashboard/mailings/list.html", {"filter": filterset, "table": table})


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_create(request):
    if request.method == "POST":
        form = ui_forms.MailingForm(request.POST)
        if form.is_valid():
            try:
                # The form only ever writes a draft: sending is a separate, confirmed step.
                mailing = services.create_mailing(
                    actor=Actor.of_request(request), draft=True, **form.service_arguments()
                )
            except ValidationError as error:
                ui_forms.apply_service_errors(form, error, form.ALIASES)
            else:
                messages.success(request, f"Draft “{mailing.name}” saved. Nothing is sent yet.")
                return redirect("dashboard:mailing_check", pk=mailing.pk)
    else:
        now = timezone.localtime().replace(second=0, microsecond=0)
        form = ui_forms.MailingForm(initial={"start_at": now, "end_at": now + timedelta(days=1)})
    return render(request, "dashboard/mailings/form.html", {"form": form, "mailing": None})


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_edit(request, pk: int):
    mailing = selectors.get_mailing(pk)
    form = ui_forms.MailingForm(
        request.POST or None,
        initial=ui_forms.MailingForm.initial_of(mailing),
        editable=mailing.editable_fields,
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.update_mailing(mailing, actor=Actor.of_request(request), **form.changes())
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, form.ALIASES)
        except StateConflict as conflict:
            form.add_error(None, str(conflict))
        else:
            messages.success(request, f"Mailing “{mailing.name}” saved.")
            return redirect("dashboard:mailing_detail", pk=mailing.pk)
    return render(request, "dashboard/mailings/form.html", {"form": form, "mailing": mailing})


@staff_required
@require_POST
def mailing_preview(request):
    form = ui_forms.PreviewForm(request.POST)
    form.is_valid()  # lenient: whatever parsed is used
    data = form.cleaned_data
    window = None
    if data.get("window_start") and data.get("window_end"):
        try:
            window = rules.SendWindow(data["window_start"], data["window_end"])
        except EmptySendWindow:
            return render(
                request, "dashboard/mailings/_preview.html", {"window_error": rules.EMPTY_WINDOW}
            )
    preview = selectors.preview_audience(
        operator_codes=list(data.get("operator_codes") or []),
        tags=list(data.get("tags") or []),
        window=window,
        start_at=data.get("start_at"),
        end_at=data.get("end_at"),
    )
    return render(
        request, "dashboard/mailings/_preview.html", {"preview": preview, "window": window}
    )


@staff_required
@require_POST
def mailing_segments(request):
    """The editor's live count: characters, encoding and SMS parts of the text typed."""
    text = request.POST.get("text", "")[:TEXT_MAX_LENGTH]
    return render(request, "dashboard/mailings/_segments.html", {"counted": segments.count(text)})


def duration_text(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _progress_context(request, mailing: Mailing) -> dict:
    """Counters plus send rate and time left, from the previous snapshot the poll carried."""
    stats = selectors.mailing_stats(mailing)
    counters = stats["stats"]
    done = mailing.settled
    now_t = time.time()
    rate: float | None = None
    prev_t: float | None
    prev_done: int | None
    try:
        prev_t = float(request.GET.get("t", ""))
        prev_done = int(request.GET.get("done", ""))
        prev_rate = request.GET.get("rate", "")
    except ValueError:
        prev_t = prev_done = None
        prev_rate = ""
    if (
        prev_t is not None
        and prev_done is not None
        and 0 < now_t - prev_t < 600
        and done >= prev_done
    ):
        rate = (done - prev_done) / (now_t - prev_t)
        with contextlib.suppress(ValueError):  # smooth: the rate is noisy between polls
            rate = 0.5 * rate + 0.5 * float(prev_rate) if prev_rate else rate
    time_left = None
    if rate and rate > 0 and counters["pending"]:
        time_left = duration_text(counters["pending"] / rate)
    return {
        "mailing": mailing,
        "stats": stats,
        "counters": counters,
        "done": done,
        "rate": rate,
        "time_left": time_left,
        "snapshot": json.dumps(
            {"t": f"{now_t:.3f}", "done": str(done), "rate": "" if rate is None else f"{rate:.3f}"}
        ),
    }


@staff_required
@require_GET
def mailing_detail(request, pk: int):
    mailing = selectors.get_mailing(pk)
    filterset = MessageFilter(request.GET, queryset=selectors.list_messages(mailing))
    table = MessageTable(filterset.qs)
    configure(request, table)
    return render(
        request,
        "dashboard/mailings/detail.html",
        {
            "filter": filterset,
            "table": table,
            "events": selectors.latest_events(selectors.events_for(mailing_id=mailing.pk)),
            "resends": selectors.resends_of(mailing),
            **_progress_context(request, mailing),
        },
    )


@staff_required
@require_GET
def mailing_progress(request, pk: int):
    mailing = selectors.get_mailing(pk)
    return render(request, "dashboard/mailings/_progress.html", _progress_context(request, mailing))


def _starts_text(review: dict, zone_name: str) -> str:
    """ "now", or "in 2 h 10 min, at 09:00 Europe/Moscow" (with the date when not today)."""
    if review["starts_now"]:
        return "now"
    local = timezone.localtime(review["starts_at"])
    at = local.strftime("%H:%M")
    if local.date() != timezone.localdate():
        at = local.strftime("%-d %b %Y, %H:%M")
    return f"in {duration_text(review['starts_in_seconds'])}, at {at} {zone_name}"


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_check(request, pk: int):
    """Check and send: what a draft will do, and the one button that launches it."""
    mailing = selectors.get_mailing(pk)
    if not mailing.can.get(Action.LAUNCH):
        messages.info(request, f"“{mailing.name}” is {mailing.status}: there is nothing to send.")
        return redirect("dashboard:mailing_detail", pk=mailing.pk)
    review = selectors.launch_review(mailing)
    form = ui_forms.LaunchForm(
        request.POST if request.method == "POST" else None,
        initial={"audience": review["reachable"]},
        reachable=review["reachable"],
        typed=review["typed_confirmation"],
    )
    if request.method == "POST" and request.POST.get("send") == "1" and form.is_valid():
        try:
            services.launch_mailing(mailing, actor=Actor.of_request(request))
        except StateConflict as conflict:
            form.add_error(None, str(conflict))
        else:
            messages.success(
                request, f"“{mailing.name}” launched to {review['reachable']:,} clients."
            )
            return redirect("dashboard:mailing_detail", pk=mailing.pk)
    context = {
        "mailing": mailing,
        "review": review,
        "form": form,
        "test_form": ui_forms.TestSendForm(
            initial={"phone": selectors.last_test_phone(request.user.pk)}
        ),
        "starts": _starts_text(review, str(timezone.get_current_timezone())),
        "duration": (
            duration_text(review["duration_seconds"])
            if review["duration_seconds"] is not None
            else None
        ),
    }
    return render(request, "dashboard/mailings/check.html", context)


@staff_required
@require_POST
def mailing_clone(request, pk: int):
    copy = services.clone_mailing(selectors.get_mailing(pk), actor=Actor.of_request(request))
    messages.success(request, f"Draft “{copy.name}” created; nothing is sent yet.")
    return redirect("dashboard:mailing_edit", pk=copy.pk)


@staff_required
@require_POST
def mailing_resend(request, pk: int):
    """The button of a finished or cancelled mailing: a draft to its failed and expired."""
    try:
        copy = services.resend_mailing(
            selectors.get_mailing(pk),
            statuses=request.POST.getlist("statuses"),
            actor=Actor.of_request(request),
        )
    except ValidationError as invalid:
        messages.error(request, "; ".join(invalid.messages))
        return redirect("dashboard:mailing_detail", pk=pk)
    except StateConflict as conflict:
        messages.error(request, str(conflict))
        return redirect("dashboard:mailing_detail", pk=pk)
    messages.success(request, f"Draft “{copy.name}” created; nothing is sent yet.")
    return redirect("dashboard:mailing_check", pk=copy.pk)


@staff_required
@require_POST
def mailing_test_send(request, pk: int):
    """The check page's test box: one text to one phone, its outcome shown in place."""
    mailing = selectors.get_mailing(pk)
    form = ui_forms.TestSendForm(request.POST)
    result = None
    if form.is_valid():
        try:
            result = test_send.send_test(
                mailing, phone=form.cleaned_data["phone"], actor=Actor.of_request(request)
            )
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, {})
        except (StateConflict, rules.TooManyRequests) as refused:
            form.add_error(None, str(refused))
    return render(
        request,
        "dashboard/mailings/_test_send.html",
        {"mailing": mailing, "test_form": form, "result": result},
    )


# The state-changing actions of the detail page: the service, the button, what follows.
ACTIONS = {
    Action.PAUSE: (services.pause_mailing, "Pause", "New sends stop until you resume it."),
    Action.RESUME: (services.resume_mailing, "Resume", "Sending continues."),
    Action.CANCEL: (
        services.cancel_mailing,
        "Cancel",
        "Its pending messages are cancelled. This cannot be undone.",
    ),
}


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_action(request, pk: int, action: str):
    if action not in ACTIONS:
        raise Http404
    mailing = selectors.get_mailing(pk)
    operation, verb, consequence = ACTIONS[Action(action)]
    detail_url = reverse("dashboard:mailing_detail", kwargs={"pk": mailing.pk})
    if request.method == "GET":  # the confirmation page (works without JavaScript)
        return render(
            request,
            "dashboard/confirm.html",
            {
                "title": f"{verb} mailing {mailing.pk}?",
                "consequence": consequence,
                "action_url": request.path,
                "verb": verb,
                "back_url": detail_url,
                "danger": action == Action.CANCEL,
            },
        )
    try:
        operation(mailing, actor=Actor.of_request(request))
    except StateConflict as conflict:
        messages.error(request, str(conflict))
    else:
        messages.success(request, f"Mailing {mailing.pk} {rules.ACTION_DONE[Action(action)]}.")
    return redirect_page(request, detail_url)


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_delete(request, pk: int):
    mailing = selectors.get_mailing(pk)
    if request.method == "POST":
        services.delete_mailing(mailing, actor=Actor.of_request(request))
        messages.success(
            request,
            f"Mailing {pk} deleted: it is gone from the lists and sends nothing more; "
            "its messages are being removed in the background.",
        )
        return redirect_page(request, reverse("dashboard:mailing_list"))
    return render(
        request,
        "dashboard/confirm.html",
        {
            "title": f"Delete mailing {mailing.pk}?",
            "consequence": (
                "It stops sending at once; its messages and statistics are deleted in the "
                "background."
            ),
            "action_url": request.path,
            "verb": "Delete",
            "back_url": reverse("dashboard:mailing_detail", kwargs={"pk": pk}),
            "danger": True,
        },
    )
