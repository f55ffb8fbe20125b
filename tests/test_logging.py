"""Structured logs: the ids of mailings, messages and clients are fields of every line."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from mailing import services
from mailing.models import Mailing, MailingStatus
from ops.logging import ContextFilter, JsonFormatter, TextFormatter, bind
from tests.conftest import make_clients, now_plus, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def as_json_lines(records: list[logging.LogRecord]) -> list[dict]:
    formatter, context = JsonFormatter(), ContextFilter()
    lines = []
    for record in records:
        context.filter(record)
        lines.append(json.loads(formatter.format(record)))
    return lines


def clients_of(mailing):
    return [message.client for message in mailing.messages.select_related("client")]


def test_every_external_call_is_logged_with_its_ids(provider, dispatcher_factory, caplog):
    caplog.set_level(logging.INFO)
    clients = make_clients(3)
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(60), text="Hi")
    worker = dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 15)
    worker.stop()
    lines = as_json_lines(caplog.records)
    calls = [line for line in lines if line["logger"] == "mailing.provider"]
    assert len(calls) == 3
    message_ids = set(mailing.messages.values_list("id", flat=True))
    assert {line["message_id"] for line in calls} == message_ids
    assert {line["mailing_id"] for line in calls} == {mailing.pk}
    assert {line["client_id"] for line in calls} == {c.pk for c in clients_of(mailing)}
    assert all(line["status_code"] == 200 and line["outcome"] == "accepted" for line in calls)
    about_mailing = [line for line in lines if line.get("mailing_id") == mailing.pk]
    assert any("created" in line["message"] for line in about_mailing)
    assert any("fan-out" in line["message"] for line in about_mailing)
    assert any("finished" in line["message"] for line in about_mailing)
    assert len(clients) == 3


def test_bound_fields_and_text_format():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    record.client_id = 7
    with bind(request_id="abc"):
        ContextFilter().filter(record)
    line = TextFormatter().format(record)
    assert line.endswith("hello there client_id=7 request_id=abc")


def test_request_id_is_returned_and_kept(client):
    response = client.get("/api/v1/openapi.json", HTTP_X_REQUEST_ID="req-42")
    assert response["X-Request-ID"] == "req-42"
    generated = client.get("/api/v1/openapi.json")["X-Request-ID"]
    assert len(generated) == 32
    kept = "A-z.0_9-" + "x" * 56  # 64 characters of the accepted set
    assert client.get("/api/v1/openapi.json", HTTP_X_REQUEST_ID=kept)["X-Request-ID"] == kept


@pytest.mark.parametrize(
    "forged",
    [
        "x" * 65,
        "abc mailing_id=7",  # a forged field in the text format
        'abc" "level": "ERROR',
        "abc\u2028next line",
        "é",
    ],
)
def test_a_request_id_outside_the_safe_set_is_replaced(client, forged):
    answered = client.get("/api/v1/openapi.json", HTTP_X_REQUEST_ID=forged)["X-Request-ID"]
    assert answered != forged and re.fullmatch(r"[0-9a-f]{32}", answered)


def test_log_format_json_setting_emits_json_lines():
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('mailing.test').warning('probe', extra={'mailing_id': 5})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(settings.BASE_DIR),
        env={
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "LOG_FORMAT": "json",
            "PATH": "",
            "SECRET_KEY": os.environ["SECRET_KEY"],  # DEBUG is off: a key is required
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "probe" and line["mailing_id"] == 5 and line["level"] == "WARNING"
