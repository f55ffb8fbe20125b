"""The client-local send window: "send only while the client's clock reads [start, end)".

All arithmetic is done on aware UTC instants; local time is only ever derived
from an instant (``instant.astimezone(zone)``), never the other way round
except in :func:`resolve_local`. That keeps the answers exact to the
microsecond and independent of the server's own timezone.

Rules (PRODUCT.md leaves daylight saving to "real zone rules"; these are ours)
------------------------------------------------------------------------------

1. **The local wall clock decides.** An instant is inside the window when the
   client's wall-clock time at that instant, ``moment.astimezone(zone).time()``,
   is in ``[start, end)``; when ``start > end`` the window crosses midnight and
   the test is ``time >= start or time < end``. ``start == end`` is rejected
   (``mailing.rules.SendWindow`` refuses such a window, so it is a caller bug here).

2. **Start inside a spring-forward gap.** If the local ``start`` does not exist
   that day (New York, 2026-03-08: 02:00 jumps to 03:00; window starting 02:30),
   the window opens at the first instant after the gap, i.e. the moment of the
   transition, when the clock first reads an existing time past ``start``
   (03:00 local = 07:00 UTC). By rule 1 this holds only while that time is
   still before ``end``: a window lying wholly inside the gap (02:10-02:50)
   simply does not happen that day. Likewise an ``end`` inside the gap closes
   the window at the transition.

3. **Start that occurs twice (fall back).** The window opens at the FIRST
   occurrence (``fold=0``). Berlin, 2026-10-25, window 02:30-03:30: it opens at
   02:30 CEST (00:30 UTC).

4. **Repeated hour.** During the repeated hour the wall clock still decides,
   so the window can be inside twice: in the example above it is inside
   00:30-01:00 UTC, outside 01:00-01:30 UTC (the clock reads 02:00-02:30 CET
   again) and inside 01:30-02:30 UTC. A clock turned back into the window
   from outside re-opens it at the instant of the transition.

:func:`resolve_local` maps a local date and time to one instant by rules 2
and 3. :func:`next_window_opening` does not need it: it walks the zone's
constant-offset stretches and finds where the wall clock reaches ``start`` or
lands inside the window after a jump, which covers every rule above and any
odd historical transition (whole days skipped, 30-minute DST) alike.

How offset changes are found
----------------------------
``zoneinfo`` does not publish a zone's transition list, so it is probed: the
UTC offset is sampled every hour of a UTC year and each change is bisected to
the exact second (transitions in TZif data are whole seconds). The table is
cached per (zone, year), costs a few milliseconds to build once, and makes
every later call a couple of binary searches. Hourly sampling can only miss a
pair of changes less than an hour apart that cancel each other out; the
closest offset changes anywhere in tzdata since 1900 are about four days
apart.
"""

from __future__ import annotations

import bisect
import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailing.rules import SendWindow

_PROBE_STEP = 3600  # seconds between offset samples when building a year's table
_DAY_US = 24 * 3600 * 1_000_000
# A window opens at least once in every 24 h of continuous wall clock, and
# offset changes are days apart, so a handful of stretches always suffices.
_MAX_STRETCHES = 64


def _naive(value: time) -> time:
    # Aware ``time`` objects cannot be compared with the naive wall clock.
    return value.replace(tzinfo=None)


def _check_window(start: time, end: time) -> tuple[time, time]:
    SendWindow(start, end)  # refuses an empty window (a ValueError here)
    return _naive(start), _naive(end)


def _check_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"moment must be timezone-aware, got {moment!r}")


def _wall_inside(wall: time, start: time, end: time) -> bool:
    # Naive time comparison ignores ``fold``: the wall clock reading is what counts.
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def _time_us(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def is_inside_window(moment: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    """True when the client's local wall-clock time at ``moment`` is in ``[start, end)``."""
    _check_aware(moment)
    start, end = _check_window(start, end)
    return _wall_inside(moment.astimezone(zone).time(), start, end)


def next_window_opening(moment: datetime, zone: ZoneInfo, start: time, end: time) -> datetime:
    """The earliest instant ``t >= moment`` inside the window, as an aware UTC datetime.

    Returns ``moment`` itself (in UTC) when it is already inside; otherwise the
    first instant after it at which :func:`is_inside_window` becomes true.
    """
    _check_aware(moment)
    start, end = _check_window(start, end)
    start_us = _time_us(start)
    t = moment.astimezone(UTC)
    for _ in range(_MAX_STRETCHES):
        local = t.astimezone(zone)
        if _wall_inside(local.time(), start, end):
            return t
        # Until the next offset change the wall clock runs with the UTC clock,
        # and coming from outside it can only enter the window at ``start``.
        wait_us = (start_us - _time_us(local.time())) % _DAY_US
        candidate = t + timedelta(microseconds=wait_us)
        transition = _next_transition(zone, t, candidate)
        if transition is None:
            return candidate
        # The clock jumps at ``transition`` (possibly right into the window):
        # continue from there with the new offset.
        t = transition
    raise RuntimeError(f"no window opening found for {zone.key} {start}-{end} after {moment}")


def resolve_local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant (aware UTC) at which the local clock in ``zone`` reads ``day at``.

    A time inside a spring-forward gap resolves to the first instant after the
    gap; a time that occurs twice resolves to its first occurrence.
    """
    wall = datetime.combine(day, _naive(at))
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    # fold=0 is the earlier of two occurrences; if the wall time survives the
    # round trip it exists, and this is its first occurrence.
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 applies the offset from before the jump and lands after
    # the transition; fold=1 applies the later offset and lands before it.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(first, other), max(first, other)
    transition = _next_transition(zone, low, high)
    if transition is None:  # pragma: no cover - zoneinfo said the time does not exist
        raise RuntimeError(f"{wall} in {zone.key} is in a gap without a transition")
    return transition


def _next_transition(zone: ZoneInfo, after: datetime, until: datetime) -> datetime | None:
    """The first instant ``T`` with ``after < T <= until`` at which the UTC offset changes."""
    after_ts = after.timestamp()
    until_ts = until.timestamp()
    for year in range(after.year, until.year + 1):
        table = _year_transitions(zone, year)
        index = bisect.bisect_right(table, after_ts)
        if index < len(table):
            if table[index] <= until_ts:
                return datetime.fromtimestamp(table[index], UTC)
            return None
    return None


@functools.lru_cache(maxsize=4096)
def _year_transitions(zone: ZoneInfo, year: int) -> tuple[int, ...]:
    """Epoch seconds ``T`` in (Jan 1 ``year``, Jan 1 ``year + 1``] (UTC) where the offset changes.

    ``T`` is the first second with the new offset.
    """
    if year < 1 or year >= 9999:
        return ()
    begin = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    finish = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    found: list[int] = []
    previous_ts, previous = begin, _offset_at(begin, zone)
    for ts in range(begin + _PROBE_STEP, finish + 1, _PROBE_STEP):
        current = _offset_at(ts, zone)
        if current != previous:
            low, high = previous_ts, ts
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_at(middle, zone) == previous:
                    low = middle
                else:
                    high = middle
            found.append(high)
        previous_ts, previous = ts, current
    return tuple(found)


def _offset_at(ts: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, zone).utcoffset()
