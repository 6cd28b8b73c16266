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

``pending`` (the poller's count of polls in progress) says how many writes can
still come: once every one of them has asked, nothing more can join and the batch
goes at the end of this turn. A poll alone (a daemon whose feeds fall due apart)
never waits for the window: waiting would buy no sharing, and on this machine a
10 ms timed wait cost ~0.2 ms of CPU of its own (benchmarks/state_growth.py, polls
one at a time: a 304 poll 0.71 -> 0.47 ms of CPU, 10.9 -> 0.55 ms of wall). Only a
write re-reads ``pending``: a poll that ends without writing (a failure) leaves the
batch to its timer, so a batch can wait at most the window for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from feedwatch.store.base import Store

T = TypeVar("T")


class GroupCommit:
    def __init__(
        self,
        store: Store,
        *,
        window: float = 0.0,
        most: int = 256,
        pending: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.window = window
        self.most = most
        self.pending = pending  # writes that may still come, the queued ones included
        self._queue: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        # the flush to come: a TimerHandle for the window, a Handle for the end of this turn
        self._timer: asyncio.Handle | None = None

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write`` (a call of one store write method) in the next batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append((write, fut))
        n = len(self._queue)
        if n >= self.most:
            self._flush()
        elif self.window > 0 and (self.pending is None or self.pending() > n):
            if self._timer is None:
                self._timer = loop.call_later(self.window, self._flush)
        elif self._timer is None or isinstance(self._timer, asyncio.TimerHandle):
            # nothing more can join: at the end of this turn, not after the window
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_soon(self._flush)
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
        except Exception as exc:  # BEGIN (the lock held elsewhere) or COMMIT: none kept
            # every write not failed on its own fails with it: one never answered would
            # hold its poll (and a `check`) for ever, silently
            own = {id(fut) for fut, _ in failed}
            failed.extend((fut, exc) for _, fut in queue if id(fut) not in own)
            done = []
        for fut, result in done:
            if not fut.done():
                fut.set_result(result)
        for fut, error in failed:
            if not fut.done():
                fut.set_exception(error)
