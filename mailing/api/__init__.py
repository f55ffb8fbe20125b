"""The JSON API v1 (django-ninja), mounted at ``/api/v1/``.

Handlers only parse, call ``mailing.services`` / ``mailing.selectors`` and shape the
answer; the rules live there.
"""

from __future__ import annotations

from ninja import NinjaAPI
from ninja.operation import Operation

from mailing.api import clients, errors, events, mailings, optouts, system
from mailing.api.auth import ApiTokenAuth
from mailing.api.calllog import log_calls

__all__ = ["api"]


class MailingAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        return operation.view_func.__name__


api = MailingAPI(
    title="Mailing service API",
    version="1",
    description=(
        "Clients, mailings and their statistics. Every endpoint needs "
        "`Authorization: Bearer <api token>` (issue one with "
        "`python manage.py create_api_token USERNAME`)."
    ),
    urls_namespace="api-v1",
    docs_url=None,
    openapi_url="/openapi.json",
    auth=ApiTokenAuth(),
)
errors.register(api)
api.add_decorator(log_calls, mode="view")
api.add_router("", clients.router)
api.add_router("", mailings.router)
api.add_router("", optouts.router)
api.add_router("", system.router)
api.add_router("", events.router)
