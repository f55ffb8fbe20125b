"""The local stand-in of the external send API (``provider-api.yaml``), with fault injection.

The real provider is unreachable from the machines this project is built on, and in production
it is slow at times, answers with garbage, throttles and refuses connections. The stand-in
speaks the same protocol on loopback and can be told to misbehave in each of those ways, so
that the sending engine can be developed, demonstrated, tested and benchmarked against them.

Its parts:

* ``faults``: FaultConfig and the draw that decides each answer (the fault model);
* ``recorder``: what it saw (requests, outcomes, every delivery with its arrival time);
* ``scenarios``: fixed answers on their own routes, for the corners of the protocol;
* ``server``: the aiohttp app, the listener that really goes away during outages, and
  StandInServer (a background thread, for tests) / run_forever (the foreground, for the CLI);
* ``cli``: ``python -m devtools.provider`` and the options ``manage.py fake_provider`` shares.

It is plain aiohttp and the standard library: importable without Django, so tests and
benchmarks use it directly and ``python -m devtools.provider`` runs without a settings module.

The stand-in does not de-duplicate: every delivery of the same id is recorded again, so the
admin stats show exactly how many times a client caused a message to be delivered.

Routes: ``POST /v1/send/{msgId}`` (the fault model), ``POST /scenario/{name}/v1/send/{msgId}``
(one scenario), ``GET /healthz`` (public, for health checks), and the admin routes, which need
``Authorization: Bearer <admin token>`` (never the send token): ``GET /_admin/stats``,
``GET /_admin/accepted``, ``GET|POST /_admin/config`` (POST a JSON object of FaultConfig
fields to change them at runtime; the token is never shown), ``POST /_admin/reset`` (clears
the recorder).
"""

from devtools.provider.faults import DEFAULT_TOKEN, FaultConfig, updated_config
from devtools.provider.recorder import RecordedRequest, Recorder
from devtools.provider.scenarios import Scenarios
from devtools.provider.server import StandInServer, build_app, run_forever

__all__ = [
    "DEFAULT_TOKEN",
    "FaultConfig",
    "RecordedRequest",
    "Recorder",
    "Scenarios",
    "StandInServer",
    "build_app",
    "run_forever",
    "updated_config",
]
