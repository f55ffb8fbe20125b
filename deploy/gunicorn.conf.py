"""gunicorn settings of the image (override any with GUNICORN_CMD_ARGS)."""

import os

bind = "0.0.0.0:8000"
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
timeout = 30
graceful_timeout = 25
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = "*"  # behind the ingress / compose network only


def child_exit(server, worker):
    # prometheus_client multiprocess mode: forget a dead worker's live gauges.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
