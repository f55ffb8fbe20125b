from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from dashboard.views import account, clients, exports, mailings, messages, overview, tokens

app_name = "dashboard"

urlpatterns = [
    path("", overview.home, name="home"),
    # Browsers ask for /favicon.ico whatever the page says.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("sign-in/", account.sign_in, name="sign_in"),
    path("preferences/timezone/", account.set_timezone, name="set_timezone"),
    path("partials/overview/", overview.overview_partial, name="overview_partial"),
    path("partials/health/", overview.health_partial, name="health_partial"),
    path("mailings/", mailings.mailing_list, name="mailing_list"),
    path("mailings/new/", mailings.mailing_create, name="mailing_create"),
    path("mailings/preview/", mailings.mailing_preview, name="mailing_preview"),
    path("mailings/segments/", mailings.mailing_segments, name="mailing_segments"),
    path("mailings/<int:pk>/", mailings.mailing_detail, name="mailing_detail"),
    path("mailings/<int:pk>/edit/", mailings.mailing_edit, name="mailing_edit"),
    path("mailings/<int:pk>/check/", mailings.mailing_check, name="mailing_check"),
    path("mailings/<int:pk>/clone/", mailings.mailing_clone, name="mailing_clone"),
    path("mailings/<int:pk>/resend/", mailings.mailing_resend, name="mailing_resend"),
    path("mailings/<int:pk>/test/", mailings.mailing_test_send, name="mailing_test_send"),
    path("mailings/<int:pk>/progress/", mailings.mailing_progress, name="mailing_progress"),
    path("mailings/<int:pk>/delete/", mailings.mailing_delete, name="mailing_delete"),
    path("mailings/<int:pk>/messages.csv", exports.mailing_export, name="mailing_export"),
    path(
        "mailings/<int:pk>/<str:action>/",
        mailings.mailing_action,
        name="mailing_action",
    ),
    path("messages/<int:pk>/", messages.message_detail, name="message_detail"),
    path("clients/", clients.client_list, name="client_list"),
    path("clients/new/", clients.client_form, name="client_create"),
    path("clients/bulk/", clients.client_bulk, name="client_bulk"),
    path("clients/export.csv", exports.client_export, name="client_export"),
    path("clients/import/", clients.client_import, name="client_import"),
    path("clients/import/<int:pk>/", clients.client_import_detail, name="client_import_detail"),
    path(
        "clients/import/<int:pk>/status/",
        clients.client_import_status,
        name="client_import_status",
    ),
    path(
        "clients/import/<int:pk>/confirm/",
        clients.client_import_confirm,
        name="client_import_confirm",
    ),
    path(
        "clients/import/<int:pk>/errors.csv",
        exports.client_import_errors,
        name="client_import_errors",
    ),
    path("clients/<int:pk>/edit/", clients.client_form, name="client_edit"),
    path("clients/<int:pk>/delete/", clients.client_delete, name="client_delete"),
    path("tokens/", tokens.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", tokens.token_revoke, name="token_revoke"),
]
