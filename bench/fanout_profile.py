"""Where a fan-out's time goes: per statement of each chunk, WAL written, checkpoints, and
what each index, the conflict check and the commit cost, on 1,000,000 matching clients.

    .venv/bin/python bench/fanout_profile.py                 # 1,000,000 clients
    .venv/bin/python bench/fanout_profile.py --size 100000   # smaller

Each variant fans out a fresh mailing of the same clients with ``fanout.fan_out`` (chunks
back to back, no dispatcher between them) and reports its seconds, the sum of each kind of
statement (timed around every statement by a Django execute wrapper), the WAL it wrote
(``pg_current_wal_lsn``) and the checkpoints that happened meanwhile (each variant starts
right after a CHECKPOINT). Two variants take one thing out of the engine's SQL (an execute
wrapper rewrites it): the asynchronous commit of each chunk, the conflict check. Index
variants drop
one index of the message table in this throw-away database, run, and create it again; the
difference with the default row is that index's cost. ``EXPLAIN (ANALYZE, BUFFERS, WAL)`` of
one chunk's INSERT, with and without ``ON CONFLICT DO NOTHING``, is printed at the end
(run in a transaction that is rolled back).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common import Bench, insert_clients, log, parser, reset_queue_tables

INDEXES = {
    "message_due_idx": "the queue (mailing, next_attempt_at) WHERE pending",
    "message_mailing_status_idx": "(mailing, status, id): lists and failure reasons",
    "mailing_message_client_id": "client_id: a deleted client's messages",
}


def _kind(sql: str) -> str:
    if sql.startswith("INSERT INTO mailing_message"):
        return "insert"
    if sql.startswith('SELECT "mailing_client"."id"'):
        return "boundary"
    if sql.startswith('UPDATE "mailing_mailing" SET "fanout_cursor"'):
        return "cursor"
    if sql.startswith('UPDATE "mailing_mailing" SET "total"'):
        return "counters"
    return "other"


@contextmanager
def timed_statements() -> Iterator[dict[str, float]]:
    from django.db import connection

    spent: dict[str, float] = defaultdict(float)
    spent["inserts"] = 0

    def wrapper(execute: Callable, sql: str, params, many: bool, context) -> object:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent[_kind(sql)] += time.perf_counter() - started
            spent["inserts"] += _kind(sql) == "insert"

    with connection.execute_wrapper(wrapper):
        yield spent


@contextmanager
def rewritten(rewrite: Callable[[str], str]) -> Iterator[None]:
    """Every statement of this connection passes through ``rewrite`` first (the variants
    that take one thing out of the engine's SQL)."""
    from django.db import connection

    def wrapper(execute: Callable, sql: str, params, many: bool, context) -> object:
        return execute(rewrite(sql), params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def without_conflict_check(sql: str) -> str:
    return sql.replace(" ON CONFLICT (mailing_id, client_id) DO NOTHING", "")


def synchronous(sql: str) -> str:
    return "SELECT 1" if sql == "SET LOCAL synchronous_commit TO OFF" else sql


def _scalar(sql: str) -> object:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def _checkpoints() -> int:
    return int(_scalar("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"))


def run(tag: str, label: str, rewrite: Callable[[str], str] = str) -> list[object]:
    from common import create_running_mailing
    from django.db import connection
    from django.utils import timezone

    from mailing.engine import fanout
    from mailing.models import Mailing

    reset_queue_tables()
    with connection.cursor() as cur:
        cur.execute("CHECKPOINT")  # every variant starts from a clean slate
        cur.execute("VACUUM ANALYZE mailing_message")
    mailing = create_running_mailing(tags=[tag])
    lsn = _scalar("SELECT pg_current_wal_lsn()")
    checkpoints = _checkpoints()
    started = time.perf_counter()
    with rewritten(rewrite), timed_statements() as spent:
        created = fanout.fan_out(mailing, timezone.now())
    seconds = time.perf_counter() - started
    wal = int(_scalar(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')"))
    mailing = Mailing.objects.get(pk=mailing.pk)
    assert mailing.fanned_out_at is not None and mailing.total == created, (mailing.total, created)
    chunks = int(spent.pop("inserts"))
    statements = sum(spent.values())
    log(f"  {label}: {seconds:.2f} s, {created:,} messages, WAL {wal / 2**20:,.0f} MB")
    return [
        label,
        seconds,
        created / seconds,
        chunks,
        spent["insert"],
        spent["boundary"],
        spent["cursor"] + spent["counters"] + spent["other"],
        seconds - statements,
        wal / 2**20,
        _checkpoints() - checkpoints,
    ]


def explain_chunk(tag: str, size: int) -> str:
    """EXPLAIN ANALYZE of one chunk's INSERT, with and without the conflict check."""
    from common import create_running_mailing
    from django.db import connection, transaction
    from django.db.models import DateTimeField, Value
    from django.utils import timezone

    from mailing.selectors import matching_clients

    reset_queue_tables()
    mailing = create_running_mailing(tags=[tag])
    now = timezone.now()
    clients = matching_clients(mailing.operator_codes, mailing.tags)
    last = clients.order_by("pk").values_list("pk", flat=True)[size - 1 : size].first()
    chunk = clients.filter(pk__lte=last) if last is not None else clients
    captured: list[tuple[str, object]] = []

    def capture(execute: Callable, sql: str, params, many: bool, context) -> object:
        captured.append((sql, params))
        return execute(sql, params, many, context)

    from mailing import sql as mailing_sql

    with transaction.atomic(), connection.execute_wrapper(capture):
        mailing_sql.insert_messages(
            chunk,
            mailing_id=mailing.pk,
            status="pending",
            created_at=now,
            next_attempt_at=Value(now, output_field=DateTimeField()),
        )
        transaction.set_rollback(True)
    insert_sql, params = captured[-1]
    out = []
    for label, text in (
        ("without ON CONFLICT", without_conflict_check(insert_sql)),
        ("with ON CONFLICT DO NOTHING (as the engine runs it)", insert_sql),
        ("without ON CONFLICT, again", without_conflict_check(insert_sql)),
    ):
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) {text}", params)
            plan = "\n".join(row[0] for row in cur.fetchall())
            transaction.set_rollback(True)
        out.append(f"#### {label}, one chunk of {size:,}\n\n```\n{plan}\n```\n")
    text = "\n".join(out)
    print(text, flush=True)
    return text


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1_000_000, help="matching clients")
    p.add_argument("--other", type=int, default=120_000, help="clients that do not match")
    args = p.parse_args()
    size = 20_000 if args.quick else args.size
    with Bench("fanout_profile", args) as bench:
        from django.conf import settings
        from django.db import connection

        tag = f"size{size}"
        log(f"inserting {size:,} matching and {args.other:,} other clients")
        insert_clients(args.other, tag="other", start=1)
        insert_clients(size, tag=tag, start=args.other + 1)
        rows = []
        default = settings.FANOUT_CHUNK_SIZE
        rows.append(run(tag, f"chunks of {default:,}, as the engine runs it (default)"))
        rows.append(run(tag, "the same, each chunk committed synchronously", synchronous))
        rows.append(run(tag, "the same, without ON CONFLICT DO NOTHING", without_conflict_check))
        for chunk in (0, 100_000, 250_000):
            settings.FANOUT_CHUNK_SIZE = chunk
            rows.append(
                run(tag, f"chunks of {chunk:,}" if chunk else "one statement (FANOUT_CHUNK_SIZE=0)")
            )
        settings.FANOUT_CHUNK_SIZE = default
        for index, what in INDEXES.items():
            with connection.cursor() as cur:
                cur.execute(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'mailing_message' "
                    "AND indexname LIKE %s",
                    [index + "%"],
                )
                found = cur.fetchone()
                if found is None:
                    log(f"  no index {index}: skipped")
                    continue
                definition = found[0]
                name = definition.split(" INDEX ")[1].split(" ON ")[0]
                cur.execute(f"DROP INDEX {name}")
            try:
                rows.append(run(tag, f"without {name} ({what})"))
            finally:
                with connection.cursor() as cur:
                    cur.execute(definition)
        bench.results.table(
            f"Fan-out of {size:,} clients: where the time goes",
            [
                "variant",
                "s",
                "msg/s",
                "chunks",
                "INSERT s",
                "boundary s",
                "cursor+counters s",
                "commit+Python s",
                "WAL MB",
                "checkpoints",
            ],
            rows,
        )
        bench.results.tables.append(explain_chunk(tag, default))


if __name__ == "__main__":
    main()
