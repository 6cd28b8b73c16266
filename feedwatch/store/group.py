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
write re-reads ``pending``: a poll that ends without writing leaves the batch to its
timer, so a batch can wait at most the window for nothing.

Besides a poll's commit, these state writes made on the event loop go through one
(and so wait for a state locked elsewhere with the loop running): a failed poll's
record and a stale notice (the poller's), the outbox's marks and the note on a send a
stop cut short (the dispatcher's own, no window), the daemon's stored next-poll times
and moved retries (the poller's), each transaction of the hourly upkeep's prune (one
of its own per upkeep). Body workers and CLI commands, off the loop, write directly.

Another process holding SQLite's write lock (an admin's `sqlite3` shell in a
transaction, a long VACUUM, a cron `check`): the batch's BEGIN waited out the busy
timeout (10 s) on the event loop's thread, so no other feed was fetched, no signal
handled and no watchdog ping sent meanwhile. Now the BEGIN gives up at once
(``batch(wait=False)``: ``StateBusy``, nothing done) and the same batch is tried again
``RETRY_FIRST`` later, each wait twice the one before up to ``RETRY_MOST``, the loop
running between tries. Writes asked for meanwhile queue behind it and go with it, in
order. A write still waiting ``busy_limit`` (the busy timeout) after its first try
fails with the busy error, as the whole batch did before. A write whose caller is gone
(a poll cancelled by a stop) is dropped, never done: an abandoned poll commits nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from feedwatch.store.base import StateBusy, Store
from feedwatch.store.sqlite import BUSY_TIMEOUT_MS

T = TypeVar("T")

RETRY_FIRST = 0.02  # seconds before a batch that found the state locked is tried again
RETRY_MOST = 0.5  # the longest wait between two tries


class _Write:
    __slots__ = ("call", "deadline", "fut")

    def __init__(self, call: Callable[[], Any], fut: asyncio.Future[Any]) -> None:
        self.call = call
        self.fut = fut
        self.deadline: float | None = None  # (loop time) set at its first try


class GroupCommit:
    def __init__(
        self,
        store: Store,
        *,
        window: float = 0.0,
        most: int = 256,
        pending: Callable[[], int] | None = None,
        busy_limit: float = BUSY_TIMEOUT_MS / 1000,
    ) -> None:
        self.store = store
        self.window = window
        self.most = most
        self.pending = pending  # writes that may still come, the queued ones included
        self.busy_limit = busy_limit  # how long a write waits for a state locked elsewhere
        self._queue: list[_Write] = []
        # the flush to come: a TimerHandle for the window, a Handle for the end of this turn
        self._timer: asyncio.Handle | None = None
        # the wait before the next try while the state is locked elsewhere (None: it is not)
        self._retry: float | None = None

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write`` (a call of one store write method) in the next batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Write(write, fut))
        n = len(self._queue)
        if self._retry is not None:
            pass  # a batch waits for the lock: this one goes with it (or after), in order
        elif n >= self.most:
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
        # a write whose caller is gone (cancelled: a stop) is not done
        queue = [w for w in self._queue if not w.fut.done()]
        queue, self._queue = queue[: self.most], queue[self.most :]
        if not queue:
            self._retry = None
            return
        loop = asyncio.get_running_loop()
        tried = loop.time()
        begun = False
        done: list[tuple[asyncio.Future[Any], Any]] = []
        failed: list[tuple[asyncio.Future[Any], BaseException]] = []
        try:
            with self.store.batch(wait=False):
                begun = True
                for w in queue:
                    try:
                        done.append((w.fut, w.call()))
                    except Exception as exc:  # its savepoint is rolled back
                        failed.append((w.fut, exc))
        except Exception as exc:  # BEGIN (the lock held elsewhere) or COMMIT: none kept
            if not begun and isinstance(exc, StateBusy):
                self._busy(queue, exc, tried)
                return
            # every write not failed on its own fails with it: one never answered would
            # hold its poll (and a `check`) for ever, silently
            own = {id(fut) for fut, _ in failed}
            failed.extend((w.fut, exc) for w in queue if id(w.fut) not in own)
            done = []
        self._retry = None
        if self._queue:  # more than ``most`` queued while the state was locked
            self._timer = loop.call_soon(self._flush)
        for fut, result in done:
            if not fut.done():
                fut.set_result(result)
        for fut, error in failed:
            if not fut.done():
                fut.set_exception(error)

    def _busy(self, queue: list[_Write], exc: StateBusy, tried: float) -> None:
        """The batch could not begin (the state locked elsewhere): nothing of it was done.
        It goes again later, ahead of the writes queued since; a write that has waited
        ``busy_limit`` fails with ``exc``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting: list[_Write] = []
        for w in queue:
            if w.deadline is None:
                w.deadline = tried + self.busy_limit
            if now >= w.deadline:
                if not w.fut.done():
                    w.fut.set_exception(exc)
            else:
                waiting.append(w)
        self._queue[:0] = waiting
        if not self._queue:
            self._retry = None
            return
        self._retry = RETRY_FIRST if self._retry is None else min(self._retry * 2, RETRY_MOST)
        # the last try at the first deadline, not up to RETRY_MOST after it
        first = min((w.deadline for w in waiting if w.deadline is not None), default=now + 1)
        self._timer = loop.call_later(max(0.0, min(self._retry, first - now)), self._flush)
