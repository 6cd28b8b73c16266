"""When a feed has gone quiet or broken for `stale_after`: one notice, and one when it recovers.

Pure: the feed's record and `now` in, at most one notice out. Never a notice
per failed poll: `stale_notified` in the state remembers that one was sent.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from feedwatch.alert import format_time
from feedwatch.redact import redact
from feedwatch.store.base import FeedRecord


def _ago(seconds: float) -> str:
    """A duration as a person says it: ``45 seconds``, ``1 minute``, ``2 hours``,
    ``1 hour 30 minutes``, ``1 day 12 hours`` (its two largest units, rounded down)."""
    rest = max(0, int(seconds))
    if rest < 60:
        return _count(rest, "second")
    parts: list[tuple[int, str]] = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        n, rest = divmod(rest, size)
        if n or parts:
            parts.append((n, unit))
    shown = [_count(n, unit) for n, unit in parts[:2] if n]
    return " ".join(shown)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


AHEAD_TOLERANCE = timedelta(minutes=1)
"""A stored time later than now by more than this was written by a clock that was ahead
(a `check` run before NTP set the clock, a host's clock off): not a few seconds
between two hosts sharing a state."""

_TIMES = ("last_success", "last_new_entry")


def ahead_of_clock(record: FeedRecord, now: datetime) -> tuple[str, ...]:
    """The names of the record's times (of those staleness counts from) that are later
    than ``now`` by more than ``AHEAD_TOLERANCE``."""
    limit = now + AHEAD_TOLERANCE
    return tuple(f for f in _TIMES if (t := getattr(record, f)) is not None and t > limit)


def as_of(record: FeedRecord, now: datetime) -> FeedRecord:
    """The record with its times a clock ahead wrote (``ahead_of_clock``) read as ``now``:
    stored a year ahead, they would keep the feed from looking stale for that year.
    (The poll stores this, so the feed is stale ``stale_after`` after the correction.)"""
    ahead = ahead_of_clock(record, now)
    if not ahead:
        return record
    return replace(
        record,
        last_success=now if "last_success" in ahead else record.last_success,
        last_new_entry=now if "last_new_entry" in ahead else record.last_new_entry,
    )


def stale_notice(
    record: FeedRecord, now: datetime, stale_after: float
) -> tuple[str, str, str] | None:
    """(kind, message, key) for a `stale` or `recovered` notice that is due, else None."""
    if stale_after <= 0:
        return None
    record = as_of(record, now)
    # never a successful poll: the state holds its first (failed) poll's time as the
    # time since which it brought nothing new (store.base.QUIET_SINCE_FAILED)
    failing_since = record.last_success or record.last_new_entry
    if failing_since is None:
        return None
    no_success = (now - failing_since).total_seconds()
    quiet_since = record.last_new_entry or failing_since
    no_new = (now - quiet_since).total_seconds()
    stale = no_success > stale_after or no_new > stale_after
    if stale and not record.stale_notified:
        if record.last_success is None:
            why = f"no successful poll since its first, {_ago(no_success)} ago"
            if record.last_error:
                why += f" (last error: {redact(record.last_error)})"
        elif no_success > stale_after:
            why = f"no successful poll for {_ago(no_success)}"
            if record.last_error:
                # masked when stored, and again here for a state an older version wrote
                why += f" (last error: {redact(record.last_error)})"
        else:
            why = f"no new entry for {_ago(no_new)}"
        key = f"{format_time(record.last_success)}|{format_time(record.last_new_entry)}"
        return "stale", f"feed {record.name!r} looks stale: {why}", key
    if not stale and record.stale_notified:
        return "recovered", f"feed {record.name!r} has recovered", f"{format_time(now)}"
    return None


def as_recorded(
    record: FeedRecord,
    now: datetime,
    *,
    ok: bool,
    error: str | None = None,
    new_entry: bool = False,
    title: str | None = None,
) -> FeedRecord:
    """The record a poll leaves in the state (``ok``: it succeeded, with ``title``; else
    it failed with ``error``): a dry run writes nothing, yet judges staleness as the real
    run does, after its poll is recorded."""
    if not ok:
        quiet = record.last_new_entry
        if record.last_success is None and quiet is None:
            quiet = now  # its first poll (store.base.QUIET_SINCE_FAILED)
        return replace(
            record,
            last_poll=now,
            errors=record.errors + 1,
            last_error=error,
            last_new_entry=quiet,
        )
    return replace(
        record,
        title=title,
        last_poll=now,
        last_success=now,
        errors=0,
        last_error=None,
        last_new_entry=now if new_entry else record.last_new_entry,
    )
