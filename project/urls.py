from functools import partial

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from ninja.openapi.views import openapi_view

from mailing.api import api

# The admin signs in like the staff UI, through the identity provider (no local passwords).
# (allauth's documented way: replacing the method is the point.)
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # Swagger UI with its assets from ninja's static files (no CDN); public, like the schema.
    path("docs/", partial(openapi_view, api=api), name="api-docs"),
    # /healthz and /metrics (answered early by ops.probes.ProbeMiddleware).
    path("", include("ops.probes")),
    # Staff UI and its sign-in (django-allauth, OpenID Connect).
    path("accounts/", include("allauth.urls")),
    path("", include("dashboard.urls")),
]
