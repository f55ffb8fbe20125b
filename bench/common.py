"""Shared helpers of the benchmarks: a throw-away PostgreSQL database per script, the send
API stand-in and other subprocesses on free ports, percentiles and table printing.

Every script creates its own database ``bench_<name>`` through the admin connection
``BENCH_DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/postgres``) and drops
it at the end; it never touches any other database.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
MANAGE = str(ROOT / "manage.py")
DEFAULT_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PROBE_TOKEN = "bench-token"
# The stand-in's admin routes want their own token (the development default: loopback only).
STAND_IN_ADMIN = {"Authorization": "Bearer dev-admin-token"}
_NAME_RE = re.compile(r"^bench_[a-z0-9_]+$")


# --- small utilities ----------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # a server not up yet, a table not there yet
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} ({last_error!r})")


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{max(digits, 2)}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print (and return) a Markdown table, so the output can be pasted into the docs."""
    cells = [[fmt(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    text = "\n".join(
        [
            f"\n### {title}\n",
            line(headers),
            "| " + " | ".join("-" * w for w in widths) + " |",
            *(line(r) for r in cells),
            "",
        ]
    )
    print(text, flush=True)
    return text


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def retrying_db(func: Callable[[], Any], attempts: int = 60) -> Any:
    """Run a read of the bench process, waiting out a database restart (the box is shared:
    the server may be restarted by someone else during a long run)."""
    from django.db import InterfaceError, OperationalError, connection

    for attempt in range(attempts):
        try:
            return func()
        except (OperationalError, InterfaceError):
            if attempt == attempts - 1:
                raise
            log("database unavailable; retrying in 1 s")
            connection.close()
            time.sleep(1.0)
    return None


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mb(pid: int) -> float | None:
    """VmRSS of a process in MB, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (through /proc/<pid>/task/*/children)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    stack.append(int(child))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def http_json(
    url: str,
    data: dict[str, Any] | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> Any:
    body = None if data is None else json.dumps(data).encode()
    method = "GET" if data is None else "POST"
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=body, method=method, headers=headers or {}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


# --- arguments and results ----------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes (seconds), for make bench")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    return p


@dataclass
class Results:
    """What a script measured: tables (printed) and raw figures (for --json)."""

    name: str
    started: float = field(default_factory=time.time)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.tables.append(print_table(title, headers, rows))

    def write(self, path: str | None) -> None:
        if not path:
            return
        payload = {
            "name": self.name,
            "seconds": round(time.time() - self.started, 1),
            "load_average_end": load_average(),
            "figures": self.figures,
            "tables": self.tables,
        }
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


# --- the database -------------------------------------------------------------------


def admin_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)


def database_url(name: str) -> str:
    parts = urlsplit(admin_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_connection():
    import psycopg2

    conn = psycopg2.connect(admin_url())
    conn.autocommit = True
    return conn


def drop_database(name: str) -> None:
    """Drop ``bench_*`` database ``name`` (ending its sessions first). Nothing else."""
    if not _NAME_RE.match(name):
        raise ValueError(f"refusing to drop {name!r}: only bench_* databases")
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        conn.close()


def create_database(name: str) -> str:
    """A fresh empty ``bench_*`` database; returns its URL."""
    drop_database(name)
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return database_url(name)


def postgres_version() -> str:
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


class Bench:
    """One benchmark run: its database, environment, subprocesses; cleaned up on exit.

    ``with Bench("fanout", args) as bench:`` creates ``bench_fanout``, migrates it, sets up
    Django in this process against it (LOG_LEVEL=WARNING), and on exit stops every
    subprocess it started and drops the database.
    """

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        suffix = os.environ.get("BENCH_DATABASE_SUFFIX", "")
        self.name = f"bench_{name}_{suffix}" if suffix else f"bench_{name}"
        self.args = args
        self.url = ""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.procs: list[Proc] = []
        self.results = Results(name)

    def __enter__(self) -> Bench:
        log(f"{self.name}: load average {load_average()}; creating the database")
        self.url = create_database(self.name)
        metrics_dir = self.tmp / "prometheus"
        metrics_dir.mkdir()
        os.environ.update(self.env())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        from django.db import connections

        connections.close_all()
        if not getattr(self.args, "keep_db", False):
            drop_database(self.name)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.results.figures["load_average_end"] = load_average()
        log(f"{self.name}: done; load average {load_average()}")
        self.results.write(getattr(self.args, "json", None))

    def env(self, **extra: object) -> dict[str, str]:
        """The environment of this process and its subprocesses."""
        env = {
            "DATABASE_URL": self.url,
            "LOG_LEVEL": "WARNING",
            "Q_LOG_LEVEL": "WARNING",
            "DEBUG": "0",
            # Production settings refuse to start without a key of their own.
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "PROBE_TOKEN": PROBE_TOKEN,
            "Q_CLUSTER_NAME": self.name,
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / "prometheus"),
        }
        env.pop("REDIS_URL", None)
        env.update({key: str(value) for key, value in extra.items()})
        return env

    def start(self, label: str, command: list[str], **env: object) -> Proc:
        """Start a subprocess (own process group, output to a log file in the temp dir)."""
        full_env = dict(os.environ)
        full_env.pop("REDIS_URL", None)  # the project's default broker: the database
        full_env.update(self.env(**env))
        logfile = self.tmp / f"{label}-{len(self.procs)}.log"
        handle = logfile.open("wb")
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        proc = Proc(label, popen, logfile)
        self.procs.append(proc)
        return proc

    def stand_in(self, latency_ms: float = 0.0, port: int | None = None) -> StandIn:
        port = port or free_port()
        proc = self.start(
            "stand-in",
            [
                PYTHON,
                "-m",
                "devtools.provider",
                "--port",
                str(port),
                "--latency-ms",
                str(latency_ms),
                "--token",
                PROBE_TOKEN,
                "--log-level",
                "WARNING",
            ],
        )
        stand_in = StandIn(proc, port)
        wait_for(stand_in.stats, 20, "the send API stand-in")
        return stand_in

    def gunicorn(
        self,
        workers: int = 2,
        probe_url: str = "http://127.0.0.1:9/v1",
        settings_module: str = "project.settings",
    ) -> str:
        """The web app under gunicorn with ``workers`` workers; returns its base URL."""
        port = free_port()
        self.start(
            "gunicorn",
            [
                str(Path(PYTHON).parent / "gunicorn"),
                "project.wsgi",
                "--workers",
                str(workers),
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ],
            PROBE_URL=probe_url,
            DJANGO_SETTINGS_MODULE=settings_module,
        )
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_json(f"{base}/healthz", timeout=2), 30, "gunicorn")
        return base

    def qcluster(self, label: str, probe_url: str, **env: object) -> Proc:
        return self.start(label, [PYTHON, MANAGE, "qcluster"], PROBE_URL=probe_url, **env)


@dataclass
class Proc:
    label: str
    popen: subprocess.Popen
    logfile: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGINT, grace: float = 15.0) -> None:
        """Signal our own process group; SIGKILL it if it has not ended within ``grace``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        # Children left behind in the group (e.g. q2 workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class StandIn:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        return http_json(f"{self.admin}/stats", timeout=2.0, headers=STAND_IN_ADMIN)

    def configure(self, **config: Any) -> None:
        http_json(f"{self.admin}/config", config, headers=STAND_IN_ADMIN)

    def reset(self) -> None:
        http_json(f"{self.admin}/reset", {}, headers=STAND_IN_ADMIN)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.port}/_admin"


# --- data ---------------------------------------------------------------------------

ZONES = ("Europe/Moscow", "Asia/Yekaterinburg", "Asia/Novosibirsk", "Asia/Vladivostok")


def insert_clients(count: int, tag: str = "bench", start: int = 1) -> None:
    """``count`` clients with one SQL statement (phones 79000000001, ...)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "INSERT INTO mailing_client (phone, operator_code, tag, timezone, created_at, "
            "updated_at) SELECT '79' || lpad(g::text, 9, '0'), "
            "'9' || lpad((g %% 100)::text, 2, '0'), %s, "
            "(%s::text[])[1 + g %% 4], now(), now() FROM generate_series(%s, %s) AS g",
            [tag, list(ZONES), start, start + count - 1],
        )
        cur.execute("ANALYZE mailing_client")


def create_running_mailing(tags: Sequence[str] = ("bench",), window: bool = False, hours: int = 6):
    """A mailing that is running at once, matching ``tags`` (not fanned out yet)."""
    from datetime import time as dtime
    from datetime import timedelta

    from django.utils import timezone

    from mailing import services

    now = timezone.now()
    send_window = None
    if window:
        send_window = services.SendWindow(dtime(0, 0), dtime(23, 59))
    return services.create_mailing(
        start_at=now - timedelta(seconds=1),
        end_at=now + timedelta(hours=hours),
        text="Benchmark: spring sale, 20% off until Sunday",
        tags=list(tags),
        send_window=send_window,
    )


def fan_out_completely(mailing_id: int) -> None:
    """Run dispatcher ticks until the mailing's fan-out is complete (a tick fans out a
    slice: the first chunk alone, then chunks for up to ``FANOUT_SLICE_SECONDS``)."""
    from django.utils import timezone

    from mailing.engine import lifecycle
    from mailing.models import Mailing

    while not Mailing.objects.filter(pk=mailing_id, fanned_out_at__isnull=False).exists():
        lifecycle.tick(timezone.now())


def api_token() -> str:
    """A bearer token of the JSON API for a fresh staff user."""
    from django.contrib.auth import get_user_model

    from mailing.tokens import issue_token

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "email": "bench@example.com"}
    )
    return issue_token(user, "bench")[1]


def reset_queue_tables(checkpoint: bool = False) -> None:
    """Empty messages, mailings, events and the q2 tables (between runs of one script).

    ``checkpoint``: then run a CHECKPOINT, so the next run does not pay for the previous
    one's WAL (PostgreSQL requests a checkpoint every ~540 MB of WAL at the default
    ``max_wal_size`` of 1 GB, which is one million-message fan-out).
    """
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE mailing_message, mailing_event, mailing_mailing, mailing_dispatcherslot, "
            "django_q_ormq, django_q_task"
        )
        if checkpoint:
            cur.execute("CHECKPOINT")


@contextlib.contextmanager
def sampling(pid_source: Callable[[], list[int]], interval: float = 0.5) -> Iterator[list]:
    """Sample the RSS of the processes ``pid_source`` returns, in a thread, every ``interval``.

    Yields a list that fills with ``(monotonic time, {pid: rss_mb})``.
    """
    import threading

    samples: list[tuple[float, dict[int, float]]] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            point = {}
            for pid in pid_source():
                value = rss_mb(pid)
                if value is not None:
                    point[pid] = value
            samples.append((time.monotonic(), point))
            stop.wait(interval)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()
