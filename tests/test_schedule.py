"""FeedScheduler over a real APScheduler on a real event loop."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

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
