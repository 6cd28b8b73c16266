"""The one place that reads the wall clock; everything else takes `now` as a value."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Aware UTC, to the second (alert times are to the second)."""
    return datetime.now(timezone.utc).replace(microsecond=0)
