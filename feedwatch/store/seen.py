"""How precisely an unchanged poll keeps entries' ``last_seen`` (pure).

A 304 (or a byte-identical body) sees the entries of the feed's last body again
(``entries.in_body``; those that left the feed are not seen, and age until
retention forgets them). Writing their ``last_seen`` on every such poll (and
reading them to decide) was most of a 304 poll's SQLite cost, so
``record_unchanged`` moves them all to ``now`` only on the first successful poll of
each ``seen_step``-long period of the clock (the hour, by default): when the feed's
previous success was before ``touch_cut(now)``. Every other unchanged poll reads and
writes no entry. So after an unchanged poll every entry of the body was seen at most
``seen_step`` ago, and entries touched together keep one shared ``last_seen`` (the
order ``diff`` and ``explain`` sort by is the one an exact touch gives). A poll that
reads a changed body records the exact time for the entries it writes (new or
changed); the entries it only sees again follow the same step, since rewriting every
row of the feed made its COMMIT cost several times its real changes.

Retention uses ``last_seen``: the step is kept under half the retention, so an entry
still in the feed is never older than the pruning cut. (``may_prune``: whether one
can be, when the retention is shorter than a step.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

SEEN_STEP = timedelta(hours=1)
_ZERO = timedelta(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def seen_step(now: datetime, prune_before: datetime | None) -> timedelta:
    """How far behind ``now`` an unchanged poll may leave ``last_seen``."""
    if prune_before is None:
        return SEEN_STEP
    return max(min(SEEN_STEP, (now - prune_before) / 2), _ZERO)


def touch_cut(now: datetime, step: timedelta) -> datetime:
    """The start of ``now``'s ``step``-long period (aligned to the epoch): a feed whose
    previous success came before it has its entries' ``last_seen`` moved to ``now``."""
    if step <= _ZERO:
        return now
    return now - (now - _EPOCH) % step


def may_prune(now: datetime, step: timedelta, prune_before: datetime | None) -> bool:
    """Whether an entry can be older than ``prune_before`` once every entry was seen
    at ``now - step`` or later."""
    return prune_before is not None and prune_before > now - step
