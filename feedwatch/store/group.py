"""Group commit: the writes polls ask for in one turn of the event loop share a COMMIT.

Why: on SQLite a COMMIT (its WAL frames, now and then a checkpoint) cost more than
a poll's own writes, and a round of many feeds has many polls finishing together.
Each poll's write still runs in its own savepoint, so it is all or nothing by itself
and one failing write costs only its own poll. A write's caller resumes only after
the batch's COMMIT: an alert is durable before anyone can deliver it.

No timer: the first write of a turn schedules the flush with ``call_soon``, so the
writes of every task that runs before it join. An idle loop commits at once; a busy
one gathers more per COMMIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from feedwatch.store.base import Store

T = TypeVar("T")


class GroupCommit:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write`` (a call of one store write method) in the next batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((write, fut))
        return await fut

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
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
