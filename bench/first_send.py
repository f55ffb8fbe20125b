"""First send: from creating a mailing inside its period to the stand-in's first acceptance,
at 1,000, 100,000 and 1,000,000 matching clients, against the one-statement fan-out.

    .venv/bin/python bench/first_send.py            # 1k, 100k, 1M
    .venv/bin/python bench/first_send.py --quick    # 1k, 20k

A real ``qcluster`` (default settings: one dispatcher) is up and ticking before the mailing
is created by ``services.create_mailing`` (what the API and the UI call); the clock starts
just before that call and stops at the stand-in's first acceptance (its own timestamp,
0 ms latency). The baseline is the same with ``FANOUT_CHUNK_SIZE=0``: the whole audience in
one INSERT ... SELECT, as before chunks, so nothing can be claimed before it commits. The
time until the fan-out is seen complete (polled every 50 ms) under the live dispatcher is
shown too.
"""

from __future__ import annotations

import signal
import time

from common import (
    Bench,
    StandIn,
    create_running_mailing,
    http_json,
    insert_clients,
    log,
    parser,
    ratio,
    reset_queue_tables,
    retrying_db,
    wait_for,
)

TARGET_SECONDS = 2.0


def first_acceptance(stand_in: StandIn, timeout: float) -> float:
    """Unix time of the stand-in's earliest acceptance, waiting up to ``timeout``."""
    from common import STAND_IN_ADMIN

    wait_for(lambda: stand_in.stats()["accepted"] > 0, timeout, "the first acceptance", 0.01)
    report = http_json(f"{stand_in.admin}/accepted", headers=STAND_IN_ADMIN, timeout=30)
    return min(report["last_accepted_at"].values())


def measure(bench: Bench, stand_in: StandIn, size: int, chunk_size: int | None) -> list[float]:
    """(seconds to the first acceptance, seconds to the complete fan-out) of one mailing."""
    from django.utils import timezone

    from mailing.models import DispatcherSlot, Mailing

    reset_queue_tables()
    stand_in.reset()
    env = {} if chunk_size is None else {"FANOUT_CHUNK_SIZE": chunk_size}
    started = timezone.now()
    cluster = bench.qcluster(f"cluster-{size}-{chunk_size}", stand_in.url, **env)
    try:
        wait_for(
            lambda: retrying_db(
                lambda: DispatcherSlot.objects.filter(heartbeat_at__gt=started).exists()
            ),
            60,
            "a dispatcher ticking",
        )
        created = time.time()
        mailing = create_running_mailing(tags=[f"size{size}"])
        accepted = first_acceptance(stand_in, 120)

        def fanned_out() -> object:
            return Mailing.objects.filter(pk=mailing.pk, fanned_out_at__isnull=False).first()

        # Seen complete by polling (fanned_out_at is the time its last tick began).
        done = wait_for(lambda: retrying_db(fanned_out), 300, "the complete fan-out", 0.05)
        complete = time.time() - created
        assert done.total == size, (done.total, size)
        return [accepted - created, complete]
    except TimeoutError:
        log(cluster.tail())
        raise
    finally:
        cluster.stop(signal.SIGTERM, grace=10)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", help="matching clients per mailing")
    args = p.parse_args()
    sizes = args.sizes or ([1_000, 20_000] if args.quick else [1_000, 100_000, 1_000_000])
    with Bench("first_send", args) as bench:
        start = 1
        for size in sizes:
            log(f"inserting {size:,} clients tagged size{size}")
            insert_clients(size, tag=f"size{size}", start=start)
            start += size
        stand_in = bench.stand_in(latency_ms=0)
        rows = []
        for size in sizes:
            log(f"{size:,} clients: chunked (defaults)")
            chunked = measure(bench, stand_in, size, None)
            log(f"  first acceptance after {chunked[0]:.2f} s, fanned out after {chunked[1]:.2f} s")
            log(f"{size:,} clients: one statement (FANOUT_CHUNK_SIZE=0)")
            whole = measure(bench, stand_in, size, 0)
            log(f"  first acceptance after {whole[0]:.2f} s, fanned out after {whole[1]:.2f} s")
            met = "yes" if chunked[0] <= TARGET_SECONDS else "NO"
            rows.append(
                [
                    f"{size:,}",
                    chunked[0],
                    whole[0],
                    ratio(whole[0], chunked[0]),
                    chunked[1],
                    whole[1],
                    f"≤ {TARGET_SECONDS:g} s",
                    met,
                ]
            )
            bench.results.figures[str(size)] = {
                "first_acceptance_s": chunked[0],
                "baseline_first_acceptance_s": whole[0],
                "fanned_out_s": chunked[1],
                "baseline_fanned_out_s": whole[1],
            }
        bench.results.table(
            "Creation to first acceptance (one dispatcher, stand-in at 0 ms)",
            [
                "clients",
                "chunked s",
                "one statement s",
                "ratio",
                "fan-out complete s (chunked)",
                "fan-out complete s (one statement)",
                "target",
                "met",
            ],
            rows,
        )


if __name__ == "__main__":
    main()
