"""FeedScheduler over a real APScheduler on a real event loop."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from apscheduler.job import Job

from feedwatch.clock import StepWatch
from feedwatch.schedule import CatchUpInterval, FeedScheduler


def test_a_job_that_reschedules_itself_due_at_once_still_runs():
    """The daemon's poll job schedules the feed's next poll from inside itself; when that
    slot is already due (the poll ran long), APScheduler must not drop it as a second
    instance of a job still running (a dropped one-shot job is never polled again)."""
    runs: list[int] = []

    async def main() -> None:
        sched = FeedScheduler()
        sched.start()
        done = asyncio.Event()

        async def job() -> None:
            runs.append(1)
            if len(runs) < 3:
                sched.at("feed", datetime.now(timezone.utc) - timedelta(milliseconds=1), job)
            else:
                done.set()

        sched.at("feed", datetime.now(timezone.utc), job)
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
        finally:
            sched.shutdown()

    asyncio.run(main())
    assert len(runs) == 3


def test_a_cancelled_job_does_not_run():
    """``cancel`` removes APScheduler's job, not only our record of it: "a" was due
    before "b", so had it survived the cancel it would have run first."""
    ran: list[str] = []

    async def main() -> dict[str, datetime]:
        sched = FeedScheduler()
        sched.start()
        done = asyncio.Event()
        now = datetime.now(timezone.utc)

        async def job(name: str) -> None:
            ran.append(name)
            if name == "b":
                done.set()

        sched.at("a", now, job, "a")
        sched.at("b", now + timedelta(milliseconds=50), job, "b")
        sched.at("c", now + timedelta(hours=1), job, "c")
        sched.cancel("a")
        sched.cancel("missing")
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
            return sched.scheduled()
        finally:
            sched.shutdown()

    scheduled = asyncio.run(main())
    assert ran == ["b"]
    assert set(scheduled) == {"b", "c"}


def test_step_watch_tells_a_step_from_time_passing():
    """Both clocks moving together is time passing (a busy loop, a slow tick); the wall
    clock moving apart is a step, each reported once."""
    watch = StepWatch(wall=1_000_000.0, mono=50.0)
    assert watch.step(1_000_005.0, 55.0) == 0.0  # five seconds pass
    assert watch.step(1_000_605.0, 655.0) == 0.0  # ten minutes, a blocked loop
    assert watch.step(996_410.0, 660.0) == -4200.0  # set back 70 minutes, 5 s later
    assert watch.step(996_415.0, 665.0) == 0.0  # once
    assert watch.step(1_003_615.0, 670.0) == 7195.0  # a two-hour suspend: mono stood still


def test_an_interval_after_a_year_gap_is_one_step_not_a_walk():
    """After the wall clock stepped a year on, APScheduler 3.x walks every missed run of
    an interval job (``Job._get_run_times``), 6.3 million for a 5 s job, before it
    coalesces them into one: the daemon sat at 100 % CPU for 40 s, no watchdog ping.
    The daemon's trigger goes from a missed run to the last one due in one step."""
    trigger = CatchUpInterval(seconds=5, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc))
    first = datetime(2024, 1, 1, tzinfo=timezone.utc)
    now = first + timedelta(days=365, seconds=2.5)
    started = time.monotonic()
    last_due = trigger.get_next_fire_time(first, now)
    assert last_due == first + timedelta(days=365)  # the last run due, on the grid
    assert trigger.get_next_fire_time(last_due, now) == last_due + timedelta(seconds=5)
    # in time, the usual: the next run an interval on, exactly due or not yet due
    assert trigger.get_next_fire_time(first, first) == first + timedelta(seconds=5)
    assert trigger.get_next_fire_time(first, first + timedelta(seconds=5)) == first + timedelta(
        seconds=5
    )
    # APScheduler's own walk, as the scheduler runs it: two run times, not 6.3 million
    job = Job.__new__(Job)
    job.trigger, job.next_run_time = trigger, first
    assert job._get_run_times(now) == [first, first + timedelta(days=365)]
    assert time.monotonic() - started < 1.0


def test_an_interval_job_runs_at_once_after_the_clock_steps_a_year_on(monkeypatch):
    """The daemon's periodic jobs (deliveries, watchdog ping) over a real APScheduler
    whose wall clock steps a year on: the next run comes within the interval, not after
    a walk over 31 million missed runs of this 1 s job (about a minute, the loop held)."""
    step: list[timedelta] = []

    class Stepping(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            real = datetime.now(tz) + sum(step, timedelta())
            return cls.fromtimestamp(real.timestamp(), tz)

    import apscheduler.schedulers.base

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", Stepping)
    runs: list[float] = []

    async def main() -> float:
        sched = FeedScheduler()
        sched.start()
        ran = asyncio.Event()

        async def job() -> None:
            runs.append(time.monotonic())
            ran.set()

        sched.every("tick", 1.0, job)
        try:
            await asyncio.wait_for(ran.wait(), timeout=10)
            ran.clear()
            step.append(timedelta(days=365))
            stepped = time.monotonic()
            await asyncio.wait_for(ran.wait(), timeout=10)
            return time.monotonic() - stepped
        finally:
            sched.shutdown()

    assert asyncio.run(main()) < 5.0
