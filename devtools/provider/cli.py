"""The command line: ``python -m devtools.provider`` (no Django needed) and the options that
``manage.py fake_provider`` shares."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from devtools.provider.faults import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_TOKEN,
    FaultConfig,
    config_fields,
)
from devtools.provider.server import DEFAULT_HOST, DEFAULT_PORT, check_exposure, run_forever

_HELP_DEFAULTS = FaultConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The CLI options, shared by ``manage.py fake_provider`` and ``python -m``.

    Fault options default to None so that FaultConfig stays the one place defaults live.
    """
    d = _HELP_DEFAULTS
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument(
        "--token",
        default=None,
        help="the send token it expects (default: STAND_IN_TOKEN, else a development value)",
    )
    parser.add_argument(
        "--admin-token",
        default=None,
        help="bearer token of the /_admin routes (default: STAND_IN_ADMIN_TOKEN, else a "
        "development value, which is refused beyond loopback)",
    )
    parser.add_argument(
        "--latency-ms", type=float, help=f"added to every answer (default {d.latency_ms})"
    )
    parser.add_argument(
        "--latency-jitter-ms", type=float, help="latency varies uniformly by +/- this much"
    )

    def rate(flag: str, what: str) -> None:
        parser.add_argument(flag, type=float, metavar="P", help=f"probability in [0, 1]: {what}")

    rate("--error-rate", "answer 500/502/503")
    rate("--timeout-rate", "hang for --hang-seconds, then 504 (not delivered)")
    parser.add_argument("--hang-seconds", type=float, help=f"default {d.hang_seconds:g}")
    rate("--malformed-rate", "200 with a garbage body (not delivered)")
    rate("--throttle-rate", "429 with Retry-After")
    parser.add_argument(
        "--retry-after", type=int, help=f"Retry-After seconds (default {d.retry_after})"
    )
    rate("--reject-rate", '200 {"code": 1}, a permanent rejection')
    rate("--reset-rate", "abort the connection with no answer")
    rate("--drip-rate", "deliver, then send the body one byte per second")
    parser.add_argument(
        "--outage",
        action="append",
        metavar="START:DURATION",
        help="refuse connections from START to START+DURATION seconds after start; repeatable",
    )
    parser.add_argument("--seed", type=int, help="seed the fault RNG for repeatable runs")
    parser.add_argument(
        "--record", metavar="FILE", help="append every delivery as a JSON line to FILE"
    )


def _parse_outage(value: Any) -> tuple[float, float]:
    if not isinstance(value, str):
        return value  # Already a pair (call_command); FaultConfig validates it.
    start, _, duration = value.partition(":")
    try:
        return float(start), float(duration)  # No colon leaves duration "", which fails too.
    except ValueError:
        raise ValueError(f"--outage must be START:DURATION in seconds, got {value!r}") from None


def config_from_options(options: Mapping[str, Any]) -> FaultConfig:
    """A FaultConfig from parsed CLI options (argparse vars or Django's options dict).

    Options that are absent or None keep FaultConfig's defaults; keys that are not config
    fields (verbosity, host, ...) are ignored. ValueError on bad values.
    """
    fields = config_fields()
    changes = {
        name: value for name, value in options.items() if name in fields and value is not None
    }
    if options.get("outage"):
        changes["outages"] = [_parse_outage(item) for item in options["outage"]]
    return FaultConfig(**changes)


def apply_token_defaults(options: dict[str, Any]) -> None:
    """Tokens not given on the command line come from STAND_IN_TOKEN and
    STAND_IN_ADMIN_TOKEN, else the development defaults; never from PROBE_TOKEN."""
    if options.get("token") is None:
        options["token"] = os.environ.get("STAND_IN_TOKEN") or DEFAULT_TOKEN
    if options.get("admin_token") is None:
        options["admin_token"] = os.environ.get("STAND_IN_ADMIN_TOKEN") or DEFAULT_ADMIN_TOKEN


def prepare(options: dict[str, Any]) -> FaultConfig:
    """Fill in the token defaults and check the options: the config to serve, or
    ValueError (a bad fault value, the default admin token beyond loopback)."""
    apply_token_defaults(options)
    config = config_from_options(options)
    check_exposure(options["host"], options["admin_token"])
    return config


def serve(config: FaultConfig, options: Mapping[str, Any], ready: Callable[[str], None]) -> None:
    """Serve ``config`` as the options say until SIGINT/SIGTERM; ``ready`` gets the URL."""
    run_forever(
        config,
        options["host"],
        options["port"],
        options["record"],
        admin_token=options["admin_token"],
        ready=ready,
    )


def format_banner(base_url: str, config: FaultConfig) -> str:
    """The one line printed at start: what to set PROBE_URL to, and what will go wrong."""
    faults = config.active_faults()
    described = ", ".join(f"{k}={v}" for k, v in faults.items()) if faults else "none"
    return f"Send API stand-in listening: PROBE_URL={base_url}  faults: {described}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.provider",
        description="Local stand-in for the external send API, with fault injection.",
    )
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="default %(default)s")
    options = vars(parser.parse_args(argv))
    try:
        config = prepare(options)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=options["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    def announce(base_url: str) -> None:
        print(format_banner(base_url, config), flush=True)

    try:
        serve(config, options, announce)
    except OSError as exc:  # A taken port or an unwritable --record file: no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
