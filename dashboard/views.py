"""The staff UI: server-rendered pages and HTMX partials over mailing.services/selectors."""

from __future__ import annotations

import contextlib
import csv
import json
import time
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_tables2 import RequestConfig

from dashboard import forms as ui_forms
from dashboard.auth import refusal
from dashboard.filters import ClientFilter, MailingFilter, MessageFilter
from dashboard.middleware import SESSION_KEY
from dashboard.tables import ClientTable, MailingTable, MessageTable
from mailing import imports, selectors, services
from mailing.models import ApiToken, Client, Mailing, MailingStatus, Message
from mailing.services import StateConflict, known_timezones
from mailing.tokens import issue_token, revoke_token

PER_PAGE = 25


def staff_required(view):
    """Signed-in staff only: anonymous visitors go to sign-in, anyone else is refused."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            if getattr(request, "htmx", False):
                return HttpResponse(
                    status=401, headers={"HX-Redirect": reverse("dashboard:sign_in")}
                )
            return redirect_to_login(request.get_full_path())
        if not (user.is_active and user.is_staff):
            return refusal(request, user.get_username())
        return view(request, *args, **kwargs)

    return wrapper


def _redirect(request, url: str) -> HttpResponse:
    """A redirect that also works for an HTMX request (a full page change)."""
    if getattr(request, "htmx", False):
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)


# --- Sign-in, preferences -----------------------------------------------------------


@require_GET
def sign_in(request):
    if request.user.is_authenticated and request.user.is_staff:
        return redirect("dashboard:home")
    next_url = request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}):
        next_url = ""
    login_url = reverse("openid_connect_login", kwargs={"provider_id": "sso"})
    return render(
        request,
        "dashboard/sign_in.html",
        {
            "login_url": login_url,
            "next": next_url or reverse("dashboard:home"),
            "provider_name": settings.OIDC_PROVIDER_NAME,
        },
    )


@staff_required
@require_POST
def set_timezone(request):
    form = ui_forms.TimezoneForm(request.POST)
    next_url = reverse("dashboard:home")
    if form.is_valid():
        if form.cleaned_data["timezone"] in known_timezones():
            request.session[SESSION_KEY] = form.cleaned_data["timezone"]
        else:
            messages.error(request, "Unknown time zone.")
        candidate = form.cleaned_data["next"]
        if candidate and url_has_allowed_host_and_scheme(candidate, {request.get_host()}):
            next_url = candidate
    return redirect(next_url)


# --- Dashboard ------------------------------------------------------------------------


def _health_context() -> dict:
    return {"health": selectors.provider_health(), "send": selectors.send_api_health()}


@staff_required
@require_GET
def home(request):
    return render(
        request,
        "dashboard/home.html",
        {"overview": selectors.recent_overview(), **_health_context()},
    )


@staff_required
@require_GET
def overview_partial(request):
    return render(request, "dashboard/_overview.html", {"overview": selectors.recent_overview()})


@staff_required
@require_GET
def health_partial(request):
    return render(request, "dashboard/_health.html", _health_context())


# --- Mailings -------------------------------------------------------------------------


@staff_required
@require_GET
def mailing_list(request):
    filterset = MailingFilter(request.GET, queryset=selectors.list_mailings())
    table = MailingTable(filterset.qs)
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    return render(request, "dashboard/mailings/list.html", {"filter": filterset, "table": table})


def _window_initial(mailing: Mailing) -> dict:
    return {
        "start_at": timezone.localtime(mailing.start_at),
        "end_at": timezone.localtime(mailing.end_at),
        "text": mailing.text,
        "operator_codes": list(mailing.operator_codes),
        "tags": list(mailing.tags),
        "window_start": mailing.window_start,
        "window_end": mailing.window_end,
    }


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_create(request):
    if request.method == "POST":
        form = ui_forms.MailingForm(request.POST)
        if form.is_valid():
            try:
                mailing = services.create_mailing(**form.service_arguments())
            except ValidationError as error:
                ui_forms.apply_service_errors(form, error, form.ALIASES)
            else:
                messages.success(request, f"Mailing {mailing.pk} created ({mailing.status}).")
                return redirect("dashboard:mailing_detail", pk=mailing.pk)
    else:
        now = timezone.localtime().replace(second=0, microsecond=0)
        form = ui_forms.MailingForm(
            initial={"start_at": now, "end_at": now + timezone.timedelta(days=1)}
        )
    return render(request, "dashboard/mailings/form.html", {"form": form, "mailing": None})


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_edit(request, pk: int):
    mailing = get_object_or_404(Mailing, pk=pk)
    initial = _window_initial(mailing)
    editable = (
        set(ui_forms.MailingForm.base_fields)
        if mailing.status == MailingStatus.SCHEDULED
        else {"end_at"}
    )
    if mailing.status in (MailingStatus.FINISHED, MailingStatus.CANCELLED):
        editable = set()
    form = ui_forms.MailingForm(request.POST or None, initial=initial)
    for name, field in form.fields.items():
        if name not in editable:
            field.disabled = True
    if request.method == "POST" and form.is_valid():
        arguments = form.service_arguments()
        changes = {
            name: arguments[name]
            for name in ("start_at", "end_at", "text", "operator_codes", "tags")
            if name in form.changed_data
        }
        if {"window_start", "window_end"} & set(form.changed_data):
            changes["send_window"] = arguments["send_window"]
        try:
            services.update_mailing(mailing, **changes)
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, form.ALIASES)
        except StateConflict as conflict:
            form.add_error(None, str(conflict))
        else:
            messages.success(request, f"Mailing {mailing.pk} saved.")
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
        window = (data["window_start"], data["window_end"])
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
    done = counters["total"] - counters["pending"]
    now_t = time.time()
    rate = None
    try:
        prev_t = float(request.GET.get("t", ""))
        prev_done = int(request.GET.get("done", ""))
        prev_rate = request.GET.get("rate", "")
    except ValueError:
        prev_t = prev_done = None
        prev_rate = ""
    if prev_t is not None and 0 < now_t - prev_t < 600 and done >= prev_done:
        rate = (done - prev_done) / (now_t - prev_t)
        with contextlib.suppress(ValueError):  # smooth: the rate is noisy between polls
            rate = 0.5 * rate + 0.5 * float(prev_rate) if prev_rate else rate
    time_left = None
    if rate and rate > 0 and counters["pending"]:
        time_left = duration_text(counters["pending"] / rate)
    live = mailing.status in (MailingStatus.SCHEDULED, MailingStatus.RUNNING, MailingStatus.PAUSED)
    return {
        "mailing": mailing,
        "stats": stats,
        "counters": counters,
        "percent": round(100 * stats["progress"], 1),
        "done": done,
        "rate": rate,
        "time_left": time_left,
        "live": live,
        "snapshot": json.dumps(
            {"t": f"{now_t:.3f}", "done": str(done), "rate": "" if rate is None else f"{rate:.3f}"}
        ),
    }


@staff_required
@require_GET
def mailing_detail(request, pk: int):
    mailing = get_object_or_404(Mailing, pk=pk)
    filterset = MessageFilter(request.GET, queryset=selectors.list_messages(mailing))
    table = MessageTable(filterset.qs)
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    return render(
        request,
        "dashboard/mailings/detail.html",
        {
            "filter": filterset,
            "table": table,
            "events": selectors.latest_events(selectors.events_for(mailing_id=mailing.pk)),
            **_progress_context(request, mailing),
        },
    )


@staff_required
@require_GET
def message_detail(request, pk: int):
    message = get_object_or_404(Message.objects.select_related("mailing"), pk=pk)
    events = selectors.latest_events(selectors.events_for(message_id=message.pk))
    return render(request, "dashboard/messages/detail.html", {"message": message, "events": events})


@staff_required
@require_GET
def mailing_progress(request, pk: int):
    mailing = get_object_or_404(Mailing, pk=pk)
    return render(request, "dashboard/mailings/_progress.html", _progress_context(request, mailing))


ACTIONS = {
    "pause": (services.pause_mailing, "Pause", "paused", "New sends stop until you resume it."),
    "resume": (services.resume_mailing, "Resume", "resumed", "Sending continues."),
    "cancel": (
        services.cancel_mailing,
        "Cancel",
        "cancelled",
        "Its pending messages are cancelled. This cannot be undone.",
    ),
}


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_action(request, pk: int, action: str):
    if action not in ACTIONS:
        raise Http404
    mailing = get_object_or_404(Mailing, pk=pk)
    operation, verb, done, consequence = ACTIONS[action]
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
                "danger": action == "cancel",
            },
        )
    try:
        operation(mailing)
    except StateConflict as conflict:
        messages.error(request, str(conflict))
    else:
        messages.success(request, f"Mailing {mailing.pk} {done}.")
    return _redirect(request, detail_url)


@staff_required
@require_http_methods(["GET", "POST"])
def mailing_delete(request, pk: int):
    mailing = get_object_or_404(Mailing, pk=pk)
    if request.method == "POST":
        services.delete_mailing(mailing)
        messages.success(request, f"Mailing {pk} deleted.")
        return _redirect(request, reverse("dashboard:mailing_list"))
    return render(
        request,
        "dashboard/confirm.html",
        {
            "title": f"Delete mailing {mailing.pk}?",
            "consequence": "It is stopped first; its messages and statistics are deleted.",
            "action_url": request.path,
            "verb": "Delete",
            "back_url": reverse("dashboard:mailing_detail", kwargs={"pk": pk}),
            "danger": True,
        },
    )


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


# --- Clients --------------------------------------------------------------------------


@staff_required
@require_GET
def client_list(request):
    filterset = ClientFilter(request.GET, queryset=Client.objects.all())
    table = ClientTable(filterset.qs)
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    return render(request, "dashboard/clients/list.html", {"filter": filterset, "table": table})


CLIENT_ALIASES: dict[str, str] = {}


@staff_required
@require_http_methods(["GET", "POST"])
def client_form(request, pk: int | None = None):
    client = get_object_or_404(Client, pk=pk) if pk is not None else None
    initial = {name: getattr(client, name) for name in services.CLIENT_FIELDS} if client else {}
    form = ui_forms.ClientForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if client is None:
                client = services.create_client(
                    phone=data["phone"].strip(),
                    operator_code=data["operator_code"].strip() or None,
                    tag=data["tag"],
                    timezone=data["timezone"],
                )
                messages.success(request, f"Client {client.phone} added.")
            else:
                changes = {
                    name: data[name].strip() if name != "tag" else data[name]
                    for name in form.changed_data
                }
                if changes.get("operator_code") == "":
                    changes.pop("operator_code")
                services.update_client(client, **changes)
                messages.success(request, f"Client {client.phone} saved.")
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, CLIENT_ALIASES)
        else:
            return redirect("dashboard:client_list")
    events = selectors.latest_events(selectors.events_for(client_id=client.pk)) if client else None
    return render(
        request,
        "dashboard/clients/form.html",
        {"form": form, "client": client, "events": events},
    )


@staff_required
@require_http_methods(["GET", "POST"])
def client_delete(request, pk: int):
    client = get_object_or_404(Client, pk=pk)
    if request.method == "POST":
        services.delete_client(client)
        messages.success(request, f"Client {client.phone} deleted.")
        return _redirect(request, reverse("dashboard:client_list"))
    return render(
        request,
        "dashboard/confirm.html",
        {
            "title": f"Delete client {client.phone}?",
            "consequence": "Their pending messages are cancelled.",
            "action_url": request.path,
            "verb": "Delete",
            "back_url": reverse("dashboard:client_list"),
            "danger": True,
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def client_import(request):
    result = None
    elapsed = None
    if request.method == "POST":
        form = ui_forms.ImportForm(request.POST, request.FILES)
        if form.is_valid():
            started = time.monotonic()
            result = imports.import_clients_csv(form.cleaned_data["file"].chunks())
            elapsed = time.monotonic() - started
            if result.file_error:
                form.add_error("file", result.file_error)
                result = None
    else:
        form = ui_forms.ImportForm()
    return render(
        request,
        "dashboard/clients/import.html",
        {"form": form, "result": result, "elapsed": elapsed},
    )


# --- API tokens -----------------------------------------------------------------------


@staff_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    new_key = None
    form = ui_forms.TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            _token, new_key = issue_token(request.user, form.cleaned_data["name"])
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, {})
        else:
            form = ui_forms.TokenForm()
    response = render(
        request,
        "dashboard/tokens.html",
        {
            "form": form,
            "new_key": new_key,
            "tokens": ApiToken.objects.filter(user=request.user).order_by("-id"),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


@staff_required
@require_POST
def token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    revoke_token(token)
    messages.success(request, f"Token “{token.name}” revoked.")
    return _redirect(request, reverse("dashboard:tokens"))
