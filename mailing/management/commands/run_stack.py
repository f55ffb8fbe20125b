"""Start everything a developer needs (web, q2 worker, the send API stand-in) and stop it
all on Ctrl-C: the process behind `make run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from devtools.provider import cli
from mailing import selectors
from mailing.tokens import reissue_token

STOP_GRACE_SECONDS = 15
# SIGINT, what a terminal sends on Ctrl-C, is q2's graceful path: idle workers ignore it
# and take their stop pill, a dispatcher finishes what is in flight. runserver, in a
# session of its own, only reliably stops on SIGTERM.
STOP_SIGNALS = {"q2 worker": signal.SIGINT, "send API stand-in": signal.SIGINT}
DEMO_USER = "demo"
OIDC_DEMO_LOGIN = "username demo, password demo-password"  # devtools/oidc/server.mjs
TOKEN_NAME = "make run"  # noqa: S105 - the label of the token, not a secret


class Command(BaseCommand):
    help = "Run the web server, a q2 cluster and the local send API stand-in together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--probe-port", type=int, default=8081)
        parser.add_argument("--oidc-port", type=int, default=8090)
        parser.add_argument(
            "--no-oidc",
            action="store_true",
            help="no development OIDC provider (OIDC_ISSUER_URL points at a real one)",
        )
        parser.add_argument(
            "--no-provider",
            action="store_true",
            help="do not start the stand-in (PROBE_URL points at a real provider)",
        )

    def handle(
        self, *args, host, port, probe_port, no_provider, oidc_port, no_oidc, **options
    ) -> None:
        env = dict(os.environ)
        stand_in_tokens: dict[str, str] = {}
        cli.apply_token_defaults(stand_in_tokens)  # the stand-in's own, from STAND_IN_*
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands: dict[str, list[str]] = {}
        if not no_provider:
            env["PROBE_URL"] = f"http://127.0.0.1:{probe_port}/v1"
            # The workers talk to the stand-in with the stand-in's own token: a real
            # PROBE_TOKEN in this shell never reaches it.
            env["PROBE_TOKEN"] = stand_in_tokens["token"]
            commands["send API stand-in"] = [*manage, "fake_provider", "--port", str(probe_port)]
        if not no_oidc:
            # The development identity provider for the staff UI's sign-in (devtools/oidc).
            env["OIDC_ISSUER_URL"] = f"http://127.0.0.1:{oidc_port}"
            callbacks = {
                f"http://{name}:{port}/accounts/oidc/sso/login/callback/"
                for name in (host, "127.0.0.1", "localhost")
            }
            commands["OIDC provider"] = [
                "node",
                str(settings.BASE_DIR / "devtools" / "oidc" / "server.mjs"),
                "--port",
                str(oidc_port),
                "--client-id",
                settings.OIDC_CLIENT_ID,
                "--client-secret",
                settings.OIDC_CLIENT_SECRET,
                *[arg for url in sorted(callbacks) for arg in ("--redirect-uri", url)],
                # Signing out ends the provider's session too, then comes back to sign-in.
                *[
                    arg
                    for name in sorted({host, "127.0.0.1", "localhost"})
                    for arg in ("--post-logout-redirect-uri", f"http://{name}:{port}/sign-in/")
                ],
            ]
        commands["q2 worker"] = [*manage, "qcluster"]
        commands["web"] = [*manage, "runserver", f"{host}:{port}", "--noreload"]

        token = self._demo_token()
        # Each child leads its own process group, so stopping reaches a child's own children
        # (the q2 workers) and the terminal's Ctrl-C reaches only this supervisor.
        children = {
            name: subprocess.Popen(cmd, env=env, start_new_session=True)
            for name, cmd in commands.items()
        }
        self.stdout.write(
            f"\nMailing service: http://{host}:{port}/  API docs: http://{host}:{port}/docs/\n"
            f"Send API: {env.get('PROBE_URL', settings.PROBE_URL)}"
            + (
                "  (stand-in; its /_admin routes want "
                f'"Authorization: Bearer {stand_in_tokens["admin_token"]}")\n'
                if not no_provider
                else "\n"
            )
            + (
                f"Staff UI sign-in: development OIDC provider at {env['OIDC_ISSUER_URL']}; "
                f"demo staff: {OIDC_DEMO_LOGIN}\n"
                if not no_oidc
                else ""
            )
            + (f"API token of the demo staff user: {token}\n" if token else "")
            + "Ctrl-C stops everything.\n"
        )
        stopping = False

        def request_stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with {child.returncode}; stopping the rest")
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.2)
        self._stop_all(children)
        if exit_code:
            sys.exit(exit_code)

    def _demo_token(self) -> str | None:
        """A fresh API token for the demo user; the one from the previous run is revoked."""
        user = selectors.find_user(DEMO_USER, staff_only=True)
        return None if user is None else reissue_token(user, TOKEN_NAME)

    def _stop_all(self, children: dict[str, subprocess.Popen]) -> None:
        for name, child in children.items():
            if child.poll() is None:
                os.killpg(child.pid, STOP_SIGNALS.get(name, signal.SIGTERM))
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, child in children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it")
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
