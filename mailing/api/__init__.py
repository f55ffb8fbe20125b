"""The JSON API v1 (django-ninja), mounted at ``/api/v1/``.

Handlers only parse, call ``mailing.services`` / ``mailing.selectors`` and shape the
answer; the rules live there.
"""

from __future__ import annotations

from typing import Any

from ninja import NinjaAPI
from ninja.openapi.schema import OpenAPISchema
from ninja.operation import Operation

from mailing.api import clients, errors, events, mailings, system
from mailing.api.auth import ApiTokenAuth
from mailing.api.calllog import log_calls

__all__ = ["api"]


def _allows_null(schema: dict[str, Any]) -> bool:
    variants = schema.get("anyOf", [schema])
    return any(variant.get("type") == "null" for variant in variants)


def _drop_null_default(schema: Any) -> None:
    if isinstance(schema, dict) and schema.get("default", ...) is None and not _allows_null(schema):
        del schema["default"]


def _drop_null_defaults(node: Any) -> None:
    """Remove ``"default": null`` from properties and parameters that do not accept null.

    PATCH fields and optional filters default to None only to tell "absent" from "given";
    null itself is refused, so the document must not advertise it.
    """
    if isinstance(node, dict):
        for prop in (node.get("properties") or {}).values():
            _drop_null_default(prop)
        if "in" in node and "schema" in node:
            _drop_null_default(node["schema"])
        for value in node.values():
            _drop_null_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _drop_null_defaults(value)


class MailingAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        return operation.view_func.__name__

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        _drop_null_defaults(schema)
        return schema


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
api.add_router("", system.router)
api.add_router("", events.router)
