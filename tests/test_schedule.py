"""FeedScheduler over a real APScheduler on a real event loop."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from feedwatch.clock import StepWatch
from feedwatch.schedule import FeedScheduler


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
