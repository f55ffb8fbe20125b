"""gunicorn settings of the image (override any with GUNICORN_CMD_ARGS)."""

import os

# PORT is the image's (default 8000); the image's HEALTHCHECK asks the same port.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
timeout = 30
# SIGTERM (`docker stop`, Kubernetes) must stop the web within 10 s (docker's own wait): a
# request in flight gets 6 s to finish, then its worker is killed.
graceful_timeout = 6
# Workers' heartbeat files in memory: a container's /tmp may be a slow overlay.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - gunicorn's own files, a tmpfs of the container
accesslog = "-"
errorlog = "-"
# Whose X-Forwarded-Proto (and the like) gunicorn believes: the proxies' addresses or
# networks, never "*" (any client could claim HTTPS). gunicorn's own default otherwise.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def child_exit(server, worker):
    # prometheus_client multiprocess mode: forget a dead worker's live gauges.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
