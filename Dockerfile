# syntax=docker/dockerfile:1
# The mailing service: one image for the web app (gunicorn), the q2 workers and the
# one-off jobs (migrate, send_report, fake_provider). See docs/deploy.md.

# --- builder: wheels of every dependency -------------------------------------------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# --- runtime -------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=project.settings \
    PROMETHEUS_MULTIPROC_DIR=/app/var/metrics \
    LOG_FORMAT=json
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
COPY deploy/gunicorn.conf.py ./deploy/gunicorn.conf.py
# Static files are collected into the image (served by the ingress or a CDN in front).
RUN SECRET_KEY=collectstatic-only-not-a-runtime-key-0123456789abcdefghij \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/var/metrics \
    && chown -R app:app /app/var
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "project.wsgi:application"]
