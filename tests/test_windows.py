"""Send windows: plain cases, daylight-saving rules, and properties over real zones."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailing.windows import (
    _year_transitions,
    is_inside_window,
    next_window_opening,
    resolve_local,
)

MOSCOW = ZoneInfo("Europe/Moscow")  # UTC+3, no DST
VLADIVOSTOK = ZoneInfo("Asia/Vladivostok")  # UTC+10, no DST
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # 30-minute DST
APIA = ZoneInfo("Pacific/Apia")  # skipped 2011-12-30 entirely


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def t(hour: int, minute: int = 0) -> time:
    return time(hour, minute)


SECOND = timedelta(seconds=1)


# --- plain cases ---------------------------------------------------------------------


class TestPlain:
    window = (t(9), t(21))

    def test_inside_returns_the_moment_itself_in_utc(self) -> None:
        moment = utc(2026, 6, 1, 12)  # 15:00 in Moscow
        assert is_inside_window(moment, MOSCOW, *self.window)
        opening = next_window_opening(moment, MOSCOW, *self.window)
        assert opening == moment
        assert opening.tzinfo is UTC

    def test_exactly_at_start_is_inside(self) -> None:
        moment = utc(2026, 6, 1, 6)  # 09:00 MSK
        assert is_inside_window(moment, MOSCOW, *self.window)
        assert next_window_opening(moment, MOSCOW, *self.window) == moment
        assert not is_inside_window(moment - SECOND, MOSCOW, *self.window)
        assert next_window_opening(moment - SECOND, MOSCOW, *self.window) == moment

    def test_exactly_at_end_is_outside(self) -> None:
        moment = utc(2026, 6, 1, 18)  # 21:00 MSK
        assert not is_inside_window(moment, MOSCOW, *self.window)
        assert is_inside_window(moment - SECOND, MOSCOW, *self.window)
        assert next_window_opening(moment, MOSCOW, *self.window) == utc(2026, 6, 2, 6)

    def test_microseconds_are_respected(self) -> None:
        moment = utc(2026, 6, 1, 5, 59, 59) + timedelta(microseconds=999_999)
        assert not is_inside_window(moment, MOSCOW, *self.window)
        assert next_window_opening(moment, MOSCOW, *self.window) == utc(2026, 6, 1, 6)

    def test_same_instant_different_zones(self) -> None:
        moment = utc(2026, 6, 1, 12)  # 15:00 in Moscow, 22:00 in Vladivostok
        assert is_inside_window(moment, MOSCOW, *self.window)
        assert not is_inside_window(moment, VLADIVOSTOK, *self.window)
        # 09:00 on June 2nd in Vladivostok is 23:00 UTC on June 1st.
        assert next_window_opening(moment, VLADIVOSTOK, *self.window) == utc(2026, 6, 1, 23)

    def test_moment_in_any_zone(self) -> None:
        moment = datetime(2026, 6, 1, 8, 0, tzinfo=NEW_YORK)  # 12:00 UTC
        assert next_window_opening(moment, VLADIVOSTOK, *self.window) == utc(2026, 6, 1, 23)
        assert next_window_opening(moment, MOSCOW, *self.window) == utc(2026, 6, 1, 12)

    def test_window_crossing_midnight(self) -> None:
        window = (t(22), t(6))
        assert is_inside_window(utc(2026, 6, 1, 19), MOSCOW, *window)  # 22:00, start
        assert is_inside_window(utc(2026, 6, 1, 20), MOSCOW, *window)  # 23:00
        assert is_inside_window(utc(2026, 6, 1, 21), MOSCOW, *window)  # 00:00
        assert is_inside_window(utc(2026, 6, 2, 2, 59, 59), MOSCOW, *window)  # 05:59:59
        assert not is_inside_window(utc(2026, 6, 2, 3), MOSCOW, *window)  # 06:00, end
        assert not is_inside_window(utc(2026, 6, 2, 12), MOSCOW, *window)  # 15:00
        assert next_window_opening(utc(2026, 6, 2, 3), MOSCOW, *window) == utc(2026, 6, 2, 19)
        assert next_window_opening(utc(2026, 6, 1, 21), MOSCOW, *window) == utc(2026, 6, 1, 21)

    def test_window_touching_midnight(self) -> None:
        evening = (t(18), t(0))
        assert is_inside_window(utc(2026, 6, 1, 20, 59, 59), MOSCOW, *evening)  # 23:59:59
        assert not is_inside_window(utc(2026, 6, 1, 21), MOSCOW, *evening)  # 00:00
        morning = (t(0), t(6))
        assert is_inside_window(utc(2026, 6, 1, 21), MOSCOW, *morning)
        assert next_window_opening(utc(2026, 6, 1, 12), MOSCOW, *morning) == utc(2026, 6, 1, 21)

    def test_invalid_input(self) -> None:
        with pytest.raises(ValueError, match="must differ"):
            is_inside_window(utc(2026, 6, 1), MOSCOW, t(9), t(9))
        with pytest.raises(ValueError, match="must differ"):
            next_window_opening(utc(2026, 6, 1), MOSCOW, t(9), t(9))
        with pytest.raises(ValueError, match="aware"):
            is_inside_window(datetime(2026, 6, 1), MOSCOW, t(9), t(21))
        with pytest.raises(ValueError, match="aware"):
            next_window_opening(datetime(2026, 6, 1), MOSCOW, t(9), t(21))


# --- daylight saving -----------------------------------------------------------------


class TestSpringForwardNewYork:
    """2026-03-08: 02:00 EST (07:00 UTC) jumps to 03:00 EDT."""

    def test_start_in_gap_opens_when_the_gap_ends(self) -> None:
        window = (t(2, 30), t(9))
        opening = next_window_opening(utc(2026, 3, 8, 5), NEW_YORK, *window)  # 00:00 EST
        assert opening == utc(2026, 3, 8, 7)
        assert opening.astimezone(NEW_YORK).time() == t(3)
        assert is_inside_window(opening, NEW_YORK, *window)
        assert not is_inside_window(opening - SECOND, NEW_YORK, *window)  # 01:59:59 EST
        assert resolve_local(date(2026, 3, 8), t(2, 30), NEW_YORK) == utc(2026, 3, 8, 7)

    def test_neighbouring_days_are_unaffected(self) -> None:
        window = (t(2, 30), t(9))
        assert next_window_opening(utc(2026, 3, 7), NEW_YORK, *window) == utc(2026, 3, 7, 7, 30)
        assert next_window_opening(utc(2026, 3, 8, 14), NEW_YORK, *window) == utc(2026, 3, 9, 6, 30)

    def test_window_wholly_inside_the_gap_does_not_happen_that_day(self) -> None:
        window = (t(2, 10), t(2, 50))
        opening = next_window_opening(utc(2026, 3, 8, 5), NEW_YORK, *window)
        assert opening == utc(2026, 3, 9, 6, 10)  # 02:10 EDT on the 9th

    def test_end_in_gap_closes_at_the_jump(self) -> None:
        window = (t(1), t(2, 30))
        assert is_inside_window(utc(2026, 3, 8, 6, 59, 59), NEW_YORK, *window)  # 01:59:59 EST
        assert not is_inside_window(utc(2026, 3, 8, 7), NEW_YORK, *window)  # 03:00 EDT
        assert next_window_opening(utc(2026, 3, 8, 7), NEW_YORK, *window) == utc(2026, 3, 9, 5)

    def test_night_window_across_the_change(self) -> None:
        window = (t(22), t(6))
        # 22:00 EST on the 7th, then inside through the jump until 06:00 EDT.
        assert next_window_opening(utc(2026, 3, 7, 12), NEW_YORK, *window) == utc(2026, 3, 8, 3)
        assert is_inside_window(utc(2026, 3, 8, 9, 59), NEW_YORK, *window)  # 05:59 EDT
        assert not is_inside_window(utc(2026, 3, 8, 10), NEW_YORK, *window)  # 06:00 EDT
        assert next_window_opening(utc(2026, 3, 8, 12), NEW_YORK, *window) == utc(2026, 3, 9, 2)


class TestFallBackBerlin:
    """2026-10-25: 03:00 CEST (01:00 UTC) falls back to 02:00 CET."""

    window = (t(2, 30), t(3, 30))

    def test_start_occurring_twice_opens_at_the_first_occurrence(self) -> None:
        opening = next_window_opening(utc(2026, 10, 24, 22), BERLIN, *self.window)
        assert opening == utc(2026, 10, 25, 0, 30)  # 02:30 CEST
        assert opening.astimezone(BERLIN).fold == 0
        assert resolve_local(date(2026, 10, 25), t(2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)

    def test_repeated_hour_is_inside_twice(self) -> None:
        inside = [
            (utc(2026, 10, 25, 0, 29, 59), False),  # 02:29:59 CEST
            (utc(2026, 10, 25, 0, 30), True),  # 02:30 CEST
            (utc(2026, 10, 25, 0, 59, 59), True),  # 02:59:59 CEST
            (utc(2026, 10, 25, 1), False),  # 02:00 CET: the clock went back
            (utc(2026, 10, 25, 1, 29, 59), False),  # 02:29:59 CET
            (utc(2026, 10, 25, 1, 30), True),  # 02:30 CET, second time
            (utc(2026, 10, 25, 2, 29, 59), True),  # 03:29:59 CET
            (utc(2026, 10, 25, 2, 30), False),  # 03:30 CET, end
        ]
        assert [is_inside_window(m, BERLIN, *self.window) for m, _ in inside] == [
            expected for _, expected in inside
        ]
        assert next_window_opening(utc(2026, 10, 25, 1), BERLIN, *self.window) == utc(
            2026, 10, 25, 1, 30
        )
        assert next_window_opening(utc(2026, 10, 25, 2, 30), BERLIN, *self.window) == utc(
            2026, 10, 26, 1, 30
        )

    def test_clock_turned_back_into_the_window_reopens_it_at_the_transition(self) -> None:
        window = (t(1), t(2, 30))  # closes at 02:30 CEST, reopens when 03:00 CEST becomes 02:00
        assert not is_inside_window(utc(2026, 10, 25, 0, 59, 59), BERLIN, *window)
        assert next_window_opening(utc(2026, 10, 25, 0, 30), BERLIN, *window) == utc(
            2026, 10, 25, 1
        )
        assert not is_inside_window(utc(2026, 10, 25, 1, 30), BERLIN, *window)  # 02:30 CET


class TestLordHowe:
    """Half-hour DST: +10:30 <-> +11."""

    def test_spring_forward_half_hour(self) -> None:
        # 2026-10-04 02:00 (+10:30) = 15:30 UTC on the 3rd jumps to 02:30 (+11).
        window = (t(2, 15), t(6))
        opening = next_window_opening(utc(2026, 10, 3, 12), LORD_HOWE, *window)
        assert opening == utc(2026, 10, 3, 15, 30)
        assert opening.astimezone(LORD_HOWE).time() == t(2, 30)
        assert resolve_local(date(2026, 10, 4), t(2, 15), LORD_HOWE) == opening

    def test_fall_back_half_hour(self) -> None:
        # 2026-04-05 02:00 (+11) = 15:00 UTC on the 4th falls back to 01:30 (+10:30).
        window = (t(1, 45), t(2, 15))
        assert next_window_opening(utc(2026, 4, 4, 12), LORD_HOWE, *window) == utc(
            2026, 4, 4, 14, 45
        )
        assert not is_inside_window(utc(2026, 4, 4, 15), LORD_HOWE, *window)  # 01:30 again
        assert next_window_opening(utc(2026, 4, 4, 15), LORD_HOWE, *window) == utc(
            2026, 4, 4, 15, 15
        )
        assert resolve_local(date(2026, 4, 5), t(1, 45), LORD_HOWE) == utc(2026, 4, 4, 14, 45)


def test_skipped_day_in_apia() -> None:
    # Samoa crossed the date line: 2011-12-29 24:00 (-10) became 2011-12-31 00:00 (+14).
    window = (t(9), t(17))
    opening = next_window_opening(utc(2011, 12, 30, 6), APIA, *window)  # 20:00 on the 29th
    assert opening == utc(2011, 12, 30, 19)  # 09:00 on the 31st
    assert resolve_local(date(2011, 12, 30), t(12), APIA) == utc(2011, 12, 30, 10)


@pytest.mark.parametrize(
    ("zone", "year"),
    [
        ("America/New_York", 2026),
        ("Europe/Berlin", 2026),
        ("Australia/Lord_Howe", 2026),
        ("Pacific/Apia", 2011),
        ("Asia/Gaza", 2030),
        ("Europe/Moscow", 2014),
    ],
)
def test_transition_table_matches_a_fine_scan(zone: str, year: int) -> None:
    # Independent check of the hourly-probe table: at 10-minute resolution the
    # offset changes exactly where the table says, and nowhere else.
    info = ZoneInfo(zone)
    table = _year_transitions(info, year)
    begin = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    finish = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    offset = datetime.fromtimestamp(begin, info).utcoffset()
    changes = []
    for ts in range(begin + 600, finish + 1, 600):
        current = datetime.fromtimestamp(ts, info).utcoffset()
        if current != offset:
            changes.append(ts)
            offset = current
    assert len(table) == len(changes)
    for exact, coarse in zip(table, changes, strict=True):
        assert coarse - 600 < exact <= coarse
        assert datetime.fromtimestamp(exact - 1, info).utcoffset() != (
            datetime.fromtimestamp(exact, info).utcoffset()
        )


# --- properties over real zones ------------------------------------------------------

ZONES = sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC")
zones = st.sampled_from(ZONES).map(ZoneInfo)
minute_times = st.builds(time, st.integers(0, 23), st.integers(0, 59))
windows = st.tuples(minute_times, minute_times).filter(lambda w: w[0] != w[1])
plain_moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@st.composite
def window_cases(draw: st.DrawFn) -> tuple[datetime, ZoneInfo, time, time]:
    zone = draw(zones)
    start, end = draw(windows)
    if draw(st.booleans()):
        moment = draw(plain_moments)
    else:
        # Right around a window edge, where off-by-one mistakes live.
        day = draw(st.dates(min_value=date(2020, 1, 2), max_value=date(2035, 12, 30)))
        edge = resolve_local(day, draw(st.sampled_from([start, end])), zone)
        moment = edge + timedelta(seconds=draw(st.integers(-120, 120)))
    return moment, zone, start, end


def oracle_inside(moment: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    local = zone.fromutc(moment.replace(tzinfo=zone))
    now = local.hour * 3600 + local.minute * 60 + local.second
    lo = start.hour * 3600 + start.minute * 60
    hi = end.hour * 3600 + end.minute * 60
    return lo <= now < hi if lo < hi else (now >= lo or now < hi)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_cases())
def test_opening_properties(case: tuple[datetime, ZoneInfo, time, time]) -> None:
    moment, zone, start, end = case
    opening = next_window_opening(moment, zone, start, end)
    assert opening.tzinfo is UTC
    assert opening >= moment
    assert is_inside_window(opening, zone, start, end)
    # A window opens at least once a day; the largest jumps are a day long.
    assert opening - moment <= timedelta(hours=49)
    if is_inside_window(moment, zone, start, end):
        assert opening == moment
    else:
        assert opening > moment
        assert not is_inside_window(opening - timedelta(microseconds=1), zone, start, end)
        if opening - SECOND >= moment:
            assert not is_inside_window(opening - SECOND, zone, start, end)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_cases())
def test_opening_matches_brute_force(case: tuple[datetime, ZoneInfo, time, time]) -> None:
    moment, zone, start, end = case
    moment = moment.replace(microsecond=0)
    assume(not oracle_inside(moment, zone, start, end))
    # Every start is on a whole minute and every transition in 2020-2035 too,
    # so the true opening lies on the minute grid: the first inside grid point.
    first = moment.replace(second=0) + timedelta(minutes=1)
    expected = next(
        (
            first + timedelta(minutes=k)
            for k in range(48 * 60)
            if oracle_inside(first + timedelta(minutes=k), zone, start, end)
        ),
        None,
    )
    assert expected is not None
    assert next_window_opening(moment, zone, start, end) == expected


@settings(max_examples=300, deadline=None)
@given(
    zone=zones,
    day=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
    at=st.builds(time, st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)),
)
def test_resolve_local_rules(zone: ZoneInfo, day: date, at: time) -> None:
    wall = datetime.combine(day, at)
    resolved = resolve_local(day, at, zone)
    assert resolved.tzinfo is UTC
    local = resolved.astimezone(zone)
    if local.replace(tzinfo=None) == wall:
        # Exists: and it is the first occurrence. A repeat would be earlier by
        # the (whole-minute, at most 3 h) size of a fall-back: none may match.
        assert local.fold == 0
        for minutes in range(1, 3 * 60 + 1):
            earlier = resolved - timedelta(minutes=minutes)
            assert earlier.astimezone(zone).replace(tzinfo=None) != wall
    else:
        # In a gap: the first instant after it, where the clock first reads past `at`.
        assert local.replace(tzinfo=None) > wall
        before = (resolved - timedelta(microseconds=1)).astimezone(zone).replace(tzinfo=None)
        assert before < wall
