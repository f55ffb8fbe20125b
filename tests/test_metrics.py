"""``/metrics``: access, the documented names, multiprocess aggregation, engine counters."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mailing import services
from mailing.models import DispatcherSlot, Mailing, MailingStatus, ProviderState
from tests.conftest import ChildProcess, free_port, make_clients, now_plus, wait_for

ROOT = Path(settings.BASE_DIR)
TOKEN = "metrics-test-token-at-least-32-characters"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> str:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def exported_types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def documented_types() -> dict[str, str]:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    return dict(re.findall(r"^\| `([a-z_]+)` \| (\w+) \|", doc, flags=re.MULTILINE))


@pytest.mark.django_db
def test_metrics_need_the_token(client, metrics_token):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=TOKEN).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


@pytest.mark.django_db
def test_without_a_token_metrics_are_hidden_unless_debug(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404
    settings.DEBUG = True
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_documented_and_exported_metrics_agree_exactly(client, metrics_token):
    DispatcherSlot.objects.create(slot=0, heartbeat_at=timezone.now())
    client.get("/healthz")  # so that an HTTP request has been counted
    exported = exported_types(scrape(client))
    documented = documented_types()
    assert documented, "no metric table found in docs/metrics.md"
    assert exported == documented


@pytest.mark.django_db
def test_database_gauges_follow_the_counters(client, metrics_token):
    make_clients(5)
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="Hi")
    services.create_mailing(start_at=now_plus(60), end_at=now_plus(600), text="Later")
    from mailing.engine import lifecycle

    lifecycle.tick(timezone.now())
    Mailing.objects.filter(pk=mailing.pk).update(pending=3, sent=1, failed=1)
    DispatcherSlot.objects.create(
        slot=0, circuit_state="open", heartbeat_at=timezone.now(), send_window=37
    )
    DispatcherSlot.objects.create(slot=1, heartbeat_at=timezone.now())  # no window stored yet
    ProviderState.objects.create(pk=1, auth_failed_at=timezone.now())
    text = scrape(client)
    assert value(text, "mailing_messages", status="pending") == 3
    assert value(text, "mailing_messages", status="sent") == 1
    assert value(text, "mailing_messages", status="failed") == 1
    assert value(text, "mailing_mailings", status=MailingStatus.RUNNING) == 1
    assert value(text, "mailing_mailings", status=MailingStatus.SCHEDULED) == 1
    assert value(text, "mailing_queue_due_messages") == 5
    assert value(text, "mailing_dispatcher_circuit_state", slot="0", state="open") == 1
    assert value(text, "mailing_dispatcher_circuit_state", slot="0", state="closed") == 0
    assert value(text, "mailing_dispatcher_window", slot="0") == 37
    assert 'mailing_dispatcher_window{slot="1"}' not in text
    assert value(text, "mailing_provider_paused_for_credentials") == 1


@pytest.mark.django_db
def test_queue_depth_is_capped(client, metrics_token, monkeypatch):
    from ops import metrics

    monkeypatch.setattr(metrics, "QUEUE_DEPTH_CAP", 4)
    make_clients(10)
    services.create_mailing(start_at=timezone.now(), end_at=now_plus(600), text="Hi")
    from mailing.engine import lifecycle

    lifecycle.tick(timezone.now())
    assert value(scrape(client), "mailing_queue_due_messages") == 4


@pytest.mark.django_db
def test_http_requests_are_counted_by_method_and_status(client, metrics_token):
    before = scrape(client)
    client.get("/healthz")
    client.get("/healthz")
    client.post("/healthz")  # 405
    after = scrape(client)
    name = "mailing_http_requests_total"
    assert (
        value(after, name, method="GET", status="200")
        - value(before, name, method="GET", status="200")
        == 3
    )  # two probes and the first scrape
    assert (
        value(after, name, method="POST", status="405")
        - value(before, name, method="POST", status="405")
        == 1
    )


@pytest.mark.django_db
def test_samples_of_other_processes_are_added_up(client, metrics_token):
    """Two other processes (like two q2 workers) count send calls; one scrape sees both."""
    before = scrape(client)
    code = (
        "import django; django.setup()\n"
        "from ops import metrics\n"
        "for _ in range(7): metrics.observe_send('retry', 0.2)\n"
    )
    env = {**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT, timeout=60)
    after = scrape(client)
    name = "mailing_send_requests_total"
    assert value(after, name, outcome="retry") - value(before, name, outcome="retry") == 14
    count = "mailing_send_request_duration_seconds_count"
    assert value(after, count) - value(before, count) == 14
    bucket = "mailing_send_request_duration_seconds_bucket"
    assert value(after, bucket, le="0.25") - value(before, bucket, le="0.25") == 14
    assert value(after, bucket, le="0.1") - value(before, bucket, le="0.1") == 0


@pytest.mark.django_db(transaction=True)
def test_the_dispatcher_counts_its_send_calls(client, metrics_token, dispatcher_factory):
    before = scrape(client)
    make_clients(30)
    mailing = services.create_mailing(start_at=timezone.now(), end_at=now_plus(60), text="Hi")
    dispatcher = dispatcher_factory()
    wait_for(lambda: Mailing.objects.get(pk=mailing.pk).status == MailingStatus.FINISHED, 20)
    dispatcher.stop()
    after = scrape(client)
    name = "mailing_send_requests_total"
    assert value(after, name, outcome="accepted") - value(before, name, outcome="accepted") == 30
    assert value(after, "mailing_messages", status="sent") == 30


def test_serve_metrics_serves_the_process_samples_with_the_token(tmp_path):
    import os

    import requests

    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    code = (
        "import django; django.setup()\n"
        "from ops import metrics\n"
        "metrics.observe_send('accepted', 0.01)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT, timeout=60)
    server = ChildProcess(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "serve_metrics",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
    )
    with server:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code in (200, 503)
            except requests.RequestException:
                return False

        wait_for(up, timeout=30, interval=0.1)
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 401
        answer = requests.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert answer.status_code == 200
        assert value(answer.text, "mailing_send_requests_total", outcome="accepted") == 1
        assert "mailing_messages" not in exported_types(answer.text)
        server.stop(timeout=10)
