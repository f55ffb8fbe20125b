"""Where one dispatcher's CPU goes: ``manage.py dispatch`` under py-spy against the stand-in.

    .venv/bin/python bench/profile_dispatch.py [--latency-ms 50] [--seconds 20]

Prints the messages/s reached and the functions with the most samples (self and inclusive,
all threads, idle excluded); writes the collapsed stacks for a flame graph next to it
(``--out``). Needs py-spy (requirements-dev.txt) and the right to ptrace a child process.
"""

from __future__ import annotations

import collections
import shutil
import time
from pathlib import Path

from common import MANAGE, PYTHON, Bench, insert_clients, log, parser, print_table

PROJECT_MARKERS = ("/work/", "mailing/", "bench/")


def summarize(raw: Path, top: int) -> None:
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        log("no samples")
        return

    def rows(counter: collections.Counter[str]) -> list[list[object]]:
        return [[frame[:110], 100.0 * n / total] for frame, n in counter.most_common(top)]

    print_table(
        f"Self time (of {total:,} samples)", ["function (file:line)", "%"], rows(self_counts)
    )
    project = collections.Counter(
        {f: n for f, n in inclusive.items() if "mailing/" in f or "django/db" in f}
    )
    print_table("Inclusive time, project and django.db frames", ["function", "%"], rows(project))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default="var/profile-dispatch.txt", help="collapsed stacks")
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    messages = int(3000 * args.seconds)
    with Bench("profile", args) as bench:
        from common import create_running_mailing, fan_out_completely

        from mailing.models import Mailing

        insert_clients(messages, tag="bench")
        stand_in = bench.stand_in(latency_ms=args.latency_ms)
        mailing = create_running_mailing(tags=["bench"])
        fan_out_completely(mailing.pk)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        proc = bench.start(
            "py-spy",
            [
                py_spy,
                "record",
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(out),
                "--",
                PYTHON,
                MANAGE,
                "dispatch",
                "--seconds",
                str(args.seconds),
                "--concurrency",
                str(args.concurrency),
            ],
            PROBE_URL=stand_in.url,
        )
        proc.popen.wait(timeout=args.seconds + 120)
        elapsed = time.monotonic() - started
        sent = Mailing.objects.values_list("sent", flat=True).get(pk=mailing.pk)
        log(f"sent {sent:,} in {elapsed:.1f} s (with start-up): {sent / args.seconds:,.0f} msg/s")
        if not out.exists():
            log(proc.tail())
            raise SystemExit("py-spy wrote nothing (no ptrace permission?)")
        summarize(out, args.top)


if __name__ == "__main__":
    main()
