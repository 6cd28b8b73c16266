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

Retention uses ``last_seen``, of the entries that left the body only: an entry of
the feed's last body is never pruned (its ``last_seen`` may be up to a step old, and
the step it was kept to may be that of a longer retention, before the retention was
lowered). When a poll finds an entry gone, its ``last_seen`` moves up to the feed's
previous success, the body it was last in, so it is forgotten ``retention`` after
that. (The step is still kept under half the retention: a feed kept briefly shows
its entries' ``last_seen`` as closely.)
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
