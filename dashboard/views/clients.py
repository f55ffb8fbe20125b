"""Clients: list, add, edit, delete, CSV import."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import QueryDict
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import forms as ui_forms
from dashboard.filters import filter_query, filtered_clients
from dashboard.tables import ClientTable, configure
from dashboard.views.common import redirect_page, staff_required
from mailing import clients as bulk_clients
from mailing import imports, selectors, services
from mailing.actors import Actor
from mailing.models import Client, ClientImport


@staff_required
@require_GET
def client_list(request):
    filterset, clients = filtered_clients(request.GET)
    table = ClientTable(clients)
    configure(request, table)
    query = filter_query(request.GET)
    bulk = ui_forms.BulkClientsForm(initial={"query": query})
    return render(
        request,
        "dashboard/clients/list.html",
        {"filter": filterset, "table": table, "bulk": bulk, "query": query},
    )


def _bulk_target(form: ui_forms.BulkClientsForm) -> QuerySet[Client] | None:
    """The clients a valid bulk form names; None (with the form's errors) otherwise."""
    if not form.is_valid():
        return None
    data = form.cleaned_data
    clients = selectors.clients_by_ids(data["ids"])
    if data["scope"] == "matching":
        filterset, clients = filtered_clients(QueryDict(data["query"]))
        if not filterset.is_valid():
            form.add_error(None, "The list's filter is not valid; apply it again.")
            return None
    if data["action"] == "set_tag":
        try:
            services.check_tag(data["tag"])
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, {})
            return None
    return clients


@staff_required
@require_POST
def client_bulk(request):
    """Set a tag on, or delete, the ticked clients or every matching one: the first POST
    asks for a confirmation naming the count, the second (``confirm``) does it."""
    form = ui_forms.BulkClientsForm(request.POST)
    clients = _bulk_target(form)
    if clients is None:
        return render(request, "dashboard/clients/bulk.html", {"form": form})
    data = form.cleaned_data
    back = reverse("dashboard:client_list") + (f"?{data['query']}" if data["query"] else "")
    if "confirm" not in request.POST:
        count, last = selectors.count_and_last_id(clients)
        return render(
            request,
            "dashboard/clients/bulk.html",
            {"form": form, "count": count, "upto": last, "data": data, "back_url": back},
        )
    actor = Actor.of_request(request)
    upto = data["upto"]
    if data["action"] == "delete":
        done = bulk_clients.delete(clients, actor=actor, upto=upto)
        messages.success(request, f"{done:,} client{pluralize(done)} deleted.")
    else:
        done = bulk_clients.set_tag(clients, data["tag"], actor=actor, upto=upto)
        messages.success(request, f"Tag set on {done:,} client{pluralize(done)}.")
    return redirect(back)


@staff_required
@require_http_methods(["GET", "POST"])
def client_form(request, pk: int | None = None):
    client = selectors.get_client(pk) if pk is not None else None
    initial = {name: getattr(client, name) for name in services.CLIENT_FIELDS} if client else {}
    form = ui_forms.ClientForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if client is None:
                client = services.create_client(
                    actor=Actor.of_request(request),
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
                services.update_client(client, actor=Actor.of_request(request), **changes)
                messages.success(request, f"Client {client.phone} saved.")
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, {})
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
    client = selectors.get_client(pk)
    if request.method == "POST":
        services.delete_client(client, actor=Actor.of_request(request))
        messages.success(request, f"Client {client.phone} deleted.")
        return redirect_page(request, reverse("dashboard:client_list"))
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


# Room for the multipart envelope around the file, when judging an upload by its length.
UPLOAD_OVERHEAD_BYTES = 64 * 1024


def _too_large(request) -> bool:
    """An upload over the import limit, told by its Content-Length before it is read."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > settings.CLIENT_IMPORT_MAX_BYTES + UPLOAD_OVERHEAD_BYTES


@csrf_exempt  # checked by _client_import, after the size: a refusal reads no body
@staff_required
@require_http_methods(["GET", "POST"])
def client_import(request):
    """Upload a CSV file: it is kept and checked in the background, then previewed. An
    upload over the limit is refused by its Content-Length, before it is read."""
    if request.method == "POST" and _too_large(request):
        return _import_page(request, ui_forms.ImportForm.refusing_a_large_file(), status=413)
    return _client_import(request)


@csrf_protect
def _client_import(request):
    form = ui_forms.ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            record = imports.start(
                upload.read(), upload.name or "", actor=Actor.of_request(request)
            )
        except imports.FileRefused as refused:
            form.add_error("file", str(refused))
        else:
            return redirect("dashboard:client_import_detail", pk=record.pk)
    return _import_page(request, form, status=413 if form.has_error("file", "too_large") else 200)


def _import_page(request, form: ui_forms.ImportForm, status: int):
    context = {
        "form": form,
        "recent": selectors.recent_client_imports(),
        "limit": settings.CLIENT_IMPORT_MAX_BYTES,
    }
    return render(request, "dashboard/clients/import.html", context, status=status)


def _import_context(record: ClientImport) -> dict[str, object]:
    return {
        "record": record,
        "errors": selectors.client_import_errors_shown(record),
        "confirm_form": ui_forms.ImportConfirmForm(),
    }


@staff_required
@require_GET
def client_import_detail(request, pk: int):
    record = selectors.get_client_import(pk)
    return render(request, "dashboard/clients/import_detail.html", _import_context(record))


@staff_required
@require_GET
def client_import_status(request, pk: int):
    """The import's panel, polled by its page while a job works on it."""
    record = selectors.get_client_import(pk)
    return render(request, "dashboard/clients/_import_status.html", _import_context(record))


@staff_required
@require_POST
def client_import_confirm(request, pk: int):
    record = selectors.get_client_import(pk)
    form = ui_forms.ImportConfirmForm(request.POST)
    if form.is_valid():
        if imports.confirm(record, update_existing=form.cleaned_data["update_existing"]):
            messages.success(request, "The import has started; this page follows it.")
        else:
            messages.error(request, "This file cannot be imported (again); nothing was changed.")
    return redirect_page(request, reverse("dashboard:client_import_detail", args=[pk]))
