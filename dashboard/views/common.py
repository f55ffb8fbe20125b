"""What every page shares: the staff-only gate and HTMX-aware redirects."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from dashboard.auth import refusal


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


def redirect_page(request, url: str) -> HttpResponse:
    """A redirect that also works for an HTMX request (a full page change)."""
    if getattr(request, "htmx", False):
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)
