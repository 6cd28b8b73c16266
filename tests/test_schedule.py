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


def test_cancel_and_scheduled():
    async def main() -> dict[str, datetime]:
        sched = FeedScheduler()
        sched.start()
        later = datetime.now(timezone.utc) + timedelta(hours=1)

        async def job() -> None:
            raise AssertionError("cancelled job ran")

        sched.at("a", later, job)
        sched.at("b", later, job)
        sched.cancel("a")
        sched.cancel("missing")
        out = sched.scheduled()
        sched.shutdown()
        return out

    assert set(asyncio.run(main())) == {"b"}
