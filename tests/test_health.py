"""``/healthz`` and the production settings (``check --deploy``)."""

from __future__ import annotations

import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import OperationalError

from ops import health
from tests.conftest import RefusedPort, needs_redis

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


@pytest.mark.django_db
def test_healthz_is_public_and_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["broker"] == "ok"
    assert body["broker_type"] == ("redis" if settings.REDIS_URL else "orm")
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_healthz_answers_503_when_the_database_is_down(client, monkeypatch):
    def broken() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(health, "check_database", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"
    assert response.json()["status"] == "unavailable"


@pytest.mark.django_db
def test_healthz_answers_503_when_redis_does_not_answer(client, settings):
    with RefusedPort() as port:
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body == {
        "broker_type": "redis",
        "database": "ok",
        "broker": "unavailable",
        "status": "unavailable",
    }


@needs_redis()
@pytest.mark.django_db
def test_healthz_pings_redis_when_it_is_the_broker(client, settings):
    import os

    settings.REDIS_URL = os.environ["REDIS_URL"]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["broker_type"] == "redis"


@pytest.mark.django_db
def test_tests_run_with_debug_off_and_are_not_redirected_to_https(client):
    assert settings.DEBUG is False
    assert settings.SECURE_SSL_REDIRECT is False
    assert client.get("/healthz").status_code == 200


def production_env(**extra: str) -> dict[str, str]:
    import os

    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    env = dict(os.environ)
    # Test-only switches some other test module may have set in this process.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DEBUG="0",
        SECRET_KEY="".join(secrets.choice(alphabet) for _ in range(60)),
        ALLOWED_HOSTS="example.com",
        SECURE_SSL_REDIRECT="1",
    )
    env.update(extra)
    return env


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = subprocess.run(
        [sys.executable, MANAGE, "check", "--deploy", "--fail-level", "WARNING"],
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_a_short_secret_key():
    result = subprocess.run(
        [sys.executable, MANAGE, "check"],
        env=production_env(SECRET_KEY="too-short"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 characters" in result.stderr


@pytest.mark.django_db
def test_ssl_redirect_when_enabled_spares_the_probes(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/api/v1/stats").status_code == 301
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_probes_by_pod_ip_are_answered_whatever_the_host(client, settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    settings.METRICS_TOKEN = "t"
    scrape = client.get("/metrics", HTTP_HOST="10.1.2.3:8000", HTTP_AUTHORIZATION="Bearer t")
    assert scrape.status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.1.2.3:8000").status_code == 401
    # Anything else from an unknown host is still refused.
    assert client.get("/api/v1/stats", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_the_probe_routes_are_declared_once():
    from django.urls import reverse

    assert (reverse("healthz"), reverse("metrics")) == ("/healthz", "/metrics")
    declared = [
        path
        for package in ("project", "mailing", "dashboard", "ops")
        for path in Path(settings.BASE_DIR, package).rglob("*.py")
        if 'path("healthz"' in path.read_text() or 'path("metrics"' in path.read_text()
    ]
    assert [p.relative_to(settings.BASE_DIR).as_posix() for p in declared] == ["ops/probes.py"]
