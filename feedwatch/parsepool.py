"""Where feed bodies are parsed: worker processes, so parsing uses every core.

feedparser is pure Python. In a thread it holds the GIL, so a big body both
stalls the event loop (eating into other requests' timeouts) and leaves the
second core idle. `ParsePool` is a `concurrent.futures.Executor` the poller
hands each body to (`loop.run_in_executor`), backed by a process pool:

- ``parse_workers = "auto"`` (the default) starts one worker per usable CPU, at
  most 4; ``parse_workers = N`` starts N; ``parse_workers = 0`` parses in one
  thread of the main process (the old behaviour, the least memory).
- A `check` of many feeds forks body workers instead (feedwatch.bodyworkers), which
  also compare and store; this pool serves the daemon, small checks and dry runs.
- Workers start when two bodies wait at once (a run of 304s starts none), through
  a fork server that imported the parser once, so each worker costs a fork. They
  start in a thread of their own: the first fork waits for the fork server's
  imports (~0.1 s), which would stall the event loop; the bodies that wait for the
  workers meanwhile are handed over once they run.
- A worker that dies (a crash or the OOM killer on a hostile body) breaks a
  process pool for every parse in flight: the pool is replaced and each of those
  parses runs once more in a process of its own, so one bad feed costs only its
  own poll.
- Where processes cannot be used (no ``/dev/shm`` for the pool's semaphores, a
  sandbox without fork), it falls back to a thread and says so once in the log.
- Workers log nothing: what a parse has to say comes back in
  ``ParsedFeed.warnings``, which the poller logs (through secret redaction).
- Workers exit within a second or two of the main process, even a ``kill -9``ed
  one (they would otherwise live on, holding their memory and the fork server).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import (
    Executor,
    Future,
    InvalidStateError,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

log = structlog.get_logger("feedwatch.parsepool")

T = TypeVar("T")

MAX_AUTO_WORKERS = 4
# Imported once by the fork server, so a forked worker starts with them loaded.
_PRELOAD = ["feedwatch.parse", "feedwatch.partial"]


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(setting: int) -> int:
    """The number of worker processes for ``parse_workers`` (-1 = "auto")."""
    if setting < 0:
        return min(MAX_AUTO_WORKERS, usable_cpus())
    return setting


def _drop(_logger: Any, _name: str, _event: Any) -> Any:
    raise structlog.DropEvent


def _start_worker(main_pid: int) -> None:
    """A worker logs nothing (its stderr is the daemon's, unredacted), and exits with us.

    A pool's workers never notice a killed parent by themselves: each holds the
    write end of its own task pipe (and the fork server's "alive" pipe, so that
    stays up too). A thread checks once a second that the main process still runs.
    """
    structlog.configure(
        processors=[_drop],
        logger_factory=structlog.ReturnLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=True,
    )
    exit_with(main_pid)


def exit_with(pid: int) -> None:
    """Exit this process (at once, no clean-up) within a second or so of process ``pid``:
    a thread checks once a second that it still runs."""
    threading.Thread(
        target=_exit_with, args=(pid,), name="feedwatch-orphan-watch", daemon=True
    ).start()


def _exit_with(pid: int) -> None:
    while True:
        time.sleep(1.0)
        if not _alive(pid):
            os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # killed but not yet reaped by its parent: a zombie is dead
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


class ParsePool(Executor):
    """One parse thread, plus worker processes once two bodies wait at the same time.

    A `check` of a few feeds never pays for starting processes; a daemon or a
    big `check` starts them at the first overlap and keeps them.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedwatch-parse")
        self._thread_busy = 0
        self._pool: ProcessPoolExecutor | None = None
        self._starter: threading.Thread | None = None  # starting a pool, while set
        self._waiting: list[_Call[Any]] = []  # for the pool being started
        self._started_any = False
        self._broken_in_a_row = 0
        self._closed = False

    @property
    def uses_processes(self) -> bool:
        return self._pool is not None

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the parse pool is shut down")
            in_thread = self.workers == 0 or (self._pool is None and self._thread_busy == 0)
            if in_thread:
                self._thread_busy += 1
        if in_thread:
            return self._in_thread(fn, args, kwargs)
        outer: Future[T] = Future()
        self._submit(outer, fn, args, kwargs)
        return outer

    def _in_thread(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[T]:
        def done(_f: Future[T]) -> None:
            with self._lock:
                self._thread_busy -= 1

        f = self._thread.submit(fn, *args, **kwargs)
        f.add_done_callback(done)
        return f

    def _start(self) -> None:
        """Start a pool and its workers (in the starter thread), then hand it what waited."""
        pool: ProcessPoolExecutor | None = None
        error = ""
        try:
            pool = _new_pool(self.workers)
            for _ in range(self.workers):  # each submit forks one worker, here
                pool.submit(os.getpid)
        except Exception as exc:  # no /dev/shm, no fork, a sandbox...
            error = f"{type(exc).__name__}: {exc}"
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
        with self._lock:
            self._starter = None
            waiting, self._waiting = self._waiting, []
            closed = self._closed
            if pool is not None and not closed:
                self._pool = pool
                self._started_any = True
        if pool is not None and closed:
            pool.shutdown(wait=True, cancel_futures=True)
            _stop_fork_server()
        if error:
            self._no_processes(error)
        for call in waiting:
            if closed:
                _settle(call.outer, exc=RuntimeError("the parse pool is shut down"))
            else:
                self._submit(call.outer, call.fn, call.args, call.kwargs)

    def _no_processes(self, why: str) -> None:
        log.warning(
            "parse.no_processes", error=why, hint="parsing in one thread of the main process"
        )
        self.workers = 0

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            current = self._pool is broken
            if current:
                self._pool = None
                self._broken_in_a_row += 1
                if self._broken_in_a_row >= 3:  # workers cannot start here at all
                    self._no_processes("worker processes keep exiting at start")
        if current:
            log.warning(
                "parse.worker_died", hint="a parse worker exited; parses in flight run again"
            )
            broken.shutdown(wait=False, cancel_futures=True)

    def _submit(
        self,
        outer: Future[T],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        with self._lock:
            if self._closed:
                _settle(outer, exc=RuntimeError("the parse pool is shut down"))
                return
            pool = self._pool
            if pool is None and self.workers > 0:
                self._waiting.append(_Call(outer, fn, args, kwargs))
                if self._starter is None:
                    self._starter = threading.Thread(
                        target=self._start, name="feedwatch-parse-start", daemon=True
                    )
                    self._starter.start()
                return
            if pool is None:
                self._thread_busy += 1
        if pool is None:
            _chain(self._in_thread(fn, args, kwargs), outer)
            return
        try:
            inner = pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self._replace(pool)
            self._solo(outer, fn, args, kwargs)
            return

        def done(f: Future[T]) -> None:
            if outer.done():  # the caller cancelled it meanwhile
                return
            exc = None if f.cancelled() else f.exception()
            if isinstance(exc, BrokenProcessPool) and not self._closed:
                self._replace(pool)
                self._solo(outer, fn, args, kwargs)
                return
            if exc is None and not f.cancelled():
                self._broken_in_a_row = 0
            _chain(f, outer)

        inner.add_done_callback(done)

    def _solo(
        self, outer: Future[T], fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Once more, alone in a process of its own: which parse killed the pool is not
        known, and one that kills its worker again must take no other parse with it."""
        try:
            solo = _new_pool(1)
            inner = solo.submit(fn, *args, **kwargs)
        except Exception as exc:
            _settle(outer, exc=exc)
            return

        def done(f: Future[T]) -> None:
            _chain(f, outer)
            solo.shutdown(wait=False)

        inner.add_done_callback(done)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            starter = self._starter
        if starter is not None and wait:
            starter.join()  # it shuts down the pool it started
        self._thread.shutdown(wait=wait, cancel_futures=cancel_futures)
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait and self._started_any:
            _stop_fork_server()


@dataclass
class _Call(Generic[T]):
    outer: Future[T]
    fn: Callable[..., T]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _new_pool(workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_start_worker, initargs=(os.getpid(),)
    )


def _chain(src: Future[T], dst: Future[T]) -> None:
    def copy(f: Future[T]) -> None:
        if f.cancelled():
            dst.cancel()
        else:
            exc = f.exception()
            _settle(dst, exc=exc) if exc is not None else _settle(dst, result=f.result())

    src.add_done_callback(copy)


def _settle(f: Future[T], *, result: Any = None, exc: BaseException | None = None) -> None:
    try:
        if exc is not None:
            f.set_exception(exc)
        else:
            f.set_result(result)
    except InvalidStateError:  # the caller cancelled it
        pass


def _stop_fork_server() -> None:
    """Stop and reap the fork server, so its workers' CPU time is counted as ours.

    Without this the server outlives us (it exits when our end of its socket
    closes) and `wait4`/`time` on feedwatch miss the time spent parsing.
    ``_stop`` is CPython's own (3.8+), used by its tests; a missing one is harmless.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None:
        try:
            stop()
        except (OSError, TypeError):
            pass
