"""``python -m tests.fakewall`` is ``python -m feedwatch`` on a wall clock that steps.

The machine's clock cannot be set from a test, so this moves the wall clock the
daemon and APScheduler read: once the file named by ``FAKEWALL_FILE`` exists, the
clock is off by the seconds written in it (``-3600``: set back an hour, as an NTP
step after boot would). The monotonic clock is left alone, as a real step leaves it.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, tzinfo

_FILE = os.environ.get("FAKEWALL_FILE", "")
_step: list[float] = []  # the step, once its file was read


def _offset() -> float:
    if not _step and _FILE and os.path.exists(_FILE):
        with open(_FILE) as f:
            text = f.read().strip()
        if text:  # not a file caught half-written
            _step.append(float(text))
    return _step[0] if _step else 0.0


class SteppingDatetime(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> SteppingDatetime:  # type: ignore[override]
        real = datetime.now(tz) + timedelta(seconds=_offset())
        return (
            cls.fromtimestamp(real.timestamp(), tz) if tz else cls.fromtimestamp(real.timestamp())
        )


def main() -> int:
    import apscheduler.executors.base
    import apscheduler.schedulers.base
    import apscheduler.triggers.date
    import apscheduler.triggers.interval

    import feedwatch.clock
    import feedwatch.store.sqlite
    from feedwatch.cli import main as feedwatch_main

    for module in (
        apscheduler.executors.base,
        apscheduler.schedulers.base,
        apscheduler.triggers.date,
        apscheduler.triggers.interval,
        feedwatch.clock,
        feedwatch.store.sqlite,
    ):
        module.datetime = SteppingDatetime  # type: ignore[attr-defined]
    return feedwatch_main()


if __name__ == "__main__":
    sys.exit(main())
