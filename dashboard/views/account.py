"""Sign-in and the staff member's preferences (time zone)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from dashboard import forms as ui_forms
from dashboard.middleware import SESSION_KEY
from dashboard.views.common import staff_required
from mailing.rules import known_timezones


def is_safe_next(request, url: str) -> bool:
    """A redirect target on this host; outside DEBUG an absolute one must be HTTPS too."""
    return url_has_allowed_host_and_scheme(
        url, {request.get_host()}, require_https=not settings.DEBUG
    )


@require_GET
def sign_in(request):
    if request.user.is_authenticated and request.user.is_staff:
        return redirect("dashboard:home")
    next_url = request.GET.get("next", "")
    if not is_safe_next(request, next_url):
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
        if candidate and is_safe_next(request, candidate):
            next_url = candidate
    return redirect(next_url)
