"""Production refuses to start on a missing, short or shipped secret (docs/security.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from project.secret_rules import CHECKED, SHIPPED_PLACEHOLDERS, secret_problem
from tests.test_health import MANAGE, production_env

ROOT = Path(__file__).resolve().parent.parent


def start(**env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check` as production starts: DEBUG off, the settings from the environment."""
    return subprocess.run(
        [sys.executable, MANAGE, "check"],
        env=production_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECRET_KEY", "", "SECRET_KEY must be set"),
        ("SECRET_KEY", "x" * 49, "SECRET_KEY must be at least 50 characters"),
        ("SECRET_KEY", "insecure-development-key-set-SECRET_KEY-in-production", "placeholder"),
        ("SECRET_KEY", "CHANGE-ME-at-least-50-random-characters" + "x" * 20, "placeholder"),
        ("OIDC_CLIENT_SECRET", "dev-secret", "placeholder"),
        ("OIDC_CLIENT_SECRET", "CHANGE-ME", "placeholder"),
        ("PROBE_TOKEN", "dev-token", "placeholder"),
        ("PROBE_TOKEN", "CHANGE-ME-jwt-issued-by-the-send-api", "placeholder"),
        ("METRICS_TOKEN", "CHANGE-ME", "placeholder"),
        ("METRICS_TOKEN", "a" * 31, "METRICS_TOKEN must be at least 32 characters"),
    ],
)
def test_production_refuses_to_start_naming_the_variable(variable, value, message):
    result = start(**{variable: value})
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr and message in result.stderr, result.stderr[-2000:]


def test_production_starts_with_secrets_of_its_own():
    result = start(METRICS_TOKEN="m" * 40, PROBE_TOKEN="eyJ.real.jwt", OIDC_CLIENT_SECRET="o" * 40)
    assert result.returncode == 0, result.stderr[-2000:]


def test_debug_keeps_its_development_defaults():
    """make run needs no setup: DEBUG=1 starts without any secret."""
    env = production_env(DEBUG="1", SECRET_KEY="", PROBE_TOKEN="", OIDC_CLIENT_SECRET="")
    result = subprocess.run(
        [sys.executable, MANAGE, "shell", "-v", "0", "-c", "from django.conf import settings as s; "
         "print(s.PROBE_TOKEN, s.OIDC_CLIENT_ID, s.SECRET_KEY[:8])"],
        env={k: v for k, v in env.items() if v}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["dev-token", "mailing-ui", "insecure"]


def shipped_secret_values() -> set[str]:
    """Every value the repository ships for a checked secret: the Kubernetes Secret
    template, compose defaults, the development defaults of the settings."""
    values = set()
    template = yaml.safe_load((ROOT / "deploy" / "k8s" / "secret.example.yaml").read_text())
    values |= {v for k, v in template["stringData"].items() if k in CHECKED}
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in CHECKED:
        values |= set(re.findall(rf"\b{name}: \$\{{{name}:-([^}}]+)\}}", compose))
    settings_source = (ROOT / "project" / "settings.py").read_text()
    for name in CHECKED:
        values |= set(re.findall(rf'env_str\("{name}", "([^"]+)"', settings_source))
        values |= set(re.findall(rf'env_str\("{name}", "([^"]+)" if DEBUG', settings_source))
    return values


def test_every_shipped_value_is_refused():
    shipped = shipped_secret_values()
    assert {"dev-token", "dev-secret", "CHANGE-ME"} <= shipped  # the pattern still finds them
    for name in CHECKED:
        for value in shipped:
            assert secret_problem(name, value), (name, value)
    assert {"dev-token", "dev-secret"} <= SHIPPED_PLACEHOLDERS


def test_compose_requires_the_secrets_instead_of_defaulting():
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in ("SECRET_KEY", "PROBE_TOKEN", "POSTGRES_PASSWORD", "DATABASE_URL"):
        assert re.search(rf"\$\{{{name}:\?[^}}]+\}}", compose), name
    names = "SECRET_KEY|PROBE_TOKEN|METRICS_TOKEN|OIDC_CLIENT_SECRET|STAND_IN_TOKEN"
    assert not re.search(rf"\$\{{({names}):-[^}}]", compose)
