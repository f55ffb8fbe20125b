"""Property-based tests of the JSON API against its own OpenAPI document (schemathesis 4).

The document is loaded from the Django WSGI application itself, so what is tested is what
is served. Every operation gets generated valid and invalid requests (schemathesis'
examples, coverage and fuzzing phases), sent in-process through WSGI, and each answer must:
not be a 5xx, use a status code the document declares, match the declared schema for that
status, and reject invalid data with a 4xx. A second run without a token expects 401
everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time, timedelta
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from mailing import services
from mailing.models import (
    ApiToken,
    DispatcherSlot,
    Mailing,
    Message,
    MessageStatus,
    ProviderState,
)
from mailing.tokens import hash_key
from project.wsgi import application

SCHEMA_PATH = "/api/v1/openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Small enough that the whole module stays well under 90 s on a 2-core machine.
HYPOTHESIS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# A fixed key (its token row is made per test) given to schemathesis as configured headers,
# so that it knows the header is supplied and does not count a negated one as accepted.
API_KEY = "mls_schemathesis-fixed-test-key-0123456789abcdefghij"

schema = schemathesis.openapi.from_wsgi(SCHEMA_PATH, application)
schema.config.update(headers={"Authorization": f"Bearer {API_KEY}"})
unauthenticated = schemathesis.openapi.from_wsgi(SCHEMA_PATH, application)


@pytest.fixture(autouse=True)
def keep_test_connection() -> Iterator[None]:
    """Requests go through the real WSGI handler, whose request signals would close the
    test's database connection (and its transaction); Django's test client unhooks them
    the same way."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_data(db: None) -> None:
    """The staff token of API_KEY, plus rows of every kind so that generated ids sometimes
    exist and every success answer has content to check against the schema."""
    user = get_user_model().objects.create_user("schemathesis", is_staff=True)
    ApiToken.objects.create(
        user=user,
        name="schemathesis",
        prefix=API_KEY[:12],
        key_hash=hash_key(API_KEY),
        expires_at=timezone.now() + timedelta(days=1),
    )
    clients = [
        services.create_client(phone=f"7916000000{n}", timezone="Europe/Moscow", tag=f"t{n}")
        for n in range(3)
    ]
    now = timezone.now()
    running = services.create_mailing(
        start_at=now - timedelta(hours=1),
        end_at=now + timedelta(hours=5),
        text="running",
        send_window=services.SendWindow(time(9), time(21)),
    )
    Message.objects.bulk_create(
        Message(
            mailing=running,
            client=client,
            phone=client.phone,
            timezone=client.timezone,
            status=status,
            created_at=now,
            next_attempt_at=now,
            last_error="rejected" if status == MessageStatus.FAILED else "",
        )
        for client, status in zip(clients, MessageStatus.values, strict=False)
    )
    Mailing.objects.filter(pk=running.pk).update(total=3, pending=1, sent=1, failed=1)
    services.create_mailing(
        start_at=now + timedelta(hours=1), end_at=now + timedelta(hours=5), text="scheduled"
    )
    DispatcherSlot.objects.create(slot=0, heartbeat_at=now, circuit_state="closed")
    ProviderState.objects.create(pk=1)


@schema.parametrize()
@HYPOTHESIS
def test_api_conforms_to_its_schema(case: schemathesis.Case, api_data: None) -> None:
    case.call_and_validate(checks=CHECKS)


def _expect_401(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    if case.method.upper() != case.operation.method.upper():
        # The coverage phase also tries methods the path does not have: 405 before auth.
        assert response.status_code == 405, f"{case.method} {case.path}: {response.status_code}"
        return None
    assert response.status_code == 401, f"{case.method} {case.path}: {response.status_code}"
    return None


@unauthenticated.parametrize()
@settings(HYPOTHESIS, max_examples=3)
def test_every_operation_needs_a_token(case: schemathesis.Case, api_data: None) -> None:
    # Schemathesis makes up its own bearer values from the security scheme (or none at all):
    # none of them is a live key.
    assert API_KEY not in str(case.headers)
    case.call_and_validate(checks=[not_a_server_error, _expect_401, response_schema_conformance])
