from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("sign-in/", views.sign_in, name="sign_in"),
    path("preferences/timezone/", views.set_timezone, name="set_timezone"),
    path("partials/overview/", views.overview_partial, name="overview_partial"),
    path("partials/health/", views.health_partial, name="health_partial"),
    path("mailings/", views.mailing_list, name="mailing_list"),
    path("mailings/new/", views.mailing_create, name="mailing_create"),
    path("mailings/preview/", views.mailing_preview, name="mailing_preview"),
    path("mailings/<int:pk>/", views.mailing_detail, name="mailing_detail"),
    path("mailings/<int:pk>/edit/", views.mailing_edit, name="mailing_edit"),
    path("mailings/<int:pk>/progress/", views.mailing_progress, name="mailing_progress"),
    path("mailings/<int:pk>/delete/", views.mailing_delete, name="mailing_delete"),
    path("mailings/<int:pk>/messages.csv", views.mailing_export, name="mailing_export"),
    path(
        "mailings/<int:pk>/<str:action>/",
        views.mailing_action,
        name="mailing_action",
    ),
    path("messages/<int:pk>/", views.message_detail, name="message_detail"),
    path("clients/", views.client_list, name="client_list"),
    path("clients/new/", views.client_form, name="client_create"),
    path("clients/import/", views.client_import, name="client_import"),
    path("clients/<int:pk>/edit/", views.client_form, name="client_edit"),
    path("clients/<int:pk>/delete/", views.client_delete, name="client_delete"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
]
