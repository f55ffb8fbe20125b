"""Fan-out: N matching clients -> N messages, the engine's set-based INSERT ... SELECT against
the naive design (an ORM loop creating one Message per client).

    .venv/bin/python bench/fanout.py            # 100,000 and 1,000,000 clients
    .venv/bin/python bench/fanout.py --quick    # 20,000 clients

The engine path is what dispatcher ticks run: ``lifecycle.tick(now)`` on a running mailing,
back to back until its fan-out is complete (the first chunk alone, then chunks of
``FANOUT_CHUNK_SIZE`` for 0.2 s per tick; in a live dispatcher, claims and sends run between
the ticks). "one statement" is the same with ``FANOUT_CHUNK_SIZE=0``, the fan-out before
chunks. The naive loop takes minutes at a million,
so it runs on a subset (``--baseline-size``) and its time at each size is extrapolated from
its rate (labelled as such). Every timed run, the naive one too, starts right after a
CHECKPOINT (``reset_queue_tables``), so none pays for the WAL of the run before it.
"""

from __future__ import annotations

import time

from common import Bench, insert_clients, log, parser, ratio, reset_queue_tables

TARGET_1M_SECONDS = 10.0


def engine_fanout(size: int, window: bool, chunk_size: int | None = None) -> float:
    """Seconds of the engine's fan-out of ``size`` clients (fresh mailing, same clients);
    ``chunk_size`` overrides ``FANOUT_CHUNK_SIZE`` (0: one statement, the fan-out before
    chunks)."""
    from common import create_running_mailing, fan_out_completely
    from django.conf import settings

    from mailing.models import Mailing

    reset_queue_tables(checkpoint=True)
    mailing = create_running_mailing(tags=[f"size{size}"], window=window)
    default = settings.FANOUT_CHUNK_SIZE
    settings.FANOUT_CHUNK_SIZE = default if chunk_size is None else chunk_size
    try:
        started = time.perf_counter()
        fan_out_completely(mailing.pk)
        seconds = time.perf_counter() - started
    finally:
        settings.FANOUT_CHUNK_SIZE = default
    mailing = Mailing.objects.get(pk=mailing.pk)
    assert mailing.total == size, (mailing.total, size)
    assert mailing.fanned_out_at is not None
    return seconds


def naive_fanout(size: int) -> float:
    """Seconds of an ORM loop creating one Message per matching client (the naive design)."""
    from common import create_running_mailing
    from django.db import transaction
    from django.utils import timezone

    from mailing.models import Client, Message

    reset_queue_tables(checkpoint=True)
    mailing = create_running_mailing(tags=[f"size{size}"])
    now = timezone.now()
    started = time.perf_counter()
    with transaction.atomic():
        for client in Client.objects.filter(tag=f"size{size}").iterator(chunk_size=2000):
            Message.objects.create(
                mailing=mailing,
                client=client,
                phone=client.phone,
                timezone=client.timezone,
                status="pending",
                created_at=now,
                next_attempt_at=now,
            )
    seconds = time.perf_counter() - started
    assert Message.objects.filter(mailing=mailing).count() == size
    return seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", help="matching clients per run")
    p.add_argument("--baseline-size", type=int, help="clients of the naive ORM loop")
    args = p.parse_args()
    sizes = args.sizes or ([20_000] if args.quick else [100_000, 1_000_000])
    baseline_size = args.baseline_size or min(min(sizes), 2_000 if args.quick else 20_000)
    with Bench("fanout", args) as bench:
        # Each size gets its own tag, so a mailing of one size matches exactly its clients
        # among all of them (the other sizes' clients are in the table, as in real life).
        start = 1
        for size in sorted(set(sizes) | {baseline_size}):
            log(f"inserting {size:,} clients tagged size{size}")
            insert_clients(size, tag=f"size{size}", start=start)
            start += size
        log(f"naive ORM loop over {baseline_size:,} clients")
        naive_seconds = naive_fanout(baseline_size)
        naive_rate = baseline_size / naive_seconds
        rows = []
        figures = bench.results.figures
        figures["baseline"] = {"clients": baseline_size, "seconds": naive_seconds}
        for size in sizes:
            for window in (False, True):
                log(f"engine fan-out of {size:,} clients (send window: {window})")
                seconds = engine_fanout(size, window)
                log(f"  the same in one statement (FANOUT_CHUNK_SIZE=0, {size:,} clients)")
                whole = engine_fanout(size, window, chunk_size=0)
                naive = (
                    naive_seconds if size == baseline_size else size / naive_rate
                )  # extrapolated from the subset's rate
                label = (
                    "measured" if size == baseline_size else f"extrapolated from {baseline_size:,}"
                )
                target = "≤ 10 s" if size == 1_000_000 else "-"
                met = (
                    "-" if size != 1_000_000 else ("yes" if seconds <= TARGET_1M_SECONDS else "NO")
                )
                rows.append(
                    [
                        f"{size:,}",
                        "yes" if window else "no",
                        seconds,
                        size / seconds,
                        whole,
                        naive,
                        label,
                        ratio(naive, seconds),
                        target,
                        met,
                    ]
                )
                figures[f"{size}{'_window' if window else ''}"] = {
                    "seconds": seconds,
                    "one_statement_seconds": whole,
                    "baseline_seconds": naive,
                    "baseline_extrapolated": size != baseline_size,
                }
        bench.results.table(
            f"Fan-out (naive ORM loop: {naive_rate:,.0f} messages/s "
            f"over {baseline_size:,} clients)",
            [
                "clients",
                "window",
                "engine s",
                "engine msg/s",
                "one statement s",
                "naive s",
                "naive is",
                "ratio",
                "target",
                "met",
            ],
            rows,
        )


if __name__ == "__main__":
    main()
