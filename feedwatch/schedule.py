"""The only APScheduler import: fire the job of the feed that is due.

When a feed is next polled is decided by `feedwatch.pacing` and stored in the
state (so a restart, `check` and the daemon read the same truth); APScheduler
only fires a one-shot job at that time, and the job schedules the next one.
No APScheduler job store is used: nothing pickled lives outside our state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

_NO_LIMIT = 2**31 - 1


class CatchUpInterval(IntervalTrigger):
    """An interval whose next run after a missed one is the last run due, at once.

    APScheduler 3.x lists every missed run of an interval job (``Job._get_run_times``
    asks the trigger for one run after another up to now) and only then keeps the last
    (``coalesce``; ``misfire_grace_time`` is looked at after the list, too): after the
    wall clock stepped a year on (an NTP step, a resume from suspend), 6.3 million
    runs of a 5 s job, the daemon's event loop held for 40 s, its watchdog ping with it.
    Here the run after a missed one is the last one due on the same grid: two run
    times however far the clock moved, which ``coalesce`` runs once. (Only for jobs
    with ``coalesce=True``: a job that runs each missed run would run two.)"""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None:
            missed = (now - previous_fire_time) // self.interval
            if missed > 1:  # runs due since: the last of them, not the next
                previous_fire_time += self.interval * (missed - 1)
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        return fire


def _feed_job(name: str) -> str:
    """Feeds and upkeep jobs share APScheduler's id space: a feed named
    "deliveries" must not replace (or be replaced by) the delivery tick."""
    return "feed:" + name


class FeedScheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._feeds: dict[str, datetime] = {}

    def start(self) -> None:
        """Must be called with the event loop running."""
        self._scheduler.start()

    def at(
        self, feed: str, when: datetime, func: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        """Run ``func(*args)`` once at ``when`` (now if past), replacing the feed's job."""
        self._feeds[feed] = when
        self._scheduler.add_job(
            func,
            "date",
            run_date=when,
            args=args,
            id=_feed_job(feed),
            replace_existing=True,
            misfire_grace_time=None,  # late is better than never: the job reschedules itself
            coalesce=True,
            # The job schedules its successor from inside itself; if that slot is already
            # due, APScheduler would count the still-running job as an instance, skip the
            # new one and drop it (a one-shot job): the feed would never be polled again.
            # The daemon's own set of feeds being polled keeps two polls from overlapping.
            max_instances=_NO_LIMIT,
        )

    def every(self, job: str, seconds: float, func: Callable[..., Awaitable[Any]]) -> None:
        self._scheduler.add_job(
            func,
            CatchUpInterval(seconds=seconds, timezone=timezone.utc),
            id="upkeep:" + job,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
        )

    def cancel(self, feed: str) -> None:
        self._feeds.pop(feed, None)
        if self._scheduler.get_job(_feed_job(feed)) is not None:
            self._scheduler.remove_job(_feed_job(feed))

    def scheduled(self) -> dict[str, datetime]:
        return dict(self._feeds)

    def pause(self) -> None:
        """No job starts from now on; the running ones go on. (APScheduler's
        ``shutdown`` cancels the running coroutine jobs at once: a stop calls this
        first, lets them end, then ``shutdown``.)"""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        """Stop, cancelling any job still running."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
