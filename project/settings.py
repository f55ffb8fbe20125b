"""Settings, all read from environment variables with safe defaults.

Every variable is documented in the README's settings table; keep both in step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.secret_rules import refuse_known_or_missing_secrets

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean, got {raw!r}")


def env_number(name: str, default: float, cast=float):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# Development defaults (make run, DEBUG=1) are public: outside DEBUG a secret has none, and a
# missing, short or shipped one stops start-up (project/secret_rules.py, docs/security.md).
if not DEBUG:
    refuse_known_or_missing_secrets(os.environ)
SECRET_KEY = env_str("SECRET_KEY", "insecure-development-key-set-SECRET_KEY-in-production")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Before django_q: its qcluster command (q2's, plus the dispatchers) wins.
    "mailing.engine.runtime",
    "django_q",
    "ninja",
    "mailing",
    "ops",
    "dashboard",
    "django_htmx",
    "django_tables2",
    "django_filters",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
]

# Operations first: every response is counted, probes are answered before host checks and
# redirects (ops.probes), then security headers and the request id; the sign-in rate limit
# refuses floods before sessions are loaded.
MIDDLEWARE = [
    "ops.metrics.HttpMetricsMiddleware",
    "ops.probes.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "ops.security.ContentSecurityPolicyMiddleware",
    "ops.request_ids.RequestIdMiddleware",
    "ops.security.SignInRateLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "dashboard.middleware.SessionLifetimeMiddleware",
    "dashboard.middleware.StaffTimezoneMiddleware",
    "ops.security.IdentityProviderUnavailableMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context.ui",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One writer at a time: IMMEDIATE transactions take the write lock up front, so a
    # transaction never fails half-way on a lock upgrade; WAL lets readers run meanwhile.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Engine tests run several threads and processes against one database: a file, not memory.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}
if DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # One test database per test run, so parallel runs on one server do not collide.
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Task queue (django-q2) -----------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
Q_WORKERS = int(env_number("Q_WORKERS", 3, int))
# Dispatchers each qcluster runs beside its q2 workers (mailing/engine/runtime/README.md).
DISPATCHER_SLOTS = int(env_number("DISPATCHER_SLOTS", 1, int))
# How long a stopping dispatcher waits for the answers of calls in flight.
DISPATCHER_STOP_SECONDS = env_number("DISPATCHER_STOP_SECONDS", 5.0)
Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "mailing"),
    "workers": Q_WORKERS,
    # q2 runs short tasks only (the daily report, batches of deletes); the dispatchers are
    # processes of their own.
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    "recycle": 200,
    "save_limit": 250,
    "ack_failures": True,
    "catch_up": False,
    "poll": 0.2,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- External send API ----------------------------------------------------------
PROBE_URL = env_str("PROBE_URL", "http://127.0.0.1:8081/v1").rstrip("/")
PROBE_TOKEN = env_str("PROBE_TOKEN", "dev-token" if DEBUG else "")
PROBE_CONNECT_TIMEOUT = env_number("PROBE_CONNECT_TIMEOUT", 3.0)
PROBE_TOTAL_TIMEOUT = env_number("PROBE_TOTAL_TIMEOUT", 10.0)
SEND_CONCURRENCY = int(env_number("SEND_CONCURRENCY", 200, int))  # the window's ceiling
# The concurrency window slow-starts from this many calls in flight (mailing/engine/limiter.py).
SEND_WINDOW_INITIAL = int(env_number("SEND_WINDOW_INITIAL", 4, int))
# Off: a fixed window of SEND_CONCURRENCY from the first call (the behaviour before slow start).
SEND_WINDOW_ADAPTIVE = env_bool("SEND_WINDOW_ADAPTIVE", True)
SEND_RATE_LIMIT = env_number("SEND_RATE_LIMIT", 0.0)  # messages per second, all workers; 0 = none
# A mailing pauses by itself when more than this share of its last N attempts failed for
# good (N = MAILING_FAILURE_PAUSE_ATTEMPTS; 0 turns the pause off). See mailing/rules.py.
MAILING_FAILURE_PAUSE_RATE = env_number("MAILING_FAILURE_PAUSE_RATE", 0.5)
MAILING_FAILURE_PAUSE_ATTEMPTS = int(env_number("MAILING_FAILURE_PAUSE_ATTEMPTS", 200, int))
if not 0 <= MAILING_FAILURE_PAUSE_RATE < 1:
    raise ImproperlyConfigured("MAILING_FAILURE_PAUSE_RATE must be at least 0 and below 1")
if MAILING_FAILURE_PAUSE_ATTEMPTS < 0:
    raise ImproperlyConfigured("MAILING_FAILURE_PAUSE_ATTEMPTS must not be negative")
# Launching to more clients than this asks the staff member to type the count.
LAUNCH_CONFIRM_THRESHOLD = int(env_number("LAUNCH_CONFIRM_THRESHOLD", 10_000, int))
RETRY_BASE_SECONDS = env_number("RETRY_BASE_SECONDS", 5.0)
RETRY_MAX_SECONDS = env_number("RETRY_MAX_SECONDS", 600.0)
CLAIM_LEASE_SECONDS = env_number("CLAIM_LEASE_SECONDS", 60.0)
CIRCUIT_FAILURE_THRESHOLD = int(env_number("CIRCUIT_FAILURE_THRESHOLD", 20, int))
CIRCUIT_RESET_SECONDS = env_number("CIRCUIT_RESET_SECONDS", 10.0)
AUTH_RETRY_SECONDS = env_number("AUTH_RETRY_SECONDS", 30.0)
# Clients per fan-out chunk (one short transaction each); 0 = the whole audience in one
# statement (the fan-out before chunks, kept for the benchmark's baseline).
FANOUT_CHUNK_SIZE = int(env_number("FANOUT_CHUNK_SIZE", 50_000, int))
if FANOUT_CHUNK_SIZE < 0:
    raise ImproperlyConfigured("FANOUT_CHUNK_SIZE must be 0 (one statement) or more")

# --- Logging --------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be 'text' or 'json'")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "ops.logging.ContextFilter"}},
    "formatters": {
        "text": {"()": "ops.logging.TextFormatter"},
        "json": {"()": "ops.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django_q": {"level": env_str("Q_LOG_LEVEL", "WARNING").upper()},
    },
}

# --- Web ------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
DATA_UPLOAD_MAX_MEMORY_SIZE = int(env_number("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, int))
# The largest CSV file of clients the UI takes (larger uploads get 413 before being read).
CLIENT_IMPORT_MAX_BYTES = int(env_number("CLIENT_IMPORT_MAX_BYTES", 20 * 1024 * 1024, int))

# --- Operations: e-mail, report, metrics, security ---------------------------------
# E-mail (the daily report). Django's SMTP backend unless EMAIL_BACKEND says otherwise.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = int(env_number("EMAIL_PORT", 25, int))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_number("EMAIL_TIMEOUT", 30.0)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "mailing@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The daily report: who gets it (none: skipped and logged) and when, in TIME_ZONE.
REPORT_RECIPIENTS = env_list("REPORT_RECIPIENTS", "")
REPORT_TIME = env_str("REPORT_TIME", "07:00")
# Events older than this are deleted by an hourly q2 schedule; 0 keeps them for ever.
EVENT_RETENTION_DAYS = int(env_number("EVENT_RETENTION_DAYS", 90, int))
# How long a claimed daily report is its sender's; unsent after it, another worker sends it.
REPORT_LEASE_SECONDS = env_number("REPORT_LEASE_SECONDS", 600.0)

# Prometheus metrics (/metrics). Multiprocess mode: every process writes its samples under
# PROMETHEUS_MULTIPROC_DIR and a scrape adds them up. prometheus_client reads the variable
# when it is imported, so it is settled here, first: unset, a per-run temporary directory is
# made and exported, so processes started from this one (make run's web and q2 worker)
# share it. Production sets it (one directory per container or pod, see docs/metrics.md).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if not PROMETHEUS_MULTIPROC_DIR:
    import atexit
    import shutil
    import tempfile

    PROMETHEUS_MULTIPROC_DIR = tempfile.mkdtemp(prefix="mailing-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
    _metrics_dir_owner = os.getpid()

    def _remove_metrics_dir() -> None:
        # Only the creating process: its children (workers, a forked gunicorn) share it.
        if os.getpid() == _metrics_dir_owner:
            shutil.rmtree(PROMETHEUS_MULTIPROC_DIR, ignore_errors=True)

    atexit.register(_remove_metrics_dir)

# Security. Cookies are HTTPS-only and HSTS is sent whenever DEBUG is off; the redirect to
# HTTPS is opt-in (production sets SECURE_SSL_REDIRECT=1) so that tests and plain-HTTP
# development are not redirected. /healthz and /metrics are answered before it (probes
# speak plain HTTP): see ops.probes.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Behind a TLS-terminating proxy (ingress) that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_HSTS_SECONDS = int(env_number("SECURE_HSTS_SECONDS", 31_536_000, int))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Preloading is a commitment to browsers' built-in lists that is slow to undo: asked for.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]  # check --deploy: "not preloaded"
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- Staff UI and sign-in ---------------------------------------------------------
# Staff sign in through the company's OpenID Connect provider (django-allauth); there is no
# local password sign-in and no open sign-up. `make run` starts a development provider.
# The defaults are make run's development provider, under DEBUG only: elsewhere nothing is
# assumed about who may sign in.
OIDC_ISSUER_URL = env_str("OIDC_ISSUER_URL", "http://127.0.0.1:8090" if DEBUG else "").rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID", "mailing-ui" if DEBUG else "")
OIDC_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET", "dev-secret" if DEBUG else "")
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "Company sign-in")
# Staff are identities with a verified e-mail in one of these domains, or in this group
# (the "groups" claim); an empty list / empty group name disables that rule.
OIDC_ALLOWED_EMAIL_DOMAINS = [
    domain.lower()
    for domain in env_list("OIDC_ALLOWED_EMAIL_DOMAINS", "example.com" if DEBUG else "")
]
OIDC_STAFF_GROUP = env_str("OIDC_STAFF_GROUP", "staff")
SOCIALACCOUNT_PROVIDERS: dict[str, dict[str, Any]] = {
    "openid_connect": {
        "OAUTH_PKCE_ENABLED": True,
        "SCOPE": ["openid", "profile", "email", *(["groups"] if OIDC_STAFF_GROUP else [])],
        "APPS": [
            {
                "provider_id": "sso",
                "name": OIDC_PROVIDER_NAME,
                "client_id": OIDC_CLIENT_ID,
                "secret": OIDC_CLIENT_SECRET,
                "settings": {"server_url": OIDC_ISSUER_URL},
            }
        ],
    }
}
SOCIALACCOUNT_ADAPTER = "dashboard.auth.StaffOnlySocialAccountAdapter"
ACCOUNT_ADAPTER = "dashboard.auth.NoLocalAccountAdapter"
SOCIALACCOUNT_ONLY = True  # no local username/password sign-in or sign-up
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_STORE_TOKENS = False
# A staff member known locally (same verified e-mail) is the same person: sign them in.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_LOGOUT_REDIRECT_URL = "dashboard:sign_in"
# Off-boarding (docs/security.md): someone removed at the identity provider keeps a session
# at most SESSION_MAX_AGE_SECONDS after signing in, or SESSION_IDLE_SECONDS after their last
# request; staff status is checked on every request (UI and API) and at every sign-in.
SESSION_MAX_AGE_SECONDS = int(env_number("SESSION_MAX_AGE_SECONDS", 36_000, int))
SESSION_IDLE_SECONDS = int(env_number("SESSION_IDLE_SECONDS", 3_600, int))
SESSION_COOKIE_AGE = SESSION_MAX_AGE_SECONDS
# An API token's lifetime unless its owner picks another (1 to mailing.rules.TOKEN_MAX_DAYS).
API_TOKEN_DAYS = int(env_number("API_TOKEN_DAYS", 90, int))
LOGIN_URL = "dashboard:sign_in"
LOGIN_REDIRECT_URL = "dashboard:home"

# --- HTTP protections: Content-Security-Policy, sign-in rate limit -------------------
# Sign-in attempts (POSTs to these paths) are counted per client address.
LOGIN_RATE_LIMIT = int(env_number("LOGIN_RATE_LIMIT", 20, int))
LOGIN_RATE_WINDOW_SECONDS = int(env_number("LOGIN_RATE_WINDOW_SECONDS", 300, int))
LOGIN_RATE_LIMIT_PATHS = ("/accounts/", "/sign-in/")
# Proxies in front of the app that each append to X-Forwarded-For (the ingress: 1). The
# client address is the entry the outermost one added; 0 trusts the header not at all.
TRUSTED_PROXY_COUNT = int(env_number("TRUSTED_PROXY_COUNT", 0, int))
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more")
# The sign-in counter must be shared by every web process: Redis when there is one.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
