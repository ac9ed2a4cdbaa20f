"""Usage windows: conservative rolling counts with bounded memory, and calendar days with DST."""

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core.windows import Calendar, Rolling, local_day_bounds

EPOCH = 1_780_000_000.0  # 2026-05-28, an arbitrary fixed instant


def exact_count(events: list[tuple[float, int]], now: float, span: float) -> int:
    return sum(amount for at, amount in events if now - span < at <= now)


events_strategy = st.lists(
    st.tuples(st.floats(0, 500, allow_nan=False), st.integers(0, 50)), max_size=60
).map(lambda steps: sorted(steps))


@given(events_strategy, st.floats(0, 700, allow_nan=False))
def test_rolling_totals_never_under_count_and_over_count_at_most_one_grain(
    events: list[tuple[float, int]], later: float
) -> None:
    window = Rolling.minute()
    seen: list[tuple[float, int]] = []
    for offset, tokens in events:
        window = window.add(EPOCH + offset, 1, tokens)
        seen.append((EPOCH + offset, tokens))
    now = EPOCH + max([later, *(o for o, _ in events)])
    requests, tokens = window.totals(now)
    timed_requests = [(at, 1) for at, _ in seen]
    assert requests >= exact_count(timed_requests, now, 60.0)
    assert tokens >= exact_count(seen, now, 60.0)
    assert requests <= exact_count(timed_requests, now, 60.0 + window.grain)
    assert tokens <= exact_count(seen, now, 60.0 + window.grain)


@given(st.lists(st.floats(0, 10_000, allow_nan=False), max_size=400).map(sorted))
def test_rolling_memory_is_bounded_whatever_the_traffic(offsets: list[float]) -> None:
    window = Rolling.minute()
    for offset in offsets:
        window = window.add(EPOCH + offset, 1, 1)
        assert len(window.buckets) <= window.span / window.grain + 2


def test_rolling_day_memory_is_bounded_under_a_day_of_steady_traffic() -> None:
    window = Rolling.day()
    for second in range(0, 3 * 86_400, 7):
        window = window.add(EPOCH + second, 1, 10)
    assert len(window.buckets) <= window.span / window.grain + 2


def test_rolling_forgets_a_bucket_once_no_instant_of_it_is_in_the_window() -> None:
    window = Rolling.minute().add(EPOCH + 0.2, 1, 100)  # bucket [EPOCH, EPOCH + 1)
    assert window.totals(EPOCH + 60.9) == (1, 100)
    assert window.totals(EPOCH + 61.0) == (0, 0)


def test_frees_at_is_when_enough_buckets_have_left() -> None:
    window = Rolling.minute()
    window = window.add(EPOCH + 0.5, 1, 0).add(EPOCH + 10.5, 1, 0).add(EPOCH + 20.5, 1, 0)
    # To get down to one counted request, the buckets of 0.5 and 10.5 must leave.
    assert window.frees_at(EPOCH + 30, requests=1, tokens=0) == EPOCH + 10 + 1 + 60
    assert window.frees_at(EPOCH + 30, requests=3, tokens=0) is None


def test_adjust_corrects_the_bucket_of_the_reservation_and_never_goes_negative() -> None:
    window = Rolling.minute().add(EPOCH, 1, 500).add(EPOCH + 5, 1, 300)
    corrected = window.adjust(EPOCH, 0, -200)
    assert corrected.totals(EPOCH + 5) == (2, 600)
    assert corrected.buckets[0] == (EPOCH, 1, 300)
    assert window.adjust(EPOCH, 0, -10_000).totals(EPOCH + 5) == (2, 300)
    # Usage that has left the window is not corrected.
    assert window.adjust(EPOCH - 3600, 0, 50) == window


def test_a_clock_stepping_back_counts_in_the_newest_bucket() -> None:
    window = Rolling.minute().add(EPOCH + 30, 1, 10).add(EPOCH + 5, 1, 10)
    assert window.buckets == ((EPOCH + 30, 2, 20),)


ZONES = ["America/Los_Angeles", "Europe/Berlin", "America/Havana", "Asia/Beirut", "UTC"]


def first_instant_of_next_local_day(now: float, zone: str) -> float:
    """Independent oracle: bisect for the instant the local date changes."""
    tz = zoneinfo.ZoneInfo(zone)
    today = dt.datetime.fromtimestamp(now, tz).date()
    low, high = now, now + 3 * 86_400.0
    while high - low > 1e-3:
        middle = (low + high) / 2
        if dt.datetime.fromtimestamp(middle, tz).date() > today:
            high = middle
        else:
            low = middle
    return round(high)


@given(st.sampled_from(ZONES), st.floats(1_700_000_000, 1_900_000_000, allow_nan=False))
def test_calendar_day_ends_at_the_first_instant_of_the_next_local_date(
    zone: str, now: float
) -> None:
    start, end = local_day_bounds(now, zone)
    assert start <= now < end
    assert end == first_instant_of_next_local_day(now, zone)


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("America/Los_Angeles", dt.date(2026, 3, 8), 23),  # spring forward at 02:00
        ("America/Los_Angeles", dt.date(2026, 11, 1), 25),  # fall back at 02:00
        ("America/Los_Angeles", dt.date(2026, 6, 1), 24),
        ("America/Havana", dt.date(2026, 3, 8), 23),  # clocks skip local midnight itself
    ],
)
def test_calendar_days_around_dst_have_their_real_length(
    zone: str, day: dt.date, hours: int
) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    noon = dt.datetime.combine(day, dt.time(12), tzinfo=tz).timestamp()
    start, end = local_day_bounds(noon, zone)
    assert end - start == hours * 3600
    assert dt.datetime.fromtimestamp(end, tz).date() == day + dt.timedelta(days=1)
    assert dt.datetime.fromtimestamp(end - 0.001, tz).date() == day


def test_calendar_counts_reset_at_midnight_los_angeles() -> None:
    tz = zoneinfo.ZoneInfo("America/Los_Angeles")
    before = dt.datetime(2026, 11, 1, 23, 59, 59, tzinfo=tz).timestamp()
    midnight = dt.datetime(2026, 11, 2, 0, 0, tzinfo=tz).timestamp()
    window = Calendar("America/Los_Angeles").add(before - 3600, 5, 100).add(before, 1, 1)
    assert window.totals(before) == (6, 101)
    assert window.totals(midnight - 0.001) == (6, 101)
    assert window.totals(midnight) == (0, 0)
    assert window.frees_at(before, requests=0, tokens=0) == midnight
    after = window.add(midnight, 1, 7)
    assert after.totals(midnight) == (1, 7)
    # A correction for the previous day does not touch the new one.
    assert after.adjust(before, 0, -50) == after
