from functools import partial

from django.contrib import admin
from django.urls import path
from ninja.openapi.views import openapi_view

from mailing.api import api
from mailing.health import healthz
from mailing.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # Swagger UI with its assets from ninja's static files (no CDN); public, like the schema.
    path("docs/", partial(openapi_view, api=api), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
]
