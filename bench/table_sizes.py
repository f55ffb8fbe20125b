"""Table sizes on a real fill, and the background deletes at that size (PostgreSQL).

    .venv/bin/python bench/table_sizes.py            # a mailing of 1,000,000 messages
    .venv/bin/python bench/table_sizes.py --quick    # 50,000

The fill goes through the engine's own write paths: the fan-out of a running mailing, then
every message claimed and recorded accepted at its first attempt (``queue.claim_due`` and
``queue.record_results``: the message UPDATE and one attempt event each, as a dispatcher
writes them). After ``VACUUM ANALYZE`` it reads, per table, the rows, the mean row size
(``avg(pg_column_size(t.*))``), and the heap, index and total sizes
(``pg_relation_size``, ``pg_indexes_size``, ``pg_total_relation_size``); the projections
of docs/operations.md are these bytes per row times the rows of a day.

Then the deletes, each statement timed (``connection.execute_wrapper``): the event
retention over every event made older than the period, and the deletion of the mailing
(the request's work, then the background purge of its messages).
"""

from __future__ import annotations

import time
from datetime import timedelta

from common import (
    Bench,
    create_running_mailing,
    fan_out_completely,
    insert_clients,
    log,
    parser,
    postgres_version,
)

TABLES = ("mailing_message", "mailing_event", "mailing_client", "mailing_mailing")
MESSAGES_A_DAY = 1_000_000


class StatementTimer:
    """Times every statement run on the connection; keeps the longest of each kind."""

    def __init__(self) -> None:
        self.longest: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            kind = sql.split(None, 1)[0].upper()
            elapsed = time.perf_counter() - started
            self.longest[kind] = max(self.longest.get(kind, 0.0), elapsed)
            self.count[kind] = self.count.get(kind, 0) + 1


def send_everything(mailing_id: int) -> int:
    """Claim and record every message accepted at once, as dispatchers would."""
    from django.utils import timezone

    from mailing.engine import queue
    from mailing.engine.provider import Outcome, SendResult

    policy = queue.RetryPolicy(base=5.0, cap=600.0)
    sent = 0
    while True:
        now = timezone.now()
        claimed = queue.claim_due("bench-worker", 10_000, now, timedelta(seconds=60))
        if not claimed:
            return sent
        outcomes = [
            (claim, SendResult(claim.message.message_id, Outcome.ACCEPTED, "", 200, None, 0.05))
            for claim in claimed
        ]
        queue.record_results("bench-worker", outcomes, timezone.now(), policy)
        sent += len(claimed)
        if sent % 100_000 < 10_000:
            log(f"sent {sent:,}")


def table_sizes() -> dict[str, dict[str, float]]:
    from django.db import connection

    sizes = {}
    with connection.cursor() as cur:
        for table in TABLES:
            cur.execute(f"VACUUM ANALYZE {table}")
            cur.execute(
                f"SELECT count(*), coalesce(avg(pg_column_size(t.*)), 0) FROM {table} t"  # noqa: S608
            )
            rows, mean_row = cur.fetchone()
            cur.execute(
                "SELECT pg_relation_size(%s), pg_indexes_size(%s), pg_total_relation_size(%s)",
                [table, table, table],
            )
            heap, indexes, total = cur.fetchone()
            sizes[table] = {
                "rows": rows,
                "mean_row_bytes": float(mean_row),
                "heap_bytes": heap,
                "index_bytes": indexes,
                "total_bytes": total,
                "total_bytes_per_row": total / rows if rows else 0.0,
            }
    return sizes


def timed(label: str, func, figures: dict) -> object:
    from django.db import connection

    timer = StatementTimer()
    started = time.perf_counter()
    with connection.execute_wrapper(timer):
        result = func()
    figures[label] = {
        "seconds": time.perf_counter() - started,
        "longest_statement_seconds": timer.longest,
        "statements": timer.count,
        "result": result,
    }
    log(f"{label}: {figures[label]}")
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, help="messages of the mailing")
    args = p.parse_args()
    size = args.size or (50_000 if args.quick else 1_000_000)
    with Bench("table_sizes", args) as bench:
        from django.conf import settings
        from django.db import connection

        from mailing import cleanup, services
        from mailing.models import Mailing

        figures = bench.results.figures
        figures["postgres"] = postgres_version()
        figures["size"] = size
        log(f"inserting {size:,} clients")
        insert_clients(size)
        mailing = create_running_mailing()
        started = time.perf_counter()
        fan_out_completely(mailing.pk)
        figures["fan_out_seconds"] = time.perf_counter() - started
        log("sending every message once")
        started = time.perf_counter()
        figures["sent"] = send_everything(mailing.pk)
        figures["send_seconds"] = time.perf_counter() - started
        sizes = table_sizes()
        figures["tables"] = sizes
        messages = sizes["mailing_message"]
        events = sizes["mailing_event"]
        events_per_message = events["rows"] / messages["rows"]
        figures["events_per_message"] = events_per_message
        rows = []
        for name, per_day in (
            ("mailing_message", MESSAGES_A_DAY),
            ("mailing_event", MESSAGES_A_DAY * events_per_message),
        ):
            table = sizes[name]
            per_row = table["total_bytes_per_row"]
            rows.append(
                [
                    name,
                    f"{table['rows']:,}",
                    table["mean_row_bytes"],
                    table["heap_bytes"] / table["rows"],
                    table["index_bytes"] / table["rows"],
                    per_row,
                    f"{per_day:,.0f}",
                    per_day * per_row / 1e9,
                    per_day * 30 * per_row / 1e9,
                ]
            )
        bench.results.table(
            f"Table sizes after {size:,} messages sent (PostgreSQL {figures['postgres']})",
            [
                "table",
                "rows",
                "mean row B (pg_column_size)",
                "heap B/row",
                "index B/row",
                "total B/row",
                "rows/day at 1M msg",
                "GB/day",
                "GB/30 days",
            ],
            rows,
        )

        # Event retention: every event made older than the period, then the hourly task.
        cutoff_age = timedelta(days=settings.EVENT_RETENTION_DAYS + 1)
        with connection.cursor() as cur:
            cur.execute("UPDATE mailing_event SET at = at - %s", [cutoff_age])
            cur.execute("VACUUM ANALYZE mailing_event")
        timed("event_retention", lambda: cleanup.delete_old_events(seconds=3600), figures)

        # Deleting the mailing: the request's work, then the background purge.
        mailing = Mailing.objects.get(pk=mailing.pk)
        timed("delete_request", lambda: services.delete_mailing(mailing) and None, figures)
        timed("purge", lambda: cleanup.purge_deleted_mailings(seconds=3600), figures)
        bench.results.table(
            "Deletes at this size (each DELETE commits at once: its row locks last as long)",
            ["operation", "rows", "seconds", "longest DELETE s", "longest statement s"],
            [
                [
                    label,
                    rows_of,
                    figures[label]["seconds"],
                    figures[label]["longest_statement_seconds"].get("DELETE"),
                    max(figures[label]["longest_statement_seconds"].values()),
                ]
                for label, rows_of in (
                    ("event_retention", f"{events['rows']:,} events"),
                    ("delete_request", "1 mailing row"),
                    ("purge", f"{messages['rows']:,} messages"),
                )
            ],
        )


if __name__ == "__main__":
    main()
