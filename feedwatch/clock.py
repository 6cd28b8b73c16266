"""The one place that reads the wall clock; everything else takes `now` as a value.

And where a step of the wall clock is noticed (``StepWatch``), for what waits on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

Clock = Callable[[], datetime]

RESOLUTION = timedelta(seconds=1)
"""``system_clock`` reads to the second: the real time is up to this much later."""


def system_clock() -> datetime:
    """Aware UTC, to the second (alert times are to the second)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def exact_clock() -> datetime:
    """Aware UTC, to the microsecond."""
    return datetime.now(timezone.utc)


def wait_clock(clock: Clock) -> Clock:
    """The clock a wait counts from (a next poll, a Retry-After's end). ``system_clock``
    is up to a second behind the real time, and a wait counted from it ends up to a
    second early (Retry-After: 3 honoured after 2.05 s): its exact reading instead. Any
    other clock (a test's) is exact as it is."""
    return exact_clock if clock is system_clock else clock


class StepWatch:
    """Notices the wall clock moving apart from the monotonic one: an NTP step, ``date -s``,
    a hardware clock kept in local time corrected after boot, a resume from suspend (the
    monotonic clock does not count the sleep).

    APScheduler 3.x waits until a wall-clock time: after the clock is set back an hour,
    every job waits that hour more, the systemd watchdog's ping among them. The daemon
    reschedules when ``step`` says the clock moved."""

    def __init__(self, wall: float, mono: float) -> None:
        self._wall, self._mono = wall, mono

    def step(self, wall: float, mono: float) -> float:
        """Seconds the wall clock moved beyond the monotonic one since the last call
        (negative: it was set back), given both clocks' readings now."""
        moved = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return moved
