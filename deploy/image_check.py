#!/usr/bin/env python3
"""Build the image with podman and prove that it runs: ``make image-check`` (docs/deploy.md).

1. Tools: podman, buildah, runc, debootstrap and psql are installed with apt-get when missing.
2. Base: the Dockerfile's base image is pulled; where no registry answers, a stand-in is made
   with debootstrap (Debian 12 and its Python 3.11), cached as a tarball outside the
   repository, imported with ``podman import`` and tagged in the base's place.
3. Build: ``podman build`` (Docker format, so HEALTHCHECK is kept), then the image's metadata
   is checked (a numeric non-root USER, the HEALTHCHECK, the web port).
4. Each mode runs the project's own containers against this host's PostgreSQL (a database of
   their own, created and dropped) and Redis (a q2 cluster name of their own):
   - ``run``: plain ``podman run`` of migrate, the send API stand-in, web and worker;
   - ``compose``: ``podman-compose`` with docker-compose.yml and the host-services override
     (deploy/compose.host-services.yml).
   Both check the same things: the migration exits 0; ``/healthz`` answers 200; the image's
   HEALTHCHECK passes (``podman healthcheck run``); every process runs as a non-root user;
   gunicorn logs no permission error; a mailing created through the JSON API is sent by the
   worker container to the stand-in; ``podman stop`` ends every container, with its own stop
   signal, within 10 s and without SIGKILL.
5. Whatever it started is removed, also on failure or on SIGINT/SIGTERM: containers, volumes,
   the images it built or imported (unless ``--keep-image``), the databases, the q2 keys.

Every container uses the host's network: the host's PostgreSQL and Redis listen on loopback
only, and the ports (web, stand-in) are free ones chosen at run time.
Run it as root (rootful podman), one at a time on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
HOST_SERVICES_FILE = ROOT / "deploy" / "compose.host-services.yml"

# What podman needs on this kind of machine: runc (crun refuses its hybrid cgroups), and
# explicit ulimits (the defaults are refused). Docker format keeps HEALTHCHECK in the image.
RUNTIME = "runc"
ULIMITS = ("nofile=20000:20000", "nproc=32768:32768")
# Debian package of each command the check needs.
TOOLS = {
    "podman": "podman",
    "buildah": "buildah",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "psql": "postgresql-client",
}
# The stand-in base: Debian 12's Python 3.11, with `python` and `pip` on PATH like the real
# python:3.11-slim. pip may install into the system Python (PEP 668 marker overridden), as it
# does in the real image, where that Python is the image's own.
DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "ca-certificates",
    "python-is-python3",
)
BASE_LABEL = "io.github.mailing.image-check-base"
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
    'CMD ["python3"]',
)
# Trimmed from the stand-in base after debootstrap: package caches and lists, documentation.
BASE_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")

STOP_BOUND_SECONDS = 10.0
SIGKILL_EXIT_CODE = 137
HEALTHZ_DEADLINE_SECONDS = 90.0
SEND_DEADLINE_SECONDS = 120.0
MIGRATE_SECONDS = 300.0


class CheckFailed(Exception):
    """A check did not pass; the message says which and what was seen."""


@dataclass
class Options:
    modes: list[str]
    keep_image: bool
    install: bool
    cache_dir: Path
    base_max_age_days: float
    pull_timeout: float
    debian_mirror: str
    ca_bundle: Path
    database_url: str
    redis_url: str


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        action="append",
        choices=("run", "compose"),
        help="what to check (repeatable; default: both, run first)",
    )
    parser.add_argument(
        "--keep-image",
        action="store_true",
        default=os.environ.get("IMAGE_CHECK_KEEP_IMAGE") == "1",
        help="keep the built image (localhost/mailing:image-check) and the imported base",
    )
    parser.add_argument(
        "--no-install", dest="install", action="store_false", help="never call apt-get"
    )
    args = parser.parse_args(argv)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Options(
        modes=args.mode or ["run", "compose"],
        keep_image=args.keep_image,
        install=args.install,
        cache_dir=Path(
            os.environ.get("IMAGE_CHECK_CACHE") or Path(cache_home) / "mailing-image-check"
        ),
        base_max_age_days=float(os.environ.get("IMAGE_CHECK_BASE_MAX_AGE_DAYS", "7")),
        pull_timeout=float(os.environ.get("IMAGE_CHECK_PULL_TIMEOUT", "30")),
        debian_mirror=os.environ.get("IMAGE_CHECK_DEBIAN_MIRROR", ""),
        ca_bundle=Path(os.environ.get("IMAGE_CHECK_CA_BUNDLE") or default_ca_bundle()),
        database_url=os.environ.get("IMAGE_CHECK_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
        redis_url=os.environ.get("IMAGE_CHECK_REDIS_URL")
        or os.environ.get("REDIS_URL")
        or "redis://127.0.0.1:6379/0",
    )


def default_ca_bundle() -> str:
    """The CA bundle this host trusts, mounted over the build's so pip can verify its index."""
    return ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"


# --- output and commands ----------------------------------------------------------------------

START = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", flush=True)


def run(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = 600,
    log: Path | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command; its output is captured (or written to ``log``) and shown if it fails."""
    if not quiet:
        say("$ " + " ".join(command))
    try:
        if log is not None:
            with log.open("w") as out:
                result = subprocess.run(
                    command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                    timeout=timeout, check=False,
                )  # fmt: skip
            result.stdout = log.read_text()
        else:
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"{command[0]} did not finish within {timeout:.0f} s: {command}") from exc
    if check and result.returncode != 0:
        output = (result.stdout or "") + (result.stderr or "")
        raise CheckFailed(f"exit {result.returncode}: {' '.join(command)}\n{tail(output, 60)}")
    return result


def tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Podman:
    """Rootful podman with this machine's runtime and ulimits, given by a containers.conf of
    its own (CONTAINERS_CONF), so podman-compose's podman calls get them as well."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        conf = workdir / "containers.conf"
        conf.write_text(
            "[containers]\n"
            f"default_ulimits = {json.dumps(list(ULIMITS))}\n"
            "[engine]\n"
            f'runtime = "{RUNTIME}"\n'
            'events_logger = "file"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], env=self.env, **kwargs)

    def exists(self, kind: str, name: str) -> bool:
        return self(kind, "exists", name, check=False, quiet=True).returncode == 0

    def inspect(self, name: str) -> dict[str, Any]:
        result = self("inspect", "--type", "container", name, quiet=True)
        return json.loads(result.stdout)[0]


class Cleanup(contextlib.ExitStack):
    """Undo steps, run last-in first-out; a failing one is reported and the others still run."""

    def add(self, what: str, undo: Callable[[], object]) -> None:
        def guarded() -> None:
            try:
                undo()
            except Exception as exc:
                say(f"cleanup: {what} failed: {exc}")

        self.callback(guarded)

    def __exit__(self, *exc_info: Any) -> bool:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short.
        signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
        try:
            return bool(super().__exit__(*exc_info))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the check like Ctrl-C does, through the cleanup."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


# --- 1. tools ------------------------------------------------------------------------------------


def ensure_tools(options: Options) -> None:
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing and not options.install:
        raise CheckFailed(f"missing Debian packages: {' '.join(missing)} (and --no-install)")
    if missing:
        if shutil.which("apt-get") is None:
            raise CheckFailed(f"missing {' '.join(missing)}, and no apt-get to install them")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=apt_env)
        run(["apt-get", "install", "-y", "-qq", *missing], env=apt_env, timeout=900)
    if os.geteuid() != 0:
        raise CheckFailed("run as root: the check uses rootful podman")
    if "compose" in options.modes and podman_compose_command() is None:
        raise CheckFailed("no podman-compose (requirements-dev.txt: make install)")


def podman_compose_command() -> str | None:
    """podman-compose of this Python's environment (the project's virtualenv), else PATH's."""
    beside = Path(sys.executable).parent / "podman-compose"
    return str(beside) if beside.is_file() else shutil.which("podman-compose")


# --- 2. base image -------------------------------------------------------------------------------


def dockerfile_bases() -> list[str]:
    """The images the Dockerfile's stages start from (not its own stages)."""
    stages: set[str] = set()
    bases: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if not match:
            continue
        image, stage = match.group(1), match.group(2)
        if image.lower() not in stages and image not in bases:
            bases.append(image)
        if stage:
            stages.add(stage.lower())
    return bases


def qualified(image: str) -> str:
    """``python:3.11-slim`` as podman stores a pulled Docker Hub image."""
    first = image.split("/")[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def prepare_base(podman: Podman, options: Options, cleanup: Cleanup, workdir: Path) -> str:
    """Pull the base; where no registry answers, stand one in. Returns how it was had."""
    bases = dockerfile_bases()
    if len(bases) != 1 or not re.fullmatch(r"python:3\.11(-slim)?(-bookworm)?", bases[0]):
        raise CheckFailed(f"the stand-in base replaces python:3.11-slim only; FROM says {bases}")
    name = qualified(bases[0])
    pulled = podman(
        "pull", "--quiet", name, check=False, timeout=options.pull_timeout + 30, quiet=True
    ) if options.pull_timeout > 0 else None  # fmt: skip
    if pulled is not None and pulled.returncode == 0:
        say(f"base: pulled {name}")
        return "pulled"
    if pulled is not None:
        say(f"base: {name} cannot be pulled ({tail(pulled.stderr, 1)})")
    if podman.exists("image", name):
        labels = podman("image", "inspect", "--format", "{{json .Labels}}", name, quiet=True)
        ours = BASE_LABEL in (json.loads(labels.stdout) or {})
        say(
            f"base: using the local {name}"
            + (" (a stand-in left by an earlier run)" if ours else "")
        )
        if ours and not options.keep_image:
            cleanup.add("untag the base", lambda: podman("rmi", name, check=False))
        return "local"
    tarball, made = debootstrap_tarball(options, workdir)
    stand_in = f"localhost/mailing-image-check-base:{DEBIAN_SUITE}"
    changes = [
        arg
        for change in (*BASE_CHANGES, f"LABEL {BASE_LABEL}={tarball.name}")
        for arg in ("--change", change)
    ]
    podman("import", *changes, str(tarball), stand_in, timeout=600)
    podman("tag", stand_in, name)
    if not options.keep_image:
        cleanup.add("remove the stand-in base", lambda: podman("rmi", name, stand_in, check=False))
    say(f"base: {name} is Debian {DEBIAN_SUITE} made by debootstrap ({tarball})")
    return "debootstrap" if made else "debootstrap, cached"


def debootstrap_tarball(options: Options, workdir: Path) -> tuple[Path, bool]:
    """The cached stand-in root file system, made anew when missing or older than its age."""
    key = hashlib.sha256(" ".join((DEBIAN_SUITE, *DEBOOTSTRAP_PACKAGES, *BASE_TRIM)).encode())
    tarball = options.cache_dir / f"debootstrap-{DEBIAN_SUITE}-{key.hexdigest()[:12]}.tar"
    if tarball.is_file():
        age_days = (time.time() - tarball.stat().st_mtime) / 86400
        if age_days <= options.base_max_age_days:
            say(f"base: cached root file system from {age_days:.1f} days ago")
            return tarball, False
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="rootfs-", dir=options.cache_dir))
    try:
        command = [
            "debootstrap", "--variant=minbase", "--include=" + ",".join(DEBOOTSTRAP_PACKAGES),
            DEBIAN_SUITE, str(target),
        ]  # fmt: skip
        if options.debian_mirror:
            command.append(options.debian_mirror)
        run(command, log=workdir / "debootstrap.log", timeout=1200)
        for part in BASE_TRIM:
            for child in (target / part).glob("*"):
                remove_tree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        partial = tarball.with_suffix(".partial")
        run(["tar", "--numeric-owner", "-C", str(target), "-cf", str(partial), "."])
        partial.replace(tarball)
    finally:
        remove_tree(target)
    return tarball, True


def remove_tree(path: Path) -> None:
    """Remove a directory, first unmounting whatever debootstrap may have left mounted in it."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        run(["umount", "--lazy", mount], check=False)
    shutil.rmtree(path, ignore_errors=True)


# --- 3. build ---------------------------------------------------------------------------------


def build_image(
    podman: Podman, options: Options, cleanup: Cleanup, image: str, workdir: Path
) -> None:
    if not options.ca_bundle.is_file():
        raise CheckFailed(f"no CA bundle at {options.ca_bundle} (IMAGE_CHECK_CA_BUNDLE)")
    ulimits = [arg for limit in ULIMITS for arg in ("--ulimit", limit)]
    # Registered first: a build that fails half-way may still leave the tag.
    if not options.keep_image:
        cleanup.add("remove the image", lambda: podman("rmi", "--force", image, check=False))
    podman(
        "build", "--pull=never", "--format", "docker", "--layers=false", "--network", "host",
        *ulimits, "--volume", f"{options.ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro",
        "--file", str(ROOT / "Dockerfile"), "--tag", image, str(ROOT),
        log=workdir / "build.log", timeout=1800,
    )  # fmt: skip
    inspected = json.loads(podman("image", "inspect", image, quiet=True).stdout)[0]
    config = inspected["Config"]
    user = config.get("User", "")
    if not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user):
        raise CheckFailed(f"the image's USER is {user!r}: want a numeric non-root uid")
    healthcheck = (inspected.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test")
    if not healthcheck:
        raise CheckFailed("the image has no HEALTHCHECK (was it built in Docker format?)")
    if "8000/tcp" not in (config.get("ExposedPorts") or {}):
        raise CheckFailed(f"the image exposes {config.get('ExposedPorts')}, not 8000/tcp")
    say(f"image {image}: USER {user}, HEALTHCHECK {' '.join(healthcheck[1:])}")


# --- 4. the running containers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def create_database(options: Options, cleanup: Cleanup, name: str) -> str:
    admin = with_database(options.database_url, "postgres")
    run(["psql", admin, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'])
    cleanup.add(
        f"drop database {name}",
        lambda: run(["psql", admin, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']),
    )
    return with_database(options.database_url, name)


def forget_queue(options: Options, cleanup: Cleanup, cluster: str) -> None:
    """Delete the q2 keys of the check's cluster name from the shared Redis afterwards."""
    if shutil.which("redis-cli") is None:
        return

    def delete() -> None:
        keys = run(
            ["redis-cli", "-u", options.redis_url, "--scan", "--pattern", f"django_q:{cluster}:*"],
            quiet=True,
        )
        for key in keys.stdout.split():
            run(["redis-cli", "-u", options.redis_url, "DEL", key], quiet=True)

    cleanup.add("delete the q2 keys", delete)


@dataclass
class Stack:
    """Where one mode's containers are and what they were given."""

    web_port: int
    provider_port: int
    env: dict[str, str]
    stand_in_env: dict[str, str]
    containers: dict[str, str] = field(default_factory=dict)  # service -> container name
    began: datetime = field(default_factory=lambda: datetime.now(UTC))
    compose: list[str] = field(default_factory=list)  # the podman-compose command, if any
    compose_env: dict[str, str] = field(default_factory=dict)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def provider_url(self) -> str:
        return f"http://127.0.0.1:{self.provider_port}"


def stack_environment(
    database_url: str, redis_url: str, cluster: str, web_port: int, provider_port: int
) -> dict[str, str]:
    """The settings the containers get: production-like (DEBUG off, keys of their own)."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "Q_CLUSTER_NAME": cluster,
        "Q_WORKERS": "3",
        "DISPATCHER_SLOTS": "1",
        "PROBE_URL": f"http://127.0.0.1:{provider_port}/v1",
        "PROBE_TOKEN": secrets.token_urlsafe(24),
        "METRICS_TOKEN": secrets.token_urlsafe(32),
        "PORT": str(web_port),
        "WEB_PORT": str(web_port),
        "PROVIDER_PORT": str(provider_port),
    }


def new_stack(options: Options, cleanup: Cleanup, run_id: str, mode: str) -> Stack:
    """A database and a q2 cluster name of the mode's own, two free ports, the settings."""
    cluster = f"image-check-{run_id}-{mode}"
    database = create_database(options, cleanup, f"image_check_{run_id}_{mode}")
    forget_queue(options, cleanup, cluster)
    web_port, provider_port = free_port(), free_port()
    env = stack_environment(database, options.redis_url, cluster, web_port, provider_port)
    # The stand-in has tokens of its own and never sees the app's settings.
    stand_in = {
        "STAND_IN_TOKEN": env["PROBE_TOKEN"],
        "STAND_IN_ADMIN_TOKEN": secrets.token_urlsafe(24),
    }
    return Stack(web_port, provider_port, env, stand_in)


def run_mode(podman: Podman, stack: Stack, cleanup: Cleanup, image: str, run_id: str) -> None:
    """migrate, the stand-in, web and worker with plain ``podman run``."""
    app_env, stand_in_env = podman.workdir / "app.env", podman.workdir / "stand-in.env"
    for path, values in ((app_env, stack.env), (stand_in_env, stack.stand_in_env)):
        path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))

    def start(service: str, *command: str, detach: bool = True, healthcheck: bool = False) -> None:
        name = f"mailing-image-check-{run_id}-{service}"
        cleanup.add(
            f"remove {name}",
            lambda: podman("rm", "--force", "--time", "0", name, check=False, quiet=True),
        )
        stack.containers[service] = name
        flags = ["--detach"] if detach else []
        if not healthcheck:
            flags.append("--no-healthcheck")
        env_file = stand_in_env if service == "provider" else app_env
        flags += ["--network", "host", "--env-file", str(env_file), "--stop-timeout", "30"]
        podman("run", "--name", name, *flags, image, *command, timeout=MIGRATE_SECONDS)

    start("migrate", "python", "manage.py", "migrate", "--noinput", detach=False)
    provider = ("python", "-m", "devtools.provider", "--host", "127.0.0.1")
    start("provider", *provider, "--port", str(stack.provider_port))
    start("web", healthcheck=True)  # the image's own command and HEALTHCHECK
    start("worker", "python", "manage.py", "qcluster")


def compose_mode(podman: Podman, stack: Stack, cleanup: Cleanup, image: str, run_id: str) -> None:
    """The same services through podman-compose, the override putting them on the host."""
    project = f"mailing-image-check-{run_id}"
    empty_env = podman.workdir / "compose.env"
    empty_env.write_text("")  # a developer's .env does not apply: only the check's settings
    compose = [
        podman_compose_command() or "podman-compose",
        "--project-name", project, "--env-file", str(empty_env),
        "--file", str(COMPOSE_FILE), "--file", str(HOST_SERVICES_FILE), "--profile", "demo",
    ]  # fmt: skip
    # POSTGRES_PASSWORD: compose requires it, though the override starts no PostgreSQL.
    env = {
        **podman.env, **stack.env, **stack.stand_in_env, "MAILING_IMAGE": image,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
    }  # fmt: skip
    stack.compose, stack.compose_env = compose, env
    down_log = podman.workdir / "compose-down.log"
    cleanup.add(
        "podman-compose down",
        lambda: run([*compose, "down", "--volumes", "--timeout", "0"], env=env, log=down_log),
    )
    up = [*compose, "up", "--detach", "--no-build", "migrate", "provider", "web", "worker"]
    run(up, env=env, log=podman.workdir / "compose-up.log", timeout=MIGRATE_SECONDS)
    listed = podman(
        "ps", "--all", "--format", "json", "--filter", f"label=io.podman.compose.project={project}",
        quiet=True,
    )  # fmt: skip
    for container in json.loads(listed.stdout or "[]"):
        service = (container.get("Labels") or {}).get("com.docker.compose.service")
        if service:
            stack.containers[service] = container["Names"][0]
    if set(stack.containers) != {"migrate", "provider", "web", "worker"}:
        raise CheckFailed(
            f"podman-compose made {stack.containers}: want migrate, provider, web, worker"
        )


def http_json(
    method: str, url: str, token: str | None = None, body: object = None, timeout: float = 10
) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - the check's own loopback URLs
        url, method=method, data=None if body is None else json.dumps(body).encode()
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:500]


def died(podman: Podman, container: str, since: datetime) -> list[tuple[datetime, int]]:
    """When each run of a container ended, and its exit code, oldest first."""
    events = podman(
        "events", "--stream=false", "--format", "json",
        "--since", (since - timedelta(seconds=1)).isoformat(),
        "--filter", f"container={container}", "--filter", "event=died", quiet=True,
    ).stdout  # fmt: skip
    found = [json.loads(line) for line in events.splitlines() if line.strip()]
    # podman leaves ContainerExitCode out when it is 0.
    return sorted((timestamp(e["Time"]), int(e.get("ContainerExitCode", 0))) for e in found)


def timestamp(value: str) -> datetime:
    """A podman time (``2026-12-01T21:40:30.123456789Z`` or with an offset) as a datetime."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
    if not match:
        raise CheckFailed(f"unreadable time from podman: {value!r}")
    fraction = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + fraction + zone)


def wait_until(
    what: str, deadline_seconds: float, probe: Callable[[], object], alive: Callable[[], None]
) -> Any:
    """Poll ``probe`` until it returns something true; ``alive`` raises if a container died."""
    deadline = time.monotonic() + deadline_seconds
    last: object = None
    while time.monotonic() < deadline:
        alive()
        try:
            last = probe()
        except (OSError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise CheckFailed(f"{what}: not within {deadline_seconds:.0f} s (last: {last!r})")


def check_stack(podman: Podman, stack: Stack, mode: str) -> dict[str, float]:
    """Everything both modes must show; returns the stop time of each container."""
    timings: dict[str, float] = {}

    def alive() -> None:
        for service in ("provider", "web", "worker"):
            state = podman.inspect(stack.containers[service])["State"]
            if not state.get("Running"):
                raise CheckFailed(
                    f"{service} is not running: {state.get('Status')} exit {state.get('ExitCode')}"
                )

    def migrated() -> dict[str, Any] | None:
        state: dict[str, Any] = podman.inspect(stack.containers["migrate"])["State"]
        return None if state.get("Running") else state

    wait_until("migrate ends", MIGRATE_SECONDS, migrated, lambda: None)
    # Every run of migrate (podman-compose 1.6 starts it again with each service that depends
    # on it, see docs/deploy.md) exits 0, and the first has ended before web and worker start:
    # what compose's service_completed_successfully promises, so no code runs on an old schema.
    runs = died(podman, stack.containers["migrate"], stack.began)
    if not runs or any(code != 0 for _, code in runs):
        raise CheckFailed(f"migrate: exit codes {[code for _, code in runs]}")
    for service in ("web", "worker"):
        started = podman.inspect(stack.containers[service])["State"]["StartedAt"]
        if timestamp(started) < runs[0][0]:
            raise CheckFailed(f"{service} started at {started}, before migrate ended")
    say(f"{mode}: migrate exited 0 ({len(runs)} run(s)) before web and worker started")

    def healthz() -> bool:
        status, body = http_json("GET", stack.web_url + "/healthz")
        return status == 200 and isinstance(body, dict) and body.get("status") == "ok"

    wait_until("/healthz answers 200", HEALTHZ_DEADLINE_SECONDS, healthz, alive)
    say(f"{mode}: /healthz 200 on {stack.web_url}")

    checked = ["web"] + (["worker", "provider"] if mode == "compose" else [])

    def healthy(service: str) -> bool:
        result = podman("healthcheck", "run", stack.containers[service], check=False, quiet=True)
        if result.returncode != 0:
            raise ValueError(f"exit {result.returncode}: {tail(result.stdout + result.stderr, 5)}")
        return True

    for service in checked:
        # Compose's own health checks (worker, stand-in) may need their start period.
        wait_until(
            f"podman healthcheck run ({service})",
            HEALTHZ_DEADLINE_SECONDS,
            lambda s=service: healthy(s),
            alive,
        )
    say(f"{mode}: health checks pass: {', '.join(checked)}")

    for service in ("provider", "web", "worker"):
        top = podman("top", stack.containers[service], "user", "pid", "args", quiet=True).stdout
        users = {line.split()[0] for line in top.splitlines()[1:] if line.strip()}
        if not users or users & {"root", "0"}:
            raise CheckFailed(f"{service} runs processes as {users}:\n{top}")
    say(f"{mode}: every process of provider, web, worker runs as a non-root user")

    token = podman(
        "exec",
        stack.containers["web"],
        "python",
        "manage.py",
        "create_api_token",
        "image-check",
        "--create-user",
        quiet=True,
    ).stdout.split()[-1]
    api = stack.web_url + "/api/v1"
    phone = "7916" + "".join(secrets.choice("0123456789") for _ in range(7))
    status, client = http_json(
        "POST", api + "/clients", token, {"phone": phone, "tag": "image-check", "timezone": "UTC"}
    )
    if status != 201:
        raise CheckFailed(f"POST /clients: {status} {client}")
    now = datetime.now(UTC)
    status, mailing = http_json("POST", api + "/mailings", token, {
        "start_at": now.isoformat(), "end_at": (now + timedelta(hours=1)).isoformat(),
        "text": "image check", "filter": {"tags": ["image-check"]},
    })  # fmt: skip
    if status != 201:
        raise CheckFailed(f"POST /mailings: {status} {mailing}")
    started = time.monotonic()

    def sent() -> bool:
        status, body = http_json("GET", f"{api}/mailings/{mailing['id']}", token)
        return status == 200 and body["stats"]["total"] == 1 and body["stats"]["sent"] == 1

    wait_until("the worker sends the mailing", SEND_DEADLINE_SECONDS, sent, alive)
    status, messages = http_json("GET", f"{api}/mailings/{mailing['id']}/messages", token)
    message_ids = [item["id"] for item in messages["items"]] if status == 200 else []
    admin_token = stack.stand_in_env["STAND_IN_ADMIN_TOKEN"]
    status, accepted = http_json("GET", stack.provider_url + "/_admin/accepted", admin_token)
    if status != 200 or not message_ids or not set(message_ids) <= set(accepted.get("ids", [])):
        raise CheckFailed(
            f"the stand-in did not record messages {message_ids}: {status} {accepted}"
        )
    took = time.monotonic() - started
    say(f"{mode}: mailing sent by the worker in {took:.1f} s; the stand-in has {message_ids}")

    web_log = podman("logs", stack.containers["web"], quiet=True)
    errors = [
        line
        for line in (web_log.stdout + web_log.stderr).splitlines()
        if "Permission denied" in line or "[ERROR]" in line
    ]
    if errors:
        raise CheckFailed("web logged errors:\n" + "\n".join(errors[:10]))

    slow = []
    for service in ("worker", "web", "provider"):
        name = stack.containers[service]
        config = podman.inspect(name)["Config"]
        stop_signal = str(config.get("StopSignal") or "15")
        if stop_signal.isdigit():
            stop_signal = signal.Signals(int(stop_signal)).name
        began = time.monotonic()
        if stack.compose:
            # Through compose, with the service's own stop_grace_period as the deadline.
            run([*stack.compose, "stop", service], env=stack.compose_env, quiet=True, timeout=120)
        else:
            podman("stop", name, quiet=True, timeout=120)
        timings[service] = elapsed = time.monotonic() - began
        code = podman.inspect(name)["State"].get("ExitCode")
        verdict = "ok"
        if code == SIGKILL_EXIT_CODE:
            verdict = "KILLED"
        elif elapsed >= STOP_BOUND_SECONDS:
            verdict = "TOO SLOW"
        if verdict != "ok":
            slow.append(service)
        how = "podman-compose stop" if stack.compose else "podman stop"
        say(f"{mode}: {how} {service} ({stop_signal}): {elapsed:.1f} s, exit {code} {verdict}")
    if slow:
        bound = f"{STOP_BOUND_SECONDS:.0f} s"
        raise CheckFailed(f"{', '.join(slow)}: not ended by its stop signal within {bound}")
    return timings


def show_logs(podman: Podman, stack: Stack) -> None:
    compose_log = podman.workdir / "compose-up.log"
    if compose_log.is_file():
        print(f"--- podman-compose up ---\n{tail(compose_log.read_text(), 40)}", flush=True)
    for service, name in stack.containers.items():
        logs = podman("logs", "--tail", "40", name, check=False, quiet=True)
        print(
            f"--- last lines of {service} ({name}) ---\n{tail(logs.stdout + logs.stderr, 40)}",
            flush=True,
        )


def main(argv: Sequence[str]) -> int:
    options = parse_options(argv)
    stop_on_signals()
    run_id = secrets.token_hex(3)
    image = f"localhost/mailing:image-check-{run_id}"
    steps: dict[str, float] = {}
    failures: list[str] = []
    mark = time.monotonic()

    def step(name: str) -> None:
        nonlocal mark
        steps[name] = time.monotonic() - mark
        mark = time.monotonic()

    try:
        # The work directory (containers.conf, logs) outlives the cleanup that needs it.
        with (
            tempfile.TemporaryDirectory(prefix="mailing-image-check-") as tmp,
            Cleanup() as cleanup,
        ):
            workdir = Path(tmp)
            ensure_tools(options)
            step("tools")
            podman = Podman(workdir)
            base = prepare_base(podman, options, cleanup, workdir)
            step(f"base ({base})")
            build_image(podman, options, cleanup, image, workdir)
            step("build")
            for mode in options.modes:
                # Each mode is checked even when the one before failed; all failures are told.
                try:
                    check_mode(podman, options, image, run_id, mode)
                except CheckFailed as exc:
                    failures.append(f"{mode} mode: {exc}")
                step(f"{mode} mode")
    except CheckFailed as exc:
        failures.append(str(exc))
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc}); cleaned up")
        return 130
    for failure in failures:
        say(f"FAILED: {failure}")
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in steps.items())
    say(f"image check {'FAILED' if failures else 'passed'}: {timings}")
    return 1 if failures else 0


def check_mode(podman: Podman, options: Options, image: str, run_id: str, mode: str) -> None:
    """Start one mode's stack, check it, and remove it (its database too) whatever happened."""
    with Cleanup() as cleanup:
        stack = new_stack(options, cleanup, run_id, mode)
        try:
            start_stack = run_mode if mode == "run" else compose_mode
            start_stack(podman, stack, cleanup, image, run_id)
            check_stack(podman, stack, mode)
        except BaseException:
            show_logs(podman, stack)
            raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
