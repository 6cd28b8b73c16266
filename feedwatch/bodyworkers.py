"""Where the bodies of a big `check` are handled: forked processes that parse, compare
and store them, while the main process fetches.

With a pool of parse workers the main process still compared and stored every changed
body on its one core, and the pool cost a fork server, a resource tracker and two threads
to ship bodies and parsed entries between processes. Here the main process fetches every
feed (one event loop, the whole ``concurrency``) and answers the 304s itself; each body
goes to a worker with room (while this process fetches, one per other core, unless
bodies pile up: ``BodyWorkers._pick``) with what its poll knew before the fetch (``poll.BodyJob``),
and the worker does the rest of the poll exactly as the main process would
(``Poller.handle_body``): parse (only the changed items, feedwatch.partial), compare with
the state, queue the alerts and commit, through its own connection to the state (SQLite
serialises the writes), and sends back the poll's report.

- Forked once, before the check's event loop or any thread exists (``BodyWorkers`` is
  made in plain code, after the imports): a worker costs a fork and sits idle through a
  run of 304s; at its first body it imports the parsing stack (feedparser; regex for a
  feed with rules: the main process never needs them) and opens the state. (Importing
  it at the fork, while the main process starts its first requests, was ~1.5% quicker
  on a changed round but cost every round of 304s ~70 ms of CPU: docs/performance.md.)
- A worker handles one body at a time (the next waits in its pipe, so it never waits
  for the main process), so a worker that dies (a crash, the OOM killer, a kill) names
  the body it died on: that poll fails ("its body worker died"), what it committed
  stands, the next check polls it again; the bodies waiting for it go to another. A
  dead worker is not replaced (nothing forks once threads run); with none left, bodies
  are handled in the main process, as without workers.
- Workers log through the main process's configuration (inherited: the same redaction,
  the same stream) and exit when their task pipe closes, or within a second or two of a
  main process that was killed. ``close`` reaps them, so their CPU time counts as ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import pickle
import signal
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from feedwatch.parsepool import exit_with, usable_cpus
from feedwatch.poll import BodyJob, Poller, PollReport

log = structlog.get_logger("feedwatch.bodyworkers")

_HEADER = struct.Struct("<Q")
_STARTED = (1 << 64) - 1  # a header alone: "I have read a body and work on it"

IN_FLIGHT = 2
"""Bodies handed to a worker at once: it handles one, the next waits in its pipe."""

PIPE_SIZE = 1 << 20
"""A worker's task pipe, where Linux allows (its default is 64 KiB): a body waits there
whole rather than partly in this process."""

MIN_FEEDS = 8
"""A check of fewer feeds keeps the parse pool (which starts processes only when two
bodies wait at once)."""

SPILL_SECONDS = 0.25
"""While the main process fetches, a worker beyond those the other cores can hold takes
bodies only while those waiting would keep the busy ones at work longer than this (by
the CPU time bodies took so far)."""

_COST_WEIGHT = 0.2
"""How much each body's time moves the running estimate of a body's time."""


@dataclass
class _Worker:
    pid: int
    tasks: int  # write end: pickled jobs
    results: int  # read end, non-blocking: pickled (ok, report or exception)
    buf: bytearray = field(default_factory=bytearray)  # results read, not yet whole
    out: bytearray = field(default_factory=bytearray)  # jobs not yet written
    started: int = 0  # jobs it said it read and has not answered (0 or 1)
    # jobs sent, oldest first: the worker handles the first, the next waits in its pipe
    jobs: deque[tuple[BodyJob, asyncio.Future[PollReport | None]]] = field(default_factory=deque)


class BodyWorkers:
    """``count`` forked workers, each building its poller with ``make_poller`` (in the
    worker, at its first body). Made through ``start``, with no event loop running."""

    @classmethod
    def start(cls, count: int, make_poller: Callable[[], Poller]) -> BodyWorkers | None:
        """The workers, or None where forking is not safe or possible: another thread
        runs (a fork copies only this one, and a lock that thread held, stdio's or the
        logger's, would never be released in a worker), no ``os.fork``, or no fork
        succeeded."""
        if threading.active_count() > 1 or not hasattr(os, "fork"):
            return None
        workers = cls(count, make_poller)
        return workers if workers.alive else None

    def __init__(self, count: int, make_poller: Callable[[], Poller]) -> None:
        self._workers: list[_Worker] = []
        self._waiting: deque[tuple[BodyJob, asyncio.Future[PollReport | None]]] = deque()
        self._cost = 0.0  # CPU seconds a body took, a running estimate
        self._beside = max(1, usable_cpus() - 1)  # workers the cores hold beside this one
        # whether this process is busy fetching (the check sets it): while it is not,
        # every worker takes bodies
        self.fetching: Callable[[], bool] = lambda: True
        self._loop: asyncio.AbstractEventLoop | None = None
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or a worker would print what is buffered again
        # Everything alive now (the imports, the config) stays alive: out of the
        # collector's sight, so no collection, here or in a worker, writes to those
        # pages (each write would copy a shared page) or walks them again. A round of
        # 304s cost 0.05 ms more a poll without this; with it, less than before forking.
        gc.freeze()
        for _ in range(count):
            tasks_r, tasks_w = os.pipe()
            results_r, results_w = os.pipe()
            try:
                pid = os.fork()
            except OSError as exc:
                for fd in (tasks_r, tasks_w, results_r, results_w):
                    os.close(fd)
                log.warning("check.no_body_workers", error=str(exc), hint="bodies handled here")
                break
            if pid == 0:
                os.close(tasks_w)
                os.close(results_r)
                for w in self._workers:
                    os.close(w.tasks)
                    os.close(w.results)
                _serve(tasks_r, results_w, make_poller, parent)  # never returns
            os.close(tasks_r)
            os.close(results_w)
            os.set_blocking(results_r, False)
            os.set_blocking(tasks_w, False)
            with contextlib.suppress(OSError, AttributeError):  # Linux: room for a body
                fcntl.fcntl(tasks_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            self._workers.append(_Worker(pid, tasks_w, results_r))

    @property
    def alive(self) -> int:
        return len(self._workers)

    async def run(self, job: BodyJob) -> PollReport | None:
        """The poll's report from a worker; None when no worker is left to take it."""
        if not self._workers:
            return None
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            for w in self._workers:
                loop.add_reader(w.results, self._readable, w)
        fut: asyncio.Future[PollReport | None] = loop.create_future()
        self._waiting.append((job, fut))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        """Hand waiting bodies to the least busy workers, up to ``IN_FLIGHT`` each (the
        next one waits in the pipe, so a worker never waits for this loop); with no
        worker left, give them back."""
        while self._waiting and self._workers:
            w = self._pick()
            if w is None:
                break
            job, fut = self._waiting.popleft()
            if fut.done():  # cancelled while it waited
                continue
            data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
            w.jobs.append((job, fut))
            w.out += _HEADER.pack(len(data))
            w.out += data
            self._flush(w)
        if not self._workers:
            while self._waiting:
                _job, fut = self._waiting.popleft()
                if not fut.done():
                    fut.set_result(None)

    def _pick(self) -> _Worker | None:
        """The least busy worker with room among those the backlog calls for. While this
        process fetches, as many as the other cores hold (one on two cores) while they
        keep up, and one more for each ``SPILL_SECONDS`` of waiting bodies; while it
        does not (every fetch waits for a body's place, or none is left), all of them.
        (Two busy workers beside this busy process on two cores cost a changed round
        ~8-12% more CPU than one worker; with bodies that take long, as in a first
        poll, or this process idle, the second halves the wall time:
        docs/performance.md.)"""
        if self.fetching():
            wanted = self._beside + int(len(self._waiting) * self._cost / SPILL_SECONDS)
        else:
            wanted = len(self._workers)
        ready = [w for w in self._workers[:wanted] if len(w.jobs) < IN_FLIGHT]
        return min(ready, key=lambda x: len(x.jobs)) if ready else None

    def _flush(self, w: _Worker) -> None:
        """Write what fits in the pipe now; the rest when it drains (never blocks)."""
        assert self._loop is not None
        try:
            while w.out:
                n = os.write(w.tasks, w.out)
                del w.out[:n]
        except BlockingIOError:
            pass
        except OSError:  # it died: its reader sees the end and says so
            w.out.clear()
        if w.out:
            self._loop.add_writer(w.tasks, self._flush, w)
        else:
            self._loop.remove_writer(w.tasks)

    def _readable(self, w: _Worker) -> None:
        ended = False
        while True:
            try:
                chunk = os.read(w.results, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                ended = True  # what it sent before its end still counts
                break
            w.buf += chunk
        while len(w.buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(w.buf)
            if size == _STARTED:
                w.started += 1
                del w.buf[: _HEADER.size]
                continue
            if len(w.buf) < _HEADER.size + size:
                break
            w.started -= 1
            ok, value, cpu = pickle.loads(w.buf[_HEADER.size : _HEADER.size + size])
            if cpu is not None:
                self._cost += (cpu - self._cost) * _COST_WEIGHT
            del w.buf[: _HEADER.size + size]
            _job, fut = w.jobs.popleft()
            if not fut.done():  # not cancelled meanwhile
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
        if ended:
            self._died(w)
        self._dispatch()

    def _died(self, w: _Worker) -> None:
        assert self._loop is not None
        self._loop.remove_reader(w.results)
        self._loop.remove_writer(w.tasks)
        why = _reap(w)
        self._workers.remove(w)
        log.warning("check.body_worker_died", pid=w.pid, why=why, left=len(self._workers))
        if w.jobs and w.started:
            # it had read the oldest unanswered body (it reads the next only once it
            # has answered): that is the one it died on; the others go to another
            job, fut = w.jobs.popleft()
            if not fut.done():
                fut.set_result(
                    PollReport(
                        feed=job.feed,
                        result="error",
                        http_status=job.fetched.status,
                        error=f"its body worker died ({why}) while handling it",
                    )
                )
        self._waiting.extendleft(reversed(w.jobs))
        w.jobs.clear()

    def stop(self) -> None:
        """Close the workers' task pipes: each ends once it has answered what it holds,
        moving the state's log into the database as it goes (``Store.checkpoint``)."""
        if self._loop is not None and not self._loop.is_closed():
            for w in self._workers:
                if w.results >= 0:
                    self._loop.remove_reader(w.results)
                if w.tasks >= 0:
                    self._loop.remove_writer(w.tasks)
        for w in self._workers:
            _close_tasks(w)

    def close(self) -> None:
        """``stop``, and wait for the workers' ends (so their CPU time counts as ours)."""
        self.stop()
        for w in list(self._workers):
            _reap(w)
        self._workers.clear()


def _close_tasks(w: _Worker) -> None:
    # once only: the number may belong to another file by a second time
    if w.tasks >= 0:
        with contextlib.suppress(OSError):
            os.close(w.tasks)
        w.tasks = -1


def _reap(w: _Worker) -> str:
    """Wait for the worker's end; how it ended."""
    _close_tasks(w)
    if w.results >= 0:
        with contextlib.suppress(OSError):
            os.close(w.results)
        w.results = -1
    try:
        status = os.waitstatus_to_exitcode(os.waitpid(w.pid, 0)[1])
    except ChildProcessError:
        return "already reaped"
    if status < 0:
        return (
            f"killed by {signal.Signals(-status).name}"
            if -status in signal.valid_signals()
            else f"signal {-status}"
        )
    return f"exit status {status}"


def _serve(tasks: int, results: int, make_poller: Callable[[], Poller], parent: int) -> None:
    code = 0
    poller: Poller | None = None
    # a stop signal to the whole group (Ctrl-C, `timeout`, systemd) is the main
    # process's to act on (feedwatch.stopsignals): a worker ends its body, then
    # ends when its task pipe closes (or soon after a main process that died)
    signal.set_wakeup_fd(-1)  # (the main process's, inherited)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        exit_with(parent)
        while True:
            header = _read_exact(tasks, _HEADER.size)
            if header is None:
                break  # the main process is done with us
            (size,) = _HEADER.unpack(header)
            data = _read_exact(tasks, size)
            if data is None:
                break
            _write_all(results, _HEADER.pack(_STARTED))  # this one is ours now
            # what the body took, but the first (which imports the parsing stack): the
            # main process's estimate of the next ones
            first = poller is None
            began = time.process_time()
            job = pickle.loads(data)
            ok: bool
            value: Any
            try:
                if poller is None:
                    poller = make_poller()
                ok, value = True, poller.handle_body(job)
            except Exception as exc:
                ok, value = False, _picklable(exc)
            cpu = None if first else time.process_time() - began
            try:
                reply = pickle.dumps((ok, value, cpu), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                reply = pickle.dumps(
                    (False, _picklable(exc), cpu), protocol=pickle.HIGHEST_PROTOCOL
                )
            _write_all(results, _HEADER.pack(len(reply)) + reply)
    except BaseException as exc:
        code = 1
        with contextlib.suppress(BaseException):
            log.error("check.body_worker_failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        if poller is not None:
            with contextlib.suppress(BaseException):
                poller.store.checkpoint()  # beside the main process's delivery
                poller.store.close()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _read_exact(fd: int, n: int) -> bytes | None:
    parts: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
