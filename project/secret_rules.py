"""Which secrets production refuses to start with (docs/security.md).

With ``DEBUG`` off, a secret that is missing where one is required, shorter than its
minimum, or equal to a value this repository ships (development defaults, compose and
Kubernetes templates, docs) stops start-up with a message naming the variable. Anyone can
read those values, so a deployment using one has no secret at all: a known ``SECRET_KEY``
forges staff sessions and signs django-q2's pickled tasks.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

# Values the repository ships for development or as templates. Anything containing
# "change-me" (any case) is a placeholder too.
SHIPPED_PLACEHOLDERS = frozenset(
    {
        "insecure-development-key-set-SECRET_KEY-in-production",  # DEBUG's SECRET_KEY
        "dev-token",  # the stand-in's and make run's send token
        "dev-secret",  # the development OIDC provider's client secret
        "dev-admin-token",  # the stand-in's development admin token
        "secret",
        "changeme",
        "password",
        "mailing",  # compose's former database password
    }
)
MIN_LENGTH = {"SECRET_KEY": 50, "METRICS_TOKEN": 32}
# Variables that must be set when DEBUG is off (the others may be empty: a feature off).
REQUIRED = ("SECRET_KEY",)
CHECKED = (
    "SECRET_KEY",
    "OIDC_CLIENT_SECRET",
    "PROBE_TOKEN",
    "METRICS_TOKEN",
    "EMAIL_HOST_PASSWORD",
)


def is_placeholder(value: str) -> bool:
    return value in SHIPPED_PLACEHOLDERS or "change-me" in value.lower()


def secret_problem(name: str, value: str) -> str:
    """Why production must not run with ``value`` for ``name`` ("" when it may)."""
    if not value:
        return f"{name} must be set when DEBUG is off" if name in REQUIRED else ""
    if is_placeholder(value):
        return f"{name} is a placeholder shipped in the repository: set a secret of your own"
    minimum = MIN_LENGTH.get(name, 0)
    if len(value) < minimum:
        return f"{name} must be at least {minimum} characters long"
    return ""


def refuse_known_or_missing_secrets(environ: Mapping[str, str]) -> None:
    """Raise ImproperlyConfigured naming every bad secret of ``environ`` (DEBUG off)."""
    problems = [p for name in CHECKED if (p := secret_problem(name, environ.get(name, "")))]
    if problems:
        raise ImproperlyConfigured("; ".join(problems))
