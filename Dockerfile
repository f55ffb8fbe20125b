# syntax=docker/dockerfile:1
# The mailing service: one image for the web app (gunicorn), the q2 workers and the
# one-off jobs (migrate, send_report, the send API stand-in). See docs/deploy.md;
# `make image-check` builds it and runs it.

# --- builder: wheels of every dependency -------------------------------------------------
FROM python:3.11-slim AS builder
# pip trusts the system's CA store, so a build behind a TLS-inspecting proxy works with the
# host's bundle mounted over it (as `make image-check` does).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# --- runtime -------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
# XDG_RUNTIME_DIR: where gunicorn puts its control socket (and `gunicornc` finds it); its
# default, $HOME/.gunicorn, would be in /app, which the app user must not be able to write.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=project.settings \
    PROMETHEUS_MULTIPROC_DIR=/app/var/metrics \
    XDG_RUNTIME_DIR=/app/var/run \
    LOG_FORMAT=json \
    PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=builder /wheels /wheels
COPY requirements.txt .
RUN pip install --no-index --find-links /wheels -r requirements.txt && rm -rf /wheels
COPY manage.py ./
COPY project ./project
COPY mailing ./mailing
COPY dashboard ./dashboard
COPY ops ./ops
# The send API stand-in (manage.py fake_provider, for the demo profile); not the node OIDC one.
COPY devtools/__init__.py ./devtools/__init__.py
COPY devtools/provider ./devtools/provider
COPY templates ./templates
COPY static ./static
COPY deploy/gunicorn.conf.py deploy/healthcheck.py ./deploy/
# Static files are collected into the image (served by the ingress or a CDN in front).
# The code stays root's; the app user writes only below /app/var.
RUN SECRET_KEY=collectstatic-only-not-a-runtime-key-0123456789abcdefghij \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/var/metrics /app/var/run \
    && chown -R app:app /app/var \
    && chmod 0700 /app/var/run
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]
CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "project.wsgi:application"]
