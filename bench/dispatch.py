"""Dispatch: sustained messages/s to the send API stand-in, real ``qcluster`` processes with
DISPATCHER_SLOTS=n (Q_WORKERS=n+1), against the naive design: one q2 task per message that
sends synchronously with ``requests`` (``bench.baseline.send_one``) on n q2 workers.

    .venv/bin/python bench/dispatch.py          # 0/20/50 ms x 1/2/4 workers, + LOG_LEVEL=INFO
    .venv/bin/python bench/dispatch.py --quick  # 50 ms x 1/2 workers, short windows
    .venv/bin/python bench/dispatch.py --latencies 50 --workers 1 2 --pinned-window \
        --no-naive --no-info-run                # adaptive window vs the pinned (fixed) one

``--pinned-window`` also runs the engine with ``SEND_WINDOW_ADAPTIVE=0`` (the fixed window of
``SEND_CONCURRENCY`` from the first call, as before slow start) right after each adaptive
run, on the same stand-in and mailing size: the same-run baseline of the adaptive window.

The rate is read from the mailing's ``sent`` counter: after the first message is sent and a
warm-up, the messages counted over a fixed window divided by its length (steady state).
Both run with
LOG_LEVEL=WARNING and the project's default broker (the database: REDIS_URL unset).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from common import (
    Bench,
    Proc,
    StandIn,
    create_running_mailing,
    insert_clients,
    log,
    parser,
    ratio,
    reset_queue_tables,
)

TARGET_RATE_50MS = 1000.0
TARGET_RATIO = 20.0


@dataclass
class Measured:
    rate: float
    window: float
    counted: int
    startup: float  # from starting the cluster to the first message sent


def _counters(mailing_id: int) -> tuple[int, int]:
    from common import retrying_db

    from mailing.models import Mailing

    return retrying_db(lambda: Mailing.objects.values_list("sent", "pending").get(pk=mailing_id))


def measure(mailing_id: int, limit: int, warmup: float, window: float, started: float) -> Measured:
    """Messages/s from the mailing's counters over ``window`` seconds after ``warmup``.

    The window closes early when ``limit`` messages are sent (the work ran out); then the
    time of the last increase counts.
    """
    from common import wait_for

    wait_for(lambda: _counters(mailing_id)[0] > 0, 90, "the first message sent", 0.05)
    first = time.monotonic()
    time.sleep(warmup)
    t0, (s0, _) = time.monotonic(), _counters(mailing_id)
    last_t, last_s = t0, s0
    while time.monotonic() - t0 < window:
        time.sleep(0.25)
        now, (sent, _) = time.monotonic(), _counters(mailing_id)
        if sent != last_s:
            last_t, last_s = now, sent
        if sent >= limit:
            log("the work ran out before the window closed: counted up to the last message")
            break
    else:
        last_t = time.monotonic()
        last_s = _counters(mailing_id)[0]
    span = last_t - t0
    return Measured((last_s - s0) / span if span > 0 else 0.0, span, last_s - s0, first - started)


def stop_cluster(cluster: Proc) -> None:
    """The measurement is over: stop the cluster (what it holds is truncated next anyway)."""
    stopping = time.monotonic()
    cluster.stop(signal.SIGTERM, grace=2)
    log(f"  cluster stopped in {time.monotonic() - stopping:.1f} s")


def _fan_out(messages: int) -> int:
    from common import fan_out_completely

    from mailing.models import Mailing

    reset_queue_tables()
    mailing = create_running_mailing(tags=["bench"])
    fan_out_completely(mailing.pk)
    total = Mailing.objects.values_list("total", flat=True).get(pk=mailing.pk)
    assert total == messages, (total, messages)
    return mailing.pk


def run_engine(
    bench: Bench,
    stand_in: StandIn,
    workers: int,
    messages: int,
    warmup: float,
    window: float,
    log_level: str = "WARNING",
    **env: object,
) -> Measured:
    mailing_id = _fan_out(messages)
    started = time.monotonic()
    cluster = bench.qcluster(
        f"engine-{workers}",
        stand_in.url,
        DISPATCHER_SLOTS=workers,
        Q_WORKERS=workers + 1,
        LOG_LEVEL=log_level,
        **env,
    )
    try:
        return measure(mailing_id, messages, warmup, window, started)
    except TimeoutError:
        log(cluster.tail())
        raise
    finally:
        stop_cluster(cluster)


def run_baseline(
    bench: Bench, stand_in: StandIn, workers: int, tasks: int, warmup: float, window: float
) -> Measured:
    from django.db import transaction
    from django_q.tasks import async_task

    from mailing.models import Message

    mailing_id = _fan_out(bench.results.figures["clients"])
    ids = list(
        Message.objects.filter(mailing_id=mailing_id).order_by("id").values_list("id", flat=True)
    )[:tasks]
    enqueue_started = time.monotonic()
    with transaction.atomic():
        for message_id in ids:
            async_task("bench.baseline.send_one", message_id, q_options={"task_name": "send"})
    log(f"enqueued {len(ids):,} tasks in {time.monotonic() - enqueue_started:.1f} s")
    started = time.monotonic()
    cluster = bench.qcluster(
        f"baseline-{workers}", stand_in.url, DISPATCHER_SLOTS=0, Q_WORKERS=workers
    )
    try:
        return measure(mailing_id, len(ids), warmup, window, started)
    except TimeoutError:
        log(cluster.tail())
        raise
    finally:
        stop_cluster(cluster)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--latencies", type=float, nargs="+", help="stand-in latency, ms")
    p.add_argument("--workers", type=int, nargs="+", help="q2 workers (dispatcher slots)")
    p.add_argument("--messages", type=int, help="messages per engine run")
    p.add_argument("--baseline-tasks", type=int, help="q2 tasks enqueued per baseline run")
    p.add_argument("--warmup", type=float, help="seconds after the first send before counting")
    p.add_argument("--window", type=float, help="seconds counted")
    p.add_argument("--no-info-run", action="store_true", help="skip the LOG_LEVEL=INFO run")
    p.add_argument(
        "--pinned-window",
        action="store_true",
        help="also run the engine with SEND_WINDOW_ADAPTIVE=0 (fixed window) per row",
    )
    p.add_argument("--no-naive", action="store_true", help="skip the naive q2-task baseline")
    args = p.parse_args()
    quick = args.quick
    latencies = args.latencies or ([50.0] if quick else [0.0, 20.0, 50.0])
    worker_counts = args.workers or ([1, 2] if quick else [1, 2, 4])
    messages = args.messages or (20_000 if quick else 100_000)
    baseline_tasks = args.baseline_tasks or (600 if quick else 4_000)
    warmup = args.warmup if args.warmup is not None else (1.0 if quick else 3.0)
    window = args.window or (4.0 if quick else 12.0)
    with Bench("dispatch", args) as bench:
        figures = bench.results.figures
        figures["clients"] = messages
        insert_clients(messages, tag="bench")
        stand_in = bench.stand_in()
        rows = []
        window_rows = []
        for latency in latencies:
            stand_in.configure(latency_ms=latency)
            for workers in worker_counts:
                log(f"engine: {latency:g} ms, {workers} worker(s)")
                engine = run_engine(bench, stand_in, workers, messages, warmup, window)
                log(f"  {engine.rate:,.0f} msg/s")
                if args.pinned_window:
                    log(f"engine, pinned window: {latency:g} ms, {workers} worker(s)")
                    pinned = run_engine(
                        bench, stand_in, workers, messages, warmup, window, SEND_WINDOW_ADAPTIVE=0
                    )
                    log(f"  {pinned.rate:,.0f} msg/s")
                    window_rows.append(
                        [
                            f"{latency:g}",
                            workers,
                            engine.rate,
                            pinned.rate,
                            ratio(engine.rate, pinned.rate),
                            f"{engine.startup:.1f} / {pinned.startup:.1f}",
                        ]
                    )
                    figures[f"{latency:g}ms_{workers}w_pinned"] = pinned.__dict__
                if args.no_naive:
                    figures[f"{latency:g}ms_{workers}w"] = {"engine": engine.__dict__}
                    continue
                log(f"baseline: {latency:g} ms, {workers} worker(s)")
                naive = run_baseline(bench, stand_in, workers, baseline_tasks, warmup, window)
                log(f"  {naive.rate:,.1f} msg/s")
                times = ratio(engine.rate, naive.rate)
                at_50 = latency == 50.0
                met = "-"
                if at_50:
                    met = (
                        "yes"
                        if engine.rate >= TARGET_RATE_50MS and (times or 0) >= TARGET_RATIO
                        else "NO"
                    )
                rows.append(
                    [
                        f"{latency:g}",
                        workers,
                        engine.rate,
                        naive.rate,
                        times,
                        f"{engine.startup:.1f} / {naive.startup:.1f}",
                        "≥ 1,000/s and ≥ 20x" if at_50 else "-",
                        met,
                    ]
                )
                figures[f"{latency:g}ms_{workers}w"] = {
                    "engine": engine.__dict__,
                    "baseline": naive.__dict__,
                }
        if window_rows:
            bench.results.table(
                "Dispatch: adaptive window vs pinned window (SEND_WINDOW_ADAPTIVE=0), same run",
                [
                    "latency ms",
                    "q2 workers",
                    "adaptive msg/s",
                    "pinned msg/s",
                    "adaptive / pinned",
                    "first send after s (adaptive / pinned)",
                ],
                window_rows,
            )
        if not rows:
            return
        bench.results.table(
            "Dispatch: sustained messages/s (LOG_LEVEL=WARNING)",
            [
                "latency ms",
                "q2 workers",
                "engine msg/s",
                "naive msg/s",
                "ratio",
                "first send after s (engine / naive)",
                "target",
                "met",
            ],
            rows,
        )
        if not args.no_info_run and not quick and 50.0 in latencies and 2 in worker_counts:
            stand_in.configure(latency_ms=50.0)
            log("engine: 50 ms, 2 workers, LOG_LEVEL=INFO")
            info = run_engine(bench, stand_in, 2, messages, warmup, window, log_level="INFO")
            warning = figures["50ms_2w"]["engine"]["rate"]
            figures["50ms_2w_info"] = info.__dict__
            bench.results.table(
                "Dispatch: log level (50 ms, 2 workers)",
                ["LOG_LEVEL", "engine msg/s", "vs WARNING"],
                [["WARNING", warning, 1.0], ["INFO", info.rate, ratio(info.rate, warning)]],
            )


if __name__ == "__main__":
    main()
