"""The staff member's API tokens: issue and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from dashboard import forms as ui_forms
from dashboard.views.common import redirect_page, staff_required
from mailing import selectors
from mailing.actors import Actor
from mailing.tokens import issue_token, revoke_token

# The key of a token just issued waits here for the one page view that shows it.
NEW_KEY_SESSION = "ui_new_token_key"


@staff_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    """Issuing is POST-redirect-GET: the key is kept in the session for exactly one page
    view, so a reload shows nothing new and issues nothing."""
    form = ui_forms.TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            token, key = issue_token(
                request.user,
                form.cleaned_data["name"],
                days=form.cleaned_data["days"],
                actor=Actor.of_request(request),
            )
        except ValidationError as error:
            ui_forms.apply_service_errors(form, error, {})
        else:
            request.session[NEW_KEY_SESSION] = {"id": token.pk, "key": key}
            return redirect(reverse("dashboard:tokens") + "#new-token")
    new = request.session.pop(NEW_KEY_SESSION, None) if request.method == "GET" else None
    response = render(
        request,
        "dashboard/tokens.html",
        {
            "form": form,
            "new_key": new["key"] if new else None,
            "new_token_id": new["id"] if new else None,
            "tokens": selectors.tokens_of(request.user.pk),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


@staff_required
@require_POST
def token_revoke(request, pk: int):
    token = selectors.get_token(pk, request.user.pk)
    revoke_token(token, actor=Actor.of_request(request))
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect_page(request, reverse("dashboard:tokens"))
