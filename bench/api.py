"""API under load while a mailing is being sent: p50/p95 and errors of client creation
(``POST /api/v1/clients``) and mailing reads (``GET /api/v1/mailings/{id}``), 20 concurrent
users, with the send API stand-in up and then down (gunicorn 2 workers; a qcluster with
DISPATCHER_SLOTS=2 sending the mailing).

    .venv/bin/python bench/api.py           # 20 users, 20 s per phase
    .venv/bin/python bench/api.py --quick   # 20 users, 5 s per phase

The web never calls the send API, so its latency should not depend on the stand-in being up
(target: p95 down within 1.2x of p95 up). The baseline of this row is the "up" phase itself.
"""

from __future__ import annotations

import signal
import threading
import time

from common import (
    Bench,
    api_token,
    create_running_mailing,
    insert_clients,
    log,
    parser,
    percentile,
    ratio,
    wait_for,
)

TARGET_RATIO = 1.2


def load(base: str, token: str, mailing_id: int, users: int, seconds: float, phase: int):
    """``users`` threads, each alternating a client creation and a mailing read."""
    import requests

    timings: dict[str, list[float]] = {"create": [], "read": []}
    errors = {"create": 0, "read": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def user(number: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        serial = 0
        while time.monotonic() < deadline:
            serial += 1
            # 795... phones: never those of the generated clients (790...).
            phone = f"795{phase}{number:02d}{serial:05d}"
            body = {"phone": phone, "tag": "load", "timezone": "Europe/Moscow"}
            for kind, method, url, payload in (
                ("create", "POST", f"{base}/api/v1/clients", body),
                ("read", "GET", f"{base}/api/v1/mailings/{mailing_id}", None),
            ):
                started = time.perf_counter()
                try:
                    response = session.request(method, url, json=payload, timeout=30)
                    ok = response.status_code in (200, 201)
                except requests.RequestException:
                    ok = False
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    timings[kind].append(elapsed)
                    if not ok:
                        errors[kind] += 1

    threads = [threading.Thread(target=user, args=(n,)) for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings, errors


def _sent(mailing_id: int) -> int:
    from common import retrying_db

    from mailing.models import Mailing

    return retrying_db(lambda: Mailing.objects.values_list("sent", flat=True).get(pk=mailing_id))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--seconds", type=float, help="per phase")
    p.add_argument("--clients", type=int, help="audience of the mailing being sent")
    args = p.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    clients = args.clients or (30_000 if args.quick else 200_000)
    with Bench("api", args) as bench:
        insert_clients(clients, tag="bench")
        token = api_token()
        stand_in = bench.stand_in(latency_ms=50)
        base = bench.gunicorn(workers=2, probe_url=stand_in.url)
        mailing = create_running_mailing(tags=["bench"])
        cluster = bench.qcluster(
            "qcluster", stand_in.url, DISPATCHER_SLOTS=2, Q_WORKERS=3, CIRCUIT_RESET_SECONDS=2
        )
        wait_for(lambda: _sent(mailing.pk) > 0, 90, "the mailing to start sending")
        results = {}
        for phase, label in enumerate(("up", "down")):
            if label == "down":
                stand_in.proc.stop(signal.SIGINT, grace=5)
                time.sleep(2)  # the dispatchers notice: refused connections, circuits open
            before = _sent(mailing.pk)
            log(f"stand-in {label}: {args.users} users for {seconds:g} s")
            results[label] = load(base, token, mailing.pk, args.users, seconds, phase)
            sent = _sent(mailing.pk) - before
            log(f"  the dispatchers sent {sent:,} messages meanwhile")
            bench.results.figures[f"sent_during_{label}"] = sent
        assert cluster.alive(), cluster.tail()
        rows = []
        for kind, name in (
            ("create", "POST /api/v1/clients"),
            ("read", "GET /api/v1/mailings/{id}"),
        ):
            up_p95 = percentile(results["up"][0][kind], 95)
            for label in ("up", "down"):
                timings, errors = results[label]
                p95 = percentile(timings[kind], 95)
                times = ratio(p95, up_p95)
                rows.append(
                    [
                        name,
                        label,
                        len(timings[kind]),
                        errors[kind],
                        percentile(timings[kind], 50),
                        p95,
                        times if label == "down" else "-",
                        f"≤ {TARGET_RATIO}x up" if label == "down" else "-",
                        ("yes" if (times or 0) <= TARGET_RATIO else "NO")
                        if label == "down"
                        else "-",
                    ]
                )
                bench.results.figures[f"{kind}_{label}"] = {
                    "requests": len(timings[kind]),
                    "errors": errors[kind],
                    "p50_ms": percentile(timings[kind], 50),
                    "p95_ms": p95,
                }
        bench.results.table(
            f"API under load: {args.users} users, {seconds:g} s per phase, while a mailing is "
            "sent (gunicorn 2 workers, qcluster 2 dispatchers)",
            [
                "request",
                "stand-in",
                "requests",
                "errors",
                "p50 ms",
                "p95 ms",
                "p95 down/up",
                "target",
                "met",
            ],
            rows,
        )


if __name__ == "__main__":
    main()
