"""The staff member's API tokens: issue and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from dashboard import forms as ui_forms
from dashboard.views.common import redirect_page, staff_required
from mailing.models import ApiToken
from mailing.tokens import issue_token, revoke_token


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
    return redirect_page(request, reverse("dashboard:tokens"))
