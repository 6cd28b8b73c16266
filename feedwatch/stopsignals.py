"""SIGTERM, SIGINT or SIGHUP to `check`: a stop as the daemon's (feedwatch.daemon).

`timeout 60 feedwatch check` in cron, systemd stopping a oneshot service, Ctrl-C, a
closed terminal: Python's default was a hard kill mid-send, the alert the receiver
had got never marked, and the next check sent it again.

    first signal: nothing new starts (the fetcher starts no request, the dispatcher no
                  send: ``on_stop``); the polls whose request is out and the sends
                  under way end within ``shutdown_timeout`` and are stored; what was
                  not polled or sent waits for the next check (the outbox keeps it)
    second signal, or shutdown_timeout over: what is under way is cancelled now (an
                  abandoned poll commits nothing, a send cut short stays pending:
                  sent again, at least once)

`check` runs its polls and its deliveries in two event loops, with plain code around
them (the state's opening, the alert lines, the upkeep): the signals are caught by a
Python handler for the whole command, which only counts them and tells the state
(``Store.stopping``, as the daemon's ``_stop_signalled``); a loop under ``guard`` is
woken through the signal module's wakeup fd and does the rest. A signal ignored when
`check` starts (``nohup``) stays ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from feedwatch.store.base import Store

log = structlog.get_logger("feedwatch.cli")

T = TypeVar("T")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class CheckStop:
    """A context manager: the signals of ``SIGNALS`` are caught while it is entered."""

    def __init__(self, grace: float) -> None:
        self.grace = grace  # shutdown_timeout
        self.signal: signal.Signals | None = None  # the first one received
        self.count = 0
        self.store: Store | None = None  # told at once (PostgreSQL: a slow call is cut)
        self.cut_short = False  # what was under way was cancelled
        self._handled: dict[signal.Signals, Any] = {}  # each signal's handler before ours
        self._said = False
        self._begun = False  # the loop's part of the first signal is done
        self._now = False  # the loop's part of a second one is done
        self._task: asyncio.Future[Any] | None = None
        self._on_stop: list[Callable[[], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._old_wakeup = -1

    def __enter__(self) -> CheckStop:
        if threading.current_thread() is not threading.main_thread():
            return self  # (main() called in a thread: signals go to the main one)
        reader, writer = socket.socketpair()
        for s in (reader, writer):
            s.setblocking(False)
        self._old_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._wake = (reader, writer)
        for sig in SIGNALS:
            before = signal.getsignal(sig)
            if before is signal.SIG_IGN:  # nohup, or a background job's SIGINT
                continue
            self._handled[sig] = before
            signal.signal(sig, self._signalled)
            signal.siginterrupt(sig, False)  # a call in a thread (SQLite, TLS) goes on
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, before in self._handled.items():
            signal.signal(sig, before)
        if self._wake is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for s in self._wake:
                s.close()
            self._wake = None

    @property
    def signalled(self) -> bool:
        return self.count > 0

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell shows a command a signal ended."""
        return 128 + int(self.signal or 0)

    def requested(self) -> bool:
        """Whether a stop was asked (said in the log once): nothing new should start."""
        if self.count:
            self._say()
        return self.count > 0

    def on_stop(self, stop: Callable[[], None]) -> None:
        """``stop`` (nothing new starts) is called at the first signal, in the loop of
        the step under way (at once if one came already)."""
        self._on_stop.append(stop)
        if self._begun:
            stop()

    async def guard(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work`` (one step of `check`: the polls, the deliveries) with the signals
        watched; None if a second signal, or ``grace`` after the first, cancelled it."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(work)
        self._task = task
        if self._wake is not None:
            loop.add_reader(self._wake[0].fileno(), self._woken)
        try:
            self._act()  # a signal as the loop started
            try:
                return await task
            except asyncio.CancelledError:
                if not self.cut_short:
                    raise
                return None
        finally:
            if self._wake is not None:
                loop.remove_reader(self._wake[0].fileno())
            if self._timer is not None:
                self._timer.cancel()
            self._task, self._timer, self._on_stop = None, None, []
            self._begun = self._now = False

    # -- in the signal handler: count, and tell the state (safe there) -------------
    def _signalled(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signal is None:
            self.signal = signal.Signals(signum)
        if self.store is not None:
            self.store.stopping(self.grace if self.count == 1 else 0.0)

    # -- in the loop --------------------------------------------------------------
    def _woken(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake[0].recv(4096):
                pass
        self._act()

    def _act(self) -> None:
        if not self.count:
            return
        self._say()
        if not self._begun:
            self._begun = True
            for stop in self._on_stop:
                stop()
            self._timer = asyncio.get_running_loop().call_later(self.grace, self._cut)
        if self.count > 1 and not self._now:
            self._now = True
            log.warning(
                "check.stopping_now", signal=self._name(), hint="what is under way is cut short"
            )
            self._cut()

    def _cut(self) -> None:
        if self._task is not None and not self._task.done():
            self.cut_short = True
            self._task.cancel()

    def _say(self) -> None:
        if not self._said:
            self._said = True
            log.info(
                "check.stopping",
                signal=self._name(),
                shutdown_timeout=self.grace,
                hint="nothing new starts; the polls and sends under way end, the rest"
                " waits for the next check",
            )

    def _name(self) -> str:
        return self.signal.name if self.signal is not None else "?"
