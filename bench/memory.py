"""Memory: peak RSS of the worker's processes (q2 and the dispatchers beside it), through a
1,000,000-message mailing (fan-out included), sampled from /proc/<pid>/status every 0.5 s.

    .venv/bin/python bench/memory.py           # 1,000,000 messages, stand-in at 0 ms
    .venv/bin/python bench/memory.py --quick   # 50,000 messages

A qcluster with DISPATCHER_SLOTS=2 (Q_WORKERS=3) sends the whole mailing; every process of
the cluster is sampled and the largest is reported (a dispatcher is a process of its own,
living as long as the worker). There is no meaningful naive baseline here;
the target is printed instead: at most 300 MB, and flat (RSS at 90% of the mailing within
10% or 20 MB of RSS at 10%).
"""

from __future__ import annotations

import time

from common import (
    Bench,
    create_running_mailing,
    descendants,
    insert_clients,
    log,
    parser,
    retrying_db,
    rss_mb,
)

TARGET_MB = 300.0


def _progress(mailing_id: int) -> tuple[int, int]:
    from mailing.models import Mailing

    total, pending, fanned = retrying_db(
        lambda: Mailing.objects.values_list("total", "pending", "fanned_out_at").get(pk=mailing_id)
    )
    return (total - pending if fanned else 0), total


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--messages", type=int)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--slots", type=int, default=2, help="DISPATCHER_SLOTS")
    p.add_argument("--timeout", type=float, default=1800, help="give up after this long")
    args = p.parse_args()
    messages = args.messages or (50_000 if args.quick else 1_000_000)
    with Bench("memory", args) as bench:
        insert_clients(messages, tag="bench")
        stand_in = bench.stand_in(latency_ms=args.latency_ms)
        mailing = create_running_mailing(tags=["bench"])
        cluster = bench.qcluster(
            "qcluster", stand_in.url, DISPATCHER_SLOTS=args.slots, Q_WORKERS=args.slots + 1
        )
        started = time.monotonic()
        samples: list[tuple[float, float, dict[int, float]]] = []  # (t, done fraction, rss)
        peak: dict[int, float] = {}
        last_log = 0.0
        done, total = 0, messages
        while time.monotonic() - started < args.timeout:
            pids = [cluster.pid, *descendants(cluster.pid)]
            point = {pid: mb for pid in pids if (mb := rss_mb(pid)) is not None}
            for pid, mb in point.items():
                peak[pid] = max(peak.get(pid, 0.0), mb)
            done, total = _progress(mailing.pk)
            fraction = done / total if total else 0.0
            samples.append((time.monotonic() - started, fraction, point))
            if time.monotonic() - last_log >= 30:
                last_log = time.monotonic()
                largest = max(point.values(), default=0.0)
                log(f"  {done:,}/{total:,} done; largest RSS now {largest:.0f} MB")
            if total and done >= total:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        if done < total:
            log(f"gave up after {elapsed:.0f} s: {done:,}/{total:,} done")
        assert cluster.alive(), cluster.tail()

        def largest_at(fraction: float) -> float | None:
            for _, progress, point in samples:
                if progress >= fraction and point:
                    return max(point.values())
            return None

        at = {pct: largest_at(pct / 100) for pct in (10, 50, 90)}
        overall_peak = max(peak.values())
        growth = (at[90] or 0) - (at[10] or 0)
        flat = at[10] is not None and (growth <= 20 or growth <= 0.1 * at[10])
        met = overall_peak <= TARGET_MB and flat
        figures = bench.results.figures
        figures.update(
            messages=total,
            done=done,
            seconds=elapsed,
            rate=done / elapsed,
            peak_mb=overall_peak,
            rss_at_mb=at,
            processes=len(peak),
            per_process_peak_mb=sorted(peak.values(), reverse=True),
        )
        bench.results.table(
            f"Memory: qcluster with {args.slots} dispatchers through a {total:,}-message mailing "
            f"({elapsed:.0f} s, {done / elapsed:,.0f} msg/s, stand-in at {args.latency_ms:g} ms)",
            [
                "peak RSS MB",
                "RSS at 10% MB",
                "at 50% MB",
                "at 90% MB",
                "growth 10%→90% MB",
                "baseline",
                "target",
                "met",
            ],
            [
                [
                    overall_peak,
                    at[10],
                    at[50],
                    at[90],
                    growth,
                    "n/a",
                    f"≤ {TARGET_MB:g} MB and flat",
                    "yes" if met else "NO",
                ]
            ],
        )
        log(
            "per-process peaks (MB): "
            + ", ".join(f"{mb:.0f}" for mb in sorted(peak.values(), reverse=True))
        )


if __name__ == "__main__":
    main()
