"""Clients: list, add, edit, delete, CSV import."""

from __future__ import annotations

import time

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import QueryDict
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import forms as ui_forms
from dashboard.filters import filter_query, filtered_clients
from dashboard.tables import ClientTable, configure
from dashboard.views.common import redirect_page, staff_required
from mailing import clients as bulk_clients
from mailing import imports, selectors, services
from mailing.actors import Actor
from mailing.models import Client


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


@staff_required
@require_http_methods(["GET", "POST"])
def client_import(request):
    result = None
    elapsed = None
    if request.method == "POST":
        form = ui_forms.ImportForm(request.POST, request.FILES)
        if form.is_valid():
            started = time.monotonic()
            result = imports.import_clients_csv(
                form.cleaned_data["file"].chunks(), actor=Actor.of_request(request)
            )
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
