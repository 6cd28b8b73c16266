"""When to poll next and when to retry a delivery: pure timing policy (SPEC section 6).

Every function takes ``now`` and a ``random.Random`` as values and returns a
time, so the scheduler, ``check``, a restart and tests all compute the same
thing, and the result can be stored in the state as the single truth.

- Polite: a poll lands within ± jitter of its slot; n consecutive errors back off
  as interval x 2^n, at most 6 h (never below the interval); a server's
  ``Retry-After`` is honoured up to 24 h; after a start, overdue feeds are
  spread over at most a minute rather than all fired at once.
- Nothing lost: a failed delivery is retried 30 s later, then doubling with
  ±20 % jitter, at most 1 h apart, ``Retry-After`` honoured, until
  ``give_up_after`` has passed since its alert was created.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from feedwatch.clock import RESOLUTION
from feedwatch.model import FeedSettings

MAX_BACKOFF = 6 * 3600.0
"""Longest gap between polls of a failing feed (unless its interval is longer)."""

MAX_RETRY_AFTER = 24 * 3600.0
"""Longest ``Retry-After`` honoured; a longer one is cut to this."""

MIN_DELAY = 1.0
"""No computed poll lands sooner than this after ``now``: jitter never makes a busy loop."""

DELIVERY_FIRST_RETRY = 30.0
DELIVERY_MAX_RETRY = 3600.0
DELIVERY_JITTER = 0.20


def _retry_after(value: float | None) -> float:
    """A usable Retry-After in seconds (0 when absent or nonsense), capped at 24 h."""
    if value is None or not math.isfinite(value) or value <= 0:
        return 0.0
    return min(float(value), MAX_RETRY_AFTER)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value (delta seconds or an HTTP date), capped at 24 h.

    None when absent or nonsense; a date in the past gives 0.
    """
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    if v.isascii() and v.isdigit():
        # any number of digits (RFC 9110: 1*DIGIT): past ten, it is past the cap, and
        # float(int(v)) overflows at 309 digits, int(v) refuses 4300
        digits = v.lstrip("0")
        if len(digits) > 10:
            return MAX_RETRY_AFTER
        return min(float(int(digits or "0")), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = math.ceil((when - now).total_seconds())
    return min(float(max(seconds, 0)), MAX_RETRY_AFTER)


def _jittered(base: float, amount: float, rng: random.Random) -> float:
    amount = abs(amount) if math.isfinite(amount) else 0.0
    return base + rng.uniform(-amount, amount) if amount else base


def next_poll_after_success(now: datetime, settings: FeedSettings, rng: random.Random) -> datetime:
    """The feed's next slot: ``interval`` later, uniformly within ± its jitter.

    Jitter keeps feeds that share a host (or a start time) from polling in step.
    """
    interval = settings.interval
    delay = _jittered(interval, settings.jitter.amount(interval), rng)
    return now + timedelta(seconds=max(MIN_DELAY, delay))


def latest_slot(last_poll: datetime, settings: FeedSettings) -> datetime:
    """The latest a successful poll at ``last_poll`` can set the next one under these
    settings (interval + jitter later, counted from up to a second after ``last_poll``,
    which is stored to the second). A stored next poll later than this was set under a
    longer interval: the config has changed since."""
    interval = settings.interval
    amount = settings.jitter.amount(interval)
    jitter = abs(amount) if math.isfinite(amount) else 0
    return last_poll + RESOLUTION + timedelta(seconds=interval + jitter)


def within_interval(
    stored: datetime,
    settings: FeedSettings,
    last_poll: datetime | None,
    *,
    backing_off: bool,
    now: datetime | None = None,
) -> datetime:
    """A stored next poll, or sooner when it was set under a longer interval than
    ``settings`` (the config changed since): no later than ``latest_slot``, so a shorter
    interval applies at once. A feed backing off (after errors, or a server's
    Retry-After) keeps its time.

    A last poll after ``now`` means the wall clock was set back since (an NTP step, a
    hardware clock kept in local time): the stored time moves back by as much, so the
    wait it set is kept instead of growing by the step."""
    if last_poll is not None and now is not None and last_poll > now:
        stored -= last_poll - now
        last_poll = now
    if last_poll is None or backing_off:
        return stored
    return min(stored, latest_slot(last_poll, settings))


def failure_backoff(interval: float, errors: int) -> float:
    """The un-jittered gap after ``errors`` consecutive failures (1 = the first one).

    interval x 2^errors (SPEC section 6), at most ``MAX_BACKOFF``, never below
    ``interval`` (a feed polled daily is not polled *more* often because it fails).
    """
    n = max(1, errors)
    if interval <= 0:
        return MIN_DELAY
    # 2**n overflows floats for absurd n; past 64 doublings the cap has long won.
    raw = interval * 2.0 ** min(n, 64)
    return max(interval, min(raw, MAX_BACKOFF))


def next_poll_after_failure(
    now: datetime,
    settings: FeedSettings,
    errors: int,
    rng: random.Random,
    retry_after: float | None = None,
) -> datetime:
    """When to try a failing feed again.

    ``errors`` is the number of consecutive failures including this one. The
    backoff is jittered like a normal slot (the jitter scales with the backoff
    when it is a ratio) but a backoff at the 6 h cap never lands past it. A
    ``Retry-After`` (seconds) longer than that wins, capped at 24 h, unjittered:
    the server asked us not to come back sooner.
    """
    interval = settings.interval
    base = failure_backoff(interval, errors)
    delay = _jittered(base, settings.jitter.amount(base), rng)
    if interval <= MAX_BACKOFF:
        delay = min(delay, MAX_BACKOFF)
    delay = max(MIN_DELAY, delay, _retry_after(retry_after))
    return now + timedelta(seconds=delay)


def spread_overdue(
    now: datetime,
    due: Sequence[tuple[str, datetime | None]],
    window: float = 60.0,
    *,
    rng: random.Random,
    per_feed: float = 1.0,
) -> dict[str, datetime]:
    """Start-up pacing: give every overdue feed its own slot instead of firing all at once.

    ``due`` is (feed name, stored next poll); ``None`` means never polled. Feeds
    whose time is past (or None) are ordered most overdue first (never polled
    before all) and each gets a random point in its own equal share of the
    spread, which is ``per_feed`` seconds per overdue feed but at most
    ``window``: a handful of feeds start within seconds, hundreds over a
    minute. Feeds not yet due keep their time. Every name in ``due`` is in the
    result.
    """
    result: dict[str, datetime] = {}
    overdue: list[tuple[int, datetime, str]] = []
    for name, when in due:
        if when is None:
            overdue.append((0, now, name))
        elif when <= now:
            overdue.append((1, when, name))
        else:
            result[name] = when
    if not overdue:
        return result
    overdue.sort()
    span = max(0.0, min(window, per_feed * len(overdue)))
    share = span / len(overdue)
    for i, (_, _, name) in enumerate(overdue):
        offset = (i + rng.random()) * share
        result[name] = now + timedelta(seconds=min(offset, span))
    return result


def delivery_retry_at(
    now: datetime,
    attempts: int,
    rng: random.Random,
    retry_after: float | None = None,
) -> datetime:
    """When to retry a delivery after its ``attempts``-th failed attempt (1 = the first).

    30 s, 60 s, 120 s, ... each ±20 %, never more than 1 h apart; a receiver's
    ``Retry-After`` longer than that wins (capped at 24 h).
    """
    n = max(1, attempts)
    base = min(DELIVERY_FIRST_RETRY * 2.0 ** min(n - 1, 64), DELIVERY_MAX_RETRY)
    delay = base * rng.uniform(1 - DELIVERY_JITTER, 1 + DELIVERY_JITTER)
    delay = min(delay, DELIVERY_MAX_RETRY)
    delay = max(delay, _retry_after(retry_after))
    return now + timedelta(seconds=delay)


def is_given_up(created_at: datetime, now: datetime, give_up_after: float) -> bool:
    """True once ``give_up_after`` seconds have passed since the alert was created.

    ``give_up_after <= 0`` means never give up (like the other ``0s`` = off keys).
    """
    if give_up_after <= 0:
        return False
    return (now - created_at).total_seconds() >= give_up_after
