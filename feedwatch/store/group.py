"""Group commit: the writes polls ask for in one turn of the event loop share a COMMIT.

Why: on SQLite a COMMIT (its WAL frames, now and then a checkpoint) cost more than
a poll's own writes, and a round of many feeds has many polls finishing together.
Each poll's write still runs in its own savepoint, so it is all or nothing by itself
and one failing write costs only its own poll. A write's caller resumes only after
the batch's COMMIT: an alert is durable before anyone can deliver it.

The first write schedules the flush ``window`` seconds later (or, with no window,
at the end of this turn of the loop: ``call_soon``); every write asked for before
it joins, up to ``most`` writes, which flush at once. Polls answered together (a
round at 0 ms of latency) share a COMMIT with no window; polls answered one by one
need the window to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from feedwatch.store.base import Store

T = TypeVar("T")


class GroupCommit:
    def __init__(self, store: Store, *, window: float = 0.0, most: int = 256) -> None:
        self.store = store
        self.window = window
        self.most = most
        self._queue: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._timer: asyncio.Handle | None = None

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write`` (a call of one store write method) in the next batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append((write, fut))
        if len(self._queue) >= self.most:
            self._flush()
        elif self._timer is None:
            self._timer = (
                loop.call_later(self.window, self._flush)
                if self.window > 0
                else loop.call_soon(self._flush)
            )
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue, self._queue = self._queue, []
        if not queue:
            return
        done: list[tuple[asyncio.Future[Any], Any]] = []
        failed: list[tuple[asyncio.Future[Any], BaseException]] = []
        try:
            with self.store.batch():
                for write, fut in queue:
                    try:
                        done.append((fut, write()))
                    except Exception as exc:  # its savepoint is rolled back
                        failed.append((fut, exc))
        except Exception as exc:  # the COMMIT itself: none of the batch was kept
            failed.extend((fut, exc) for fut, _ in done)
            done = []
        for fut, result in done:
            if not fut.done():
                fut.set_result(result)
        for fut, error in failed:
            if not fut.done():
                fut.set_exception(error)
