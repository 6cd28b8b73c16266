"""Poll pacing and delivery retry timing (SPEC section 6), as properties over clock values."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch.model import FeedSettings, Jitter
from feedwatch.pacing import (
    MAX_BACKOFF,
    MAX_RETRY_AFTER,
    delivery_retry_at,
    failure_backoff,
    is_given_up,
    latest_slot,
    next_poll_after_failure,
    next_poll_after_success,
    spread_overdue,
    within_interval,
)

NOW = datetime(2024, 11, 22, 15, 57, 3, tzinfo=timezone.utc)
EPS = 1e-6

intervals = st.floats(min_value=1.0, max_value=7 * 86400.0)
jitters = st.one_of(
    st.builds(Jitter, ratio=st.floats(min_value=0.0, max_value=0.9)),
    st.builds(Jitter, seconds=st.floats(min_value=0.0, max_value=3600.0)),
)
seeds = st.integers(min_value=0, max_value=2**32)
errors_st = st.integers(min_value=1, max_value=200)


def secs(when: datetime) -> float:
    return (when - NOW).total_seconds()


# -- after a success -------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(interval=intervals, jitter=jitters, seed=seeds)
def test_success_lands_within_jitter_of_the_interval(interval, jitter, seed):
    fs = FeedSettings(interval=interval, jitter=jitter)
    delay = secs(next_poll_after_success(NOW, fs, random.Random(seed)))
    j = jitter.amount(interval)
    assert delay >= 1.0 - EPS
    assert max(1.0, interval - j) - 1e-3 <= delay <= interval + j + 1e-3


def test_success_without_jitter_is_exactly_the_interval():
    fs = FeedSettings(interval=900, jitter=Jitter())
    assert next_poll_after_success(NOW, fs, random.Random(1)) == NOW + timedelta(seconds=900)


def test_success_jitter_actually_spreads_both_ways():
    fs = FeedSettings(interval=1000, jitter=Jitter(ratio=0.1))
    rng = random.Random(7)
    delays = [secs(next_poll_after_success(NOW, fs, rng)) for _ in range(200)]
    assert min(delays) < 950 and max(delays) > 1050
    assert all(900 <= d <= 1100 for d in delays)


def test_success_never_below_one_second():
    fs = FeedSettings(interval=1, jitter=Jitter(seconds=30))
    rng = random.Random(3)
    assert all(secs(next_poll_after_success(NOW, fs, rng)) >= 1.0 for _ in range(100))


def test_a_jitter_longer_than_the_interval_is_cut_to_the_interval():
    """A global jitter = "5s" inherited by a feed at interval = "2s" put about half the
    polls at the 1 s floor: a duration jitter is at most the interval, as 100% is."""
    fs = FeedSettings(interval=2, jitter=Jitter(seconds=5))
    rng = random.Random(5)
    delays = [secs(next_poll_after_success(NOW, fs, rng)) for _ in range(400)]
    assert all(1.0 <= d <= 4.0 for d in delays)
    # 2 s ± 2 s, the part below the 1 s floor raised to it: 2.125 s on average (was 2.8 s)
    assert sum(delays) / len(delays) == pytest.approx(2.125, abs=0.15)
    assert latest_slot(NOW, fs) == NOW + timedelta(seconds=5)  # (+1: see test_latest_slot_examples)


# -- backoff after failures ------------------------------------------------


def test_backoff_is_interval_times_two_to_the_errors_up_to_six_hours():
    # SPEC section 6: interval x 2^n after n consecutive errors, at most 6 h
    got = [failure_backoff(900, n) for n in range(1, 10)]
    assert got == [1800, 3600, 7200, 14400] + [MAX_BACKOFF] * 5
    assert [failure_backoff(1, n) for n in range(1, 5)] == [2, 4, 8, 16]
    assert failure_backoff(900, 0) == 1800  # 0 is treated as the first failure
    assert failure_backoff(900, 10**6) == MAX_BACKOFF  # no overflow


def test_backoff_never_below_a_long_interval():
    assert failure_backoff(86400, 1) == 86400
    assert failure_backoff(86400, 5) == 86400
    assert failure_backoff(4 * 3600, 1) == MAX_BACKOFF


@settings(max_examples=150, deadline=None)
@given(interval=intervals, a=errors_st, b=errors_st)
def test_backoff_monotone_and_capped(interval, a, b):
    lo, hi = sorted((a, b))
    assert failure_backoff(interval, lo) <= failure_backoff(interval, hi)
    assert interval <= failure_backoff(interval, hi) <= max(MAX_BACKOFF, interval)


@settings(max_examples=150, deadline=None)
@given(interval=intervals, jitter=jitters, errors=errors_st, seed=seeds)
def test_failure_delay_within_jitter_of_backoff_and_capped(interval, jitter, errors, seed):
    fs = FeedSettings(interval=interval, jitter=jitter)
    delay = secs(next_poll_after_failure(NOW, fs, errors, random.Random(seed)))
    base = failure_backoff(interval, errors)
    j = jitter.amount(base)
    cap = MAX_BACKOFF if interval <= MAX_BACKOFF else base + j
    assert delay >= 1.0 - EPS
    assert max(1.0, min(base - j, cap)) - 1e-3 <= delay <= min(base + j, cap) + 1e-3


@settings(max_examples=150, deadline=None)
@given(
    interval=st.floats(min_value=1.0, max_value=MAX_BACKOFF),
    errors=errors_st,
    seed=seeds,
    retry_after=st.floats(min_value=MAX_BACKOFF + 1, max_value=10 * MAX_RETRY_AFTER),
)
def test_failure_retry_after_longer_than_backoff_wins_capped_at_24h(
    interval, errors, seed, retry_after
):
    fs = FeedSettings(interval=interval)
    delay = secs(next_poll_after_failure(NOW, fs, errors, random.Random(seed), retry_after))
    assert delay == pytest.approx(min(retry_after, MAX_RETRY_AFTER))


@settings(max_examples=100, deadline=None)
@given(errors=errors_st, seed=seeds, retry_after=st.floats(min_value=0.0, max_value=800.0))
def test_failure_retry_after_shorter_than_backoff_changes_nothing(errors, seed, retry_after):
    fs = FeedSettings(interval=900, jitter=Jitter(ratio=0.1))
    with_ra = next_poll_after_failure(NOW, fs, errors, random.Random(seed), retry_after)
    without = next_poll_after_failure(NOW, fs, errors, random.Random(seed))
    assert with_ra == without


@pytest.mark.parametrize("bad", [-5.0, math.nan, math.inf * -1, 0.0])
def test_failure_nonsense_retry_after_is_ignored(bad):
    fs = FeedSettings(interval=900, jitter=Jitter())
    got = next_poll_after_failure(NOW, fs, 1, random.Random(0), bad)
    assert secs(got) == 1800


def test_failure_infinite_retry_after_is_capped():
    fs = FeedSettings(interval=900, jitter=Jitter())
    # inf is not finite: ignored rather than waiting a day for a garbage header
    assert secs(next_poll_after_failure(NOW, fs, 1, random.Random(0), math.inf)) == 1800
    assert secs(next_poll_after_failure(NOW, fs, 1, random.Random(0), 1e9)) == MAX_RETRY_AFTER


# -- start-up spreading ----------------------------------------------------


def test_spread_keeps_future_feeds_and_spreads_overdue_ones():
    future = NOW + timedelta(minutes=5)
    due = [
        ("later", future),
        ("never", None),
        ("old", NOW - timedelta(hours=3)),
        ("recent", NOW - timedelta(seconds=10)),
        ("exactly-now", NOW),
    ]
    got = spread_overdue(NOW, due, rng=random.Random(1))
    assert set(got) == {name for name, _ in due}
    assert got["later"] == future
    overdue = ["never", "old", "recent", "exactly-now"]
    times = [secs(got[n]) for n in overdue]
    assert times == sorted(times), "never polled first, then most overdue first"
    assert len(set(times)) == len(times)
    assert all(0 <= t <= 4.0 for t in times), "a handful start within seconds"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=500),
    window=st.floats(min_value=0.0, max_value=300.0),
    seed=seeds,
)
def test_spread_stays_within_the_window_in_order(n, window, seed):
    due = [(f"f{i:03d}", NOW - timedelta(seconds=n - i)) for i in range(n)]
    got = spread_overdue(NOW, due, window, rng=random.Random(seed))
    times = [secs(got[name]) for name, _ in due]
    assert all(0 <= t <= window + EPS for t in times)
    assert times == sorted(times)


def test_spread_many_feeds_uses_the_whole_minute_evenly():
    due = [(f"f{i}", None) for i in range(600)]
    got = sorted(secs(t) for t in spread_overdue(NOW, due, 60.0, rng=random.Random(5)).values())
    assert got[-1] > 59 and got[0] < 0.2
    # evenly-ish: every 6-second bucket holds about a tenth of the feeds
    buckets = [sum(1 for t in got if k * 6 <= t < (k + 1) * 6) for k in range(10)]
    assert all(55 <= b <= 65 for b in buckets), buckets


def test_spread_nothing_overdue():
    due = [("a", NOW + timedelta(seconds=1))]
    assert spread_overdue(NOW, due, rng=random.Random(0)) == {"a": NOW + timedelta(seconds=1)}
    assert spread_overdue(NOW, [], rng=random.Random(0)) == {}


# -- delivery retries ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(attempts=st.integers(min_value=1, max_value=10_000), seed=seeds)
def test_delivery_retry_is_30s_doubling_20pct_capped_at_1h(attempts, seed):
    delay = secs(delivery_retry_at(NOW, attempts, random.Random(seed)))
    base = min(30.0 * 2 ** min(attempts - 1, 64), 3600.0)
    assert 0.8 * base - 1e-6 <= delay <= min(1.2 * base, 3600.0) + 1e-6


def test_delivery_retry_schedule_examples():
    rng = random.Random(11)
    first = [secs(delivery_retry_at(NOW, 1, rng)) for _ in range(200)]
    assert 24 <= min(first) < 26 and 34 < max(first) <= 36
    assert all(48 <= secs(delivery_retry_at(NOW, 2, rng)) <= 72 for _ in range(50))
    assert all(secs(delivery_retry_at(NOW, 8, rng)) <= 3600 for _ in range(50))
    assert max(secs(delivery_retry_at(NOW, 30, rng)) for _ in range(200)) == 3600


@settings(max_examples=100, deadline=None)
@given(
    attempts=st.integers(min_value=1, max_value=50),
    seed=seeds,
    retry_after=st.floats(min_value=3601.0, max_value=10 * MAX_RETRY_AFTER),
)
def test_delivery_retry_after_honoured_and_capped(attempts, seed, retry_after):
    delay = secs(delivery_retry_at(NOW, attempts, random.Random(seed), retry_after))
    assert delay == pytest.approx(min(retry_after, MAX_RETRY_AFTER))


def test_delivery_short_retry_after_does_not_shorten_backoff():
    a = delivery_retry_at(NOW, 5, random.Random(2), retry_after=1.0)
    b = delivery_retry_at(NOW, 5, random.Random(2))
    assert a == b and secs(a) >= 0.8 * 480


def test_is_given_up_boundary():
    created = NOW - timedelta(days=3)
    assert is_given_up(created, NOW, 3 * 86400)
    assert not is_given_up(created + timedelta(seconds=1), NOW, 3 * 86400)
    assert not is_given_up(created - timedelta(days=365), NOW, 0), "0 = never give up"


@settings(max_examples=150, deadline=None)
@given(intervals, jitters, seeds, st.floats(min_value=1.0, max_value=7 * 86400.0))
def test_latest_slot_bounds_every_next_poll_and_catches_a_longer_interval(
    interval: float, jitter: Jitter, seed: int, longer: float
) -> None:
    """No next poll set under the settings is later than ``latest_slot``; one set under
    a longer interval (what the config had before a reload) can be, and then it is."""
    s = FeedSettings(interval=interval, jitter=jitter)
    rng = random.Random(seed)
    assert next_poll_after_success(NOW, s, rng) <= latest_slot(NOW, s) + timedelta(seconds=EPS)
    before = FeedSettings(interval=interval + longer, jitter=Jitter())
    if interval + longer > interval + jitter.amount(interval) + 1 + EPS:
        assert next_poll_after_success(NOW, before, rng) > latest_slot(NOW, s)


def test_latest_slot_examples() -> None:
    """The interval + jitter, plus a second: the last poll is stored to the second, and
    the poll counted its next one from the exact time, up to a second later."""
    ten_percent = FeedSettings(interval=3600, jitter=Jitter(ratio=0.1))
    assert latest_slot(NOW, ten_percent) == NOW + timedelta(seconds=3961)
    thirty_s = FeedSettings(interval=300, jitter=Jitter(seconds=30))
    assert latest_slot(NOW, thirty_s) == NOW + timedelta(seconds=331)
    exact = NOW + timedelta(seconds=0.999)  # the exact time of a poll stored as NOW
    steady = FeedSettings(interval=300, jitter=Jitter())
    own = next_poll_after_success(exact, steady, random.Random(1))
    assert within_interval(own, steady, NOW, backing_off=False) == own  # not brought forward


@settings(max_examples=150, deadline=None)
@given(
    intervals,
    jitters,
    seeds,
    st.floats(min_value=0.0, max_value=30 * 86400.0),
    st.booleans(),
)
def test_within_interval_only_brings_forward_what_a_longer_interval_set(
    interval: float, jitter: Jitter, seed: int, stored_after: float, backing_off: bool
) -> None:
    """Never later than stored; unchanged for a next poll these settings could have set,
    for a feed never polled, and for one backing off; else no later than the last
    poll + interval + jitter."""
    s = FeedSettings(interval=interval, jitter=jitter)
    stored = NOW + timedelta(seconds=stored_after)
    got = within_interval(stored, s, NOW, backing_off=backing_off)
    assert got <= stored
    assert within_interval(stored, s, None, backing_off=False) == stored
    if backing_off:
        assert got == stored
    else:
        assert got <= latest_slot(NOW, s)
    own = next_poll_after_success(NOW, s, random.Random(seed))
    assert within_interval(own, s, NOW, backing_off=False) == own


@given(
    intervals,
    jitters,
    st.floats(min_value=0.0, max_value=30 * 86400.0),
    st.floats(min_value=1.0, max_value=86400.0),
    st.booleans(),
)
def test_within_interval_keeps_the_wait_when_the_clock_was_set_back(
    interval: float, jitter: Jitter, wait: float, back: float, backing_off: bool
) -> None:
    """A last poll after now: the clock was set back since. The wait that poll set
    counts from now, as it would have without the step; a clock that moved on changes
    nothing."""
    s = FeedSettings(interval=interval, jitter=jitter)
    stored = NOW + timedelta(seconds=wait)
    earlier = NOW - timedelta(seconds=back)
    unstepped = within_interval(stored, s, NOW, backing_off=backing_off)
    got = within_interval(stored, s, NOW, backing_off=backing_off, now=earlier)
    assert abs((got - earlier) - (unstepped - NOW)) <= timedelta(microseconds=1)
    later = NOW + timedelta(seconds=back)
    assert within_interval(stored, s, NOW, backing_off=backing_off, now=later) == unstepped


def test_within_interval_after_a_step_back_example() -> None:
    s = FeedSettings(interval=900.0, jitter=Jitter(seconds=0.0))
    hour_back = NOW - timedelta(hours=1)
    assert within_interval(
        NOW + timedelta(minutes=15), s, NOW, backing_off=False, now=hour_back
    ) == hour_back + timedelta(minutes=15)
    assert within_interval(
        NOW + timedelta(hours=4), s, NOW, backing_off=True, now=hour_back
    ) == hour_back + timedelta(hours=4)
