"""Statistics: p50/p95 of ``GET /api/v1/stats`` and ``GET /api/v1/mailings/{id}/stats``
(gunicorn, 2 workers, one client on loopback) with 1,000 mailings and 10,000,000 messages,
against the naive design: the same numbers by ``COUNT(*) ... GROUP BY`` over the messages.

    .venv/bin/python bench/stats.py           # 1,000 mailings, 10,000,000 messages (~2.5 GB)
    .venv/bin/python bench/stats.py --quick   # 100 mailings, 200,000 messages

The data is generated with SQL: each mailing gets a contiguous block of messages (5% failed
with one of five reasons, 10% pending, 5% expired, the rest sent), and the counters are then
set from the messages, so they are exactly what ``reconcile_counters`` would compute (checked
on a sample). The baseline is the bare SQL time measured from this process, without HTTP,
JSON or Django around it, and over HTTP from the same gunicorn (bench/naive_web.py).
"""

from __future__ import annotations

import random
import shutil
import sys
import time

from common import ROOT, Bench, api_token, fmt, log, parser, percentile, ratio

TARGET_P95_MS = 50.0
REASONS = ["invalid phone", "number blocked", "operator rejected", "spam filter", "unknown"]


def generate(mailings: int, messages: int, clients: int) -> None:
    from django.db import connection

    per_mailing = messages // mailings
    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute(
            "INSERT INTO mailing_client (phone, operator_code, tag, timezone, created_at, "
            "updated_at) SELECT '79' || lpad(g::text, 9, '0'), '916', 'bench', "
            "'Europe/Moscow', now(), now() FROM generate_series(1, %s) AS g",
            [clients],
        )
        cur.execute(
            "INSERT INTO mailing_mailing (id, name, start_at, end_at, text, resend_statuses, "
            "operator_codes, tags, "
            "status, fanout_started_at, fanned_out_at, finished_at, created_at, updated_at, "
            "total, pending, sent, failed, expired, cancelled) "
            "SELECT m, 'Benchmark ' || m, now() - interval '2 days', now() + interval '1 day', "
            "'Benchmark mailing ' || m, '[]', '[]', '[\"bench\"]', "
            "CASE WHEN m %% 10 = 0 THEN 'running' ELSE 'finished' END, "
            "now() - interval '2 days', now() - interval '2 days', "
            "CASE WHEN m %% 10 = 0 THEN NULL ELSE now() END, now(), now(), 0, 0, 0, 0, 0, 0 "
            "FROM generate_series(1, %s) AS m",
            [mailings],
        )
        step = max(1, mailings // 10)
        for first in range(1, mailings + 1, step):
            last = min(mailings, first + step - 1)
            log(f"  messages of mailings {first}-{last}")
            # g runs over this block of mailings; message g belongs to mailing
            # (g - 1) / per_mailing + 1 and client (g - 1) %% per_mailing %% clients + 1.
            cur.execute(
                "INSERT INTO mailing_message (mailing_id, client_id, phone, timezone, status, "
                "created_at, sent_at, attempts, last_error, next_attempt_at) "
                "SELECT (g - 1) / %s + 1, c, '79' || lpad(c::text, 9, '0'), 'Europe/Moscow', "
                "CASE WHEN g %% 20 = 0 THEN 'failed' WHEN g %% 20 IN (1, 2) THEN 'pending' "
                "WHEN g %% 20 = 3 THEN 'expired' ELSE 'sent' END, "
                "now() - interval '1 day', "
                "CASE WHEN g %% 20 > 3 THEN now() - interval '1 day' END, "
                "CASE WHEN g %% 20 IN (1, 2, 3) THEN 0 ELSE 1 END, "
                "CASE WHEN g %% 20 = 0 THEN (%s::text[])[1 + (g / 20) %% 5] ELSE '' END, "
                "now() + interval '1 hour' "
                "FROM generate_series(%s, %s) AS g, "
                "LATERAL (SELECT (g - 1) %% %s %% %s + 1 AS c) AS client",
                [
                    per_mailing,
                    REASONS,
                    (first - 1) * per_mailing + 1,
                    last * per_mailing,
                    per_mailing,
                    clients,
                ],
            )
        log("  counters from the messages")
        cur.execute(
            "UPDATE mailing_mailing AS m SET total = c.total, pending = c.pending, "
            "sent = c.sent, failed = c.failed, expired = c.expired, cancelled = c.cancelled "
            "FROM (SELECT mailing_id, count(*) AS total, "
            "count(*) FILTER (WHERE status = 'pending') AS pending, "
            "count(*) FILTER (WHERE status = 'sent') AS sent, "
            "count(*) FILTER (WHERE status = 'failed') AS failed, "
            "count(*) FILTER (WHERE status = 'expired') AS expired, "
            "count(*) FILTER (WHERE status = 'cancelled') AS cancelled "
            "FROM mailing_message GROUP BY mailing_id) AS c WHERE m.id = c.mailing_id"
        )
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('mailing_mailing', 'id'), %s)", [mailings]
        )
        log("  VACUUM ANALYZE")
        cur.execute("VACUUM ANALYZE mailing_message")
        cur.execute("VACUUM ANALYZE mailing_mailing")


def check_counters(sample: list[int]) -> None:
    """The counters are what reconcile_counters computes (it corrects nothing)."""
    from mailing.transitions import reconcile_counters

    for mailing_id in sample:
        corrections = reconcile_counters(mailing_id)
        assert not corrections, (mailing_id, corrections)


def time_http(base: str, token: str, paths: list[str], repeat: int) -> list[float]:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for path in paths[:3]:  # warm-up: connections, caches
        session.get(base + path, timeout=30).raise_for_status()
    timings = []
    for i in range(repeat):
        path = paths[i % len(paths)]
        started = time.perf_counter()
        response = session.get(base + path, timeout=30)
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return timings


def time_sql(sql: str, params_list: list[list[object]], repeat: int) -> list[float]:
    from django.db import connection

    timings = []
    with connection.cursor() as cur:
        cur.execute(sql, params_list[0])  # warm-up
        cur.fetchall()
        for i in range(repeat):
            started = time.perf_counter()
            cur.execute(sql, params_list[i % len(params_list)])
            cur.fetchall()
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--mailings", type=int)
    p.add_argument("--messages", type=int)
    p.add_argument("--requests", type=int, help="requests per endpoint")
    args = p.parse_args()
    mailings = args.mailings or (100 if args.quick else 1_000)
    messages = args.messages or (200_000 if args.quick else 10_000_000)
    repeat = args.requests or (100 if args.quick else 300)
    needed_gb = messages * 330 / 1e9 + 1
    free_gb = shutil.disk_usage(ROOT).free / 1e9
    log(f"disk: {free_gb:.0f} GB free, about {needed_gb:.1f} GB needed")
    if free_gb < needed_gb * 1.5:
        sys.exit(f"not enough disk space: {free_gb:.1f} GB free, {needed_gb:.1f} GB needed")
    with Bench("stats", args) as bench:
        started = time.monotonic()
        log(f"generating {mailings:,} mailings and {messages:,} messages")
        generate(mailings, messages, clients=min(10_000, messages // mailings))
        generated_in = time.monotonic() - started
        log(f"generated in {generated_in:.0f} s")
        rng = random.Random(5)
        sample = rng.sample(range(1, mailings + 1), min(20, mailings))
        check_counters(sample)
        token = api_token()
        # The project's app plus the naive endpoints (bench/naive_web.py), one server.
        base = bench.gunicorn(workers=2, settings_module="bench.naive_settings")
        ids = [rng.randint(1, mailings) for _ in range(50)]
        log("GET /api/v1/stats")
        overall = time_http(base, token, ["/api/v1/stats"], repeat)
        log("GET /api/v1/mailings/{id}/stats")
        one = time_http(base, token, [f"/api/v1/mailings/{i}/stats" for i in ids], repeat)
        log("baseline over HTTP: COUNT(*) ... GROUP BY over the messages")
        naive_repeat = 10 if args.quick else 20
        naive_overall = time_http(base, token, ["/bench/naive/stats"], naive_repeat)
        naive_one = time_http(
            base, token, [f"/bench/naive/mailings/{i}/stats" for i in ids], repeat
        )
        log("baseline, bare SQL")
        sql_overall = time_sql(
            "SELECT mailing_id, status, count(*) FROM mailing_message GROUP BY mailing_id, status",
            [[]],
            5 if args.quick else 10,
        )
        sql_one = time_sql(
            "SELECT status, count(*) FROM mailing_message WHERE mailing_id = %s GROUP BY status",
            [[i] for i in ids],
            repeat,
        )
        rows = []
        figures = bench.results.figures
        figures.update(mailings=mailings, messages=messages, generated_seconds=generated_in)
        for label, api, naive, sql in (
            ("GET /api/v1/stats", overall, naive_overall, sql_overall),
            ("GET /api/v1/mailings/{id}/stats", one, naive_one, sql_one),
        ):
            p95 = percentile(api, 95)
            naive_p95 = percentile(naive, 95)
            rows.append(
                [
                    label,
                    percentile(api, 50),
                    p95,
                    percentile(naive, 50),
                    naive_p95,
                    percentile(sql, 95),
                    ratio(naive_p95, p95),
                    f"p95 ≤ {TARGET_P95_MS:g} ms",
                    "yes" if p95 <= TARGET_P95_MS else "NO",
                ]
            )
            figures[label] = {
                "p50_ms": percentile(api, 50),
                "p95_ms": p95,
                "requests": len(api),
                "baseline_p50_ms": percentile(naive, 50),
                "baseline_p95_ms": naive_p95,
                "baseline_runs": len(naive),
                "baseline_sql_p50_ms": percentile(sql, 50),
                "baseline_sql_p95_ms": percentile(sql, 95),
            }
        bench.results.table(
            f"Statistics: {mailings:,} mailings, {messages:,} messages "
            "(gunicorn 2 workers; naive = the same answer by GROUP BY, same server)",
            [
                "endpoint",
                "p50 ms",
                "p95 ms",
                "naive p50 ms",
                "naive p95 ms",
                "naive SQL alone p95 ms",
                "ratio (p95)",
                "target",
                "met",
            ],
            rows,
        )
        log(f"data generation took {fmt(generated_in)} s")


if __name__ == "__main__":
    main()
