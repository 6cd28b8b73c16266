"""`feedwatch run`: every feed on its own schedule, deliveries, reload, graceful stop.

lock the state (one daemon per state file)
schedule each enabled feed at its stored next poll (overdue ones spread over a minute)
each poll job: poll (same code as `check`) -> schedule the next from the stored next_poll
every few seconds, and right after a poll that queued alerts: run the outbox
SIGHUP: load the config file found at the start again; invalid (or emptied, or
        another state file) -> log and keep the old one
the wall clock steps (NTP, a resume): the waits are set again from now (StepWatch)
SIGTERM/SIGINT: stop scheduling, let the polls whose request is out and the sends under
                way finish within shutdown_timeout; abandon polls still waiting for a
                slot and send nothing new (their state is left safely pending); then
                store the delivery marks the state refused before (a state locked
                elsewhere: waited for up to the busy limit, else logged as lost)

Several instances on one PostgreSQL state: every instance schedules every feed, and a
poll job first claims the feed (store.claim_feed: a lease in the database, granted only
when no live lease is held and the shared next_poll is due). Not granted: polled by
another instance (look again at the stored next_poll) or being polled right now (look
again when that lease expires, or after one interval). Leases are renewed every
LEASE_RENEW seconds and released on a graceful stop; a killed instance's expire after
LEASE_SECONDS. (SQLite: one daemon per file, the lock file; every claim is granted.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TextIO

import structlog

from feedwatch import log as logsetup
from feedwatch import metrics, pacing, sdnotify
from feedwatch.clock import Clock, StepWatch, system_clock, wait_clock
from feedwatch.config import (
    ConfigError,
    Problem,
    format_duration,
    problem_at,
)
from feedwatch.config_warnings import log_config_warnings
from feedwatch.deliver import Dispatcher, DispatchReport
from feedwatch.fetch import Fetcher, check_environment
from feedwatch.model import Config, FeedConfig
from feedwatch.pacing import spread_overdue
from feedwatch.parsepool import ParsePool, worker_count
from feedwatch.poll import Poller, PollReport
from feedwatch.schedule import FeedScheduler
from feedwatch.sinks import build_sink
from feedwatch.sinks.base import Sink
from feedwatch.status import feed_state
from feedwatch.store import dropping_removed_feeds, is_postgres_url, open_store, pruning_alerts
from feedwatch.store.base import (
    LEASE_RENEW,
    LEASE_SECONDS,
    FeedClaim,
    FeedRecord,
    StateError,
    Store,
    log_state_failure,
    new_owner,
)
from feedwatch.store.group import GroupCommit
from feedwatch.store.lock import LockHandle, acquire_lock

log = structlog.get_logger("feedwatch.daemon")

DELIVERY_TICK = 5.0  # seconds between outbox runs (a poll with alerts also starts one)
MAINTENANCE_EVERY = 3600.0
GONE_CHECK = 5.0  # seconds between looks at the state of the feeds stopped by a 410
LATE_AFTER = 5.0  # a poll starting this much after its slot counts as late
CLOCK_CHECK = 5.0  # seconds (monotonic) between looks at the wall clock
CLOCK_STEP = 5.0  # the wall clock moving this much apart from the monotonic one is a step
_FEED_RETRY = "the feed is tried again after one interval"

POLLS_LATE = metrics.REGISTRY.counter(
    "feedwatch_polls_late_total", "Polls that started more than 5 s after their slot.", ("feed",)
)
CLOCK_STEPS = metrics.REGISTRY.counter(
    "feedwatch_clock_steps_total",
    "Steps of the wall clock the daemon noticed and rescheduled for (back or forward).",
    ("direction",),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run as a daemon until SIGTERM/SIGINT; SIGHUP reloads the config. A state from an"
        " older feedwatch is upgraded as it starts (with a .bak-vN copy): stop every older"
        " instance first."
    )


def run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int:
    config = load()
    # before the lock and the state: an exit 2 writes nothing, not even an empty state
    check_environment()
    code = asyncio.run(Daemon(config, load).serve())
    _exit_past_stuck_threads(code)
    return code


class _UnjoinedExecutor(ThreadPoolExecutor):
    """The loop's default executor (a jsonl sink's writes). asyncio.run joins its
    threads at the end with no limit (Python 3.11): one stuck in a write to a pipe
    nobody empties would keep the daemon alive after ``daemon.stopped``. Its shutdown
    waits for nothing; ``_exit_past_stuck_threads`` bounds the wait instead."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=cancel_futures)


def _exit_past_stuck_threads(code: int) -> None:
    """The state is closed and the lock let go: a thread still busy (a parse or a
    sink's write that outlived ``shutdown_timeout``; a thread cannot be cancelled)
    must not keep the process from ending, as the interpreter's exit would wait for it."""
    for t in threading.enumerate():
        if t is threading.current_thread() or t.daemon:
            continue
        t.join(timeout=1.0)
        if t.is_alive():
            log.warning("daemon.thread_abandoned", thread=t.name)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)


class Daemon:
    def __init__(
        self,
        config: Config,
        load: Callable[[], Config],
        *,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        metrics.REGISTRY.introduce(f.name for f in config.feeds)
        self.load = load
        self.clock = clock
        self.exact = wait_clock(clock)
        self.rng = rng or random.Random()
        self.scheduler = FeedScheduler()
        self._stop = asyncio.Event()
        self._stop_signals = 0  # SIGTERM/SIGINT received (_stop_signalled)
        self._stopping = False
        self._started = False  # the start is done: a reload can run
        self._reload_asked = False  # a SIGHUP came during the start
        self._inflight: set[asyncio.Task[Any]] = set()
        self._delivery_runs = 0  # outbox runs started and not ended (one runs, one may wait)
        self._polling: set[str] = set()
        # feeds not polled because their URL answered 410 Gone: looked at again every
        # GONE_CHECK seconds, so a `forget` (or a fixed url after a restart) resumes them
        self._gone: set[str] = set()
        # feeds with `stale_after` whose next poll waits for a server's Retry-After (up to
        # a day): their staleness is judged every GONE_CHECK seconds meanwhile
        self._held_off: set[str] = set()
        self._clock_watch: asyncio.Task[None] | None = None
        self._old_fetchers: list[Fetcher] = []
        self._lock: LockHandle | None = None
        self.owner = new_owner()  # this instance's name on its leases
        self.store: Store
        self.fetcher: Fetcher
        self.dispatcher: Dispatcher
        self.poller: Poller
        self._parse_pool = ParsePool(worker_count(config.parse_workers))
        self._metrics_server: metrics.MetricsServer | None = None
        # each feed's state as feedwatch_feeds{state} counts it (_update_gauges, _count_state)
        self._feed_states: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------
    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(_UnjoinedExecutor(thread_name_prefix="feedwatch-io"))
        # first: a signal during the start (the state's lock, its migration) is a stop
        # or a reload like any other, not Python's default (a traceback, or death)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
            # Python's own handler (asyncio's only wakes the loop): see _stop_signalled
            signal.signal(sig, self._stop_signalled)
            signal.siginterrupt(sig, False)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        try:
            return await self._serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        cfg = self.config
        if not is_postgres_url(cfg.state):
            self._lock = acquire_lock(cfg.state)
        try:
            # first, with nothing else started yet: an address in use ends the start here
            if cfg.metrics_listen and not await self._start_metrics(cfg.metrics_listen):
                return 1
            store = open_store(cfg.state)
            assert store is not None
            self.store = store
            self.fetcher = Fetcher(concurrency=cfg.concurrency, per_host=cfg.per_host)
            self.dispatcher = Dispatcher(
                cfg, store, self._build_sinks(cfg), clock=self.clock, rng=self.rng, owner=self.owner
            )
            self.poller = Poller(
                cfg,
                store,
                self.fetcher,
                clock=self.clock,
                rng=self.rng,
                parse_executor=self._parse_pool,
            )
            self.scheduler.start()
            self._schedule_initial()
            self._schedule_upkeep()
            self._clock_watch = loop.create_task(self._watch_clock())
            self._update_gauges()
            self._kick_deliveries()
            log_config_warnings(cfg)
            self._started = True
            if self._reload_asked:  # a SIGHUP during the start: its reload now
                self._request_reload()
            enabled = sum(1 for f in cfg.feeds if f.enabled)
            sdnotify.ready(status=f"watching {enabled} feeds")
            log.info(
                "daemon.started",
                config=_file(cfg),
                feeds=enabled,
                sinks=len(cfg.sinks),
                state=cfg.state,
                metrics=self._metrics_server.port if self._metrics_server else None,
            )
            await self._stop.wait()
            sdnotify.stopping()
            await self._shutdown()
            return 0
        finally:
            if self._metrics_server is not None:  # the start failed after it (a bad state)
                await self._metrics_server.stop()
            if self._lock is not None:
                self._lock.release()

    async def _start_metrics(self, address: str) -> bool:
        """Serve the metrics at ``address`` at start; False (logged) if it cannot be had:
        a daemon whose ``metrics_listen`` serves nothing would look down to its scraper."""
        server = metrics.MetricsServer(address, metrics.REGISTRY, self._health)
        try:
            await server.start()
        except OSError as exc:
            log.error(
                "daemon.start_failed",
                error=exc.strerror or str(exc),
                listen=address,
                hint="free that address or set another metrics_listen",
            )
            return False
        self._metrics_server = server
        return True

    def _stop_signalled(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT as it comes in, before the loop's handler (``_request_stop``),
        which runs once the loop is free: a state call the database is slow to answer
        (``state.slow``) may hold the loop for minutes. The state is told at once, and
        cuts such a call after shutdown_timeout (after a second signal: at once). (The
        signal still wakes the loop: asyncio's wakeup fd is written whatever the
        handler.)"""
        self._stop_signals += 1
        store = getattr(self, "store", None)  # (none yet while the start opens it)
        if store is not None:
            store.stopping(self.config.shutdown_timeout if self._stop_signals == 1 else 0.0)

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            log.info("daemon.stopping", signal=sig.name)
            self._stop.set()
            return
        # a second one (Ctrl-C again): stop now, as shutdown_timeout would at its end
        busy = [t for t in self._inflight if not t.done()]
        log.warning("daemon.stopping_now", signal=sig.name, abandoned=len(busy))
        for t in busy:
            t.cancel()

    def _request_reload(self) -> None:
        if self._stop.is_set():  # stopping: nothing new starts, a reload included
            log.info("config.reload_ignored", reason="feedwatch is stopping")
            return
        if not self._started:  # the file is read again once the start is done
            self._reload_asked = True
            return
        self._spawn(self.reload())

    async def _shutdown(self) -> None:
        """Polls whose request is out and sends under way end (within
        ``shutdown_timeout``); what has not begun does not: no job starts, a poll still
        waiting for a fetch slot is abandoned at once, no new delivery is sent. Either
        way the state is consistent: an abandoned poll committed nothing, an unsent
        alert stays pending."""
        self._stopping = True
        self.scheduler.pause()
        if self._clock_watch is not None:
            self._clock_watch.cancel()
        for fetcher in (self.fetcher, *self._old_fetchers):
            fetcher.stop_new_requests()
        self.dispatcher.stop()
        started = time.monotonic()
        pending = [t for t in self._inflight if not t.done()]
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=self.config.shutdown_timeout)
            for t in not_done:
                t.cancel()
            if not_done:
                await asyncio.gather(*not_done, return_exceptions=True)
                log.warning("daemon.abandoned", tasks=len(not_done))
        # the marks of sends the state did not take (kept in memory): stored now if the
        # state takes them (waiting the busy limit at most: a second signal cuts it),
        # else each logged; before the claims go back, or another instance sends them
        marks = self._spawn(self.dispatcher.store_unmarked_at_stop())
        await asyncio.gather(marks, return_exceptions=True)
        self.scheduler.shutdown()
        await self.dispatcher.aclose()
        await self.fetcher.aclose()
        for f in self._old_fetchers:
            await f.aclose()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        self._parse_pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.store.release_leases(self.owner)  # the others take over at once
        except Exception as exc:
            log.warning("state.release_failed", error=str(exc))
        self.store.close()
        log.info("daemon.stopped", seconds=round(time.monotonic() - started, 3))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    def _health(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "shutting down"
        return True, "ok"

    # -- scheduling -------------------------------------------------------------
    def _schedule_initial(self) -> None:
        now = self.clock()
        records = self.store.feeds()
        due: list[tuple[str, datetime | None]] = []
        for feed in self.config.feeds:
            if not feed.enabled:
                continue
            rec = records.get(feed.name)
            if _gone_here(rec, feed):
                log.info("feed.gone_skipped", feed=feed.name)
                self._gone.add(feed.name)
                continue
            due.append((feed.name, _stored_slot(rec, feed)))
        self._schedule_spread(due, records, 60.0, now)

    def _schedule_upkeep(self) -> None:
        """The periodic jobs; set again after a clock step, to count from the new now."""
        self.scheduler.every("deliveries", DELIVERY_TICK, self._delivery_tick)
        self.scheduler.every("maintenance", MAINTENANCE_EVERY, self._maintenance_job)
        self.scheduler.every("leases", LEASE_RENEW, self._lease_job)
        self.scheduler.every("gone", GONE_CHECK, self._gone_job)
        self.scheduler.every("held_off", GONE_CHECK, self._held_off_job)
        wd = sdnotify.watchdog_interval()
        if wd:
            self.scheduler.every("watchdog", wd, self._watchdog_job)

    async def _watch_clock(self) -> None:
        """Look at the wall clock every few seconds of the monotonic one (APScheduler
        cannot: its own waits are what a step breaks)."""
        watch = StepWatch(self.clock().timestamp(), time.monotonic())
        while True:
            await asyncio.sleep(CLOCK_CHECK)
            moved = watch.step(self.clock().timestamp(), time.monotonic())
            if abs(moved) >= CLOCK_STEP and not self._stopping:
                try:
                    self._clock_stepped(moved)
                except Exception:
                    log.exception("clock.reschedule_failed")

    def _clock_stepped(self, moved: float) -> None:
        """Every wait was set in wall-clock times. Set back: each feed's slot moves back
        as far, so it comes after the wait it was given, not an hour later. Moved on (a
        step, or a resume from suspend): the feeds that fell due are spread over a
        minute, as at start. The periodic jobs count again from now."""
        log.warning(
            "clock.stepped",
            seconds=round(moved),
            hint="the wall clock was set back"
            if moved < 0
            else "the wall clock moved on (a step, or a resume from suspend)",
        )
        CLOCK_STEPS.inc(direction="back" if moved < 0 else "forward")
        if sdnotify.watchdog_interval():
            sdnotify.watchdog()  # alive; the next ping is one interval from now
        self._schedule_upkeep()
        now = self.clock()
        slots = {n: w for n, w in self.scheduler.scheduled().items() if n not in self._polling}
        if moved < 0:
            for name, when in slots.items():
                self.scheduler.at(name, when + timedelta(seconds=moved), self._poll_job, name)
            self._spawn(self._shift_retries(moved, now))
            return
        overdue = [(n, w) for n, w in slots.items() if w <= now]
        if overdue:
            self._schedule_spread(overdue, self.store.feeds(), 60.0, now)

    async def _shift_retries(self, moved: float, now: datetime) -> None:
        """The retries' times moved back with the clock, through the group commit (a
        state locked by another process is waited for with the loop running)."""
        try:
            shifted = await self.poller.writes.run(
                functools.partial(self.store.shift_retries, moved, now)
            )
        except Exception as exc:  # the retries keep their times: late, not lost
            log.warning("clock.retries_not_moved", error=str(exc))
        else:
            if shifted:
                log.info("clock.retries_moved", deliveries=shifted, seconds=round(moved))

    def _schedule_spread(
        self,
        due: Sequence[tuple[str, datetime | None]],
        records: Mapping[str, FeedRecord],
        window: float,
        now: datetime,
    ) -> None:
        """Schedule each (feed, stored next poll): overdue ones spread over ``window``
        (``pacing.spread_overdue``), after bringing forward those set under a longer
        interval than the feed's now; none later than it was stored."""
        capped: list[tuple[str, datetime | None]] = []
        stored: dict[str, datetime] = {}
        for name, when in due:
            feed = self.config.feed(name)
            if feed is not None and when is not None:
                stored[name] = when
                when = self._within_interval(records.get(name), feed, when, now)
            capped.append((name, when))
        for name, when in spread_overdue(now, capped, window, rng=self.rng).items():
            if name in stored and stored[name] > now:  # it was not overdue
                when = min(when, stored[name])
            self._slot(name, when, records.get(name))

    def _slot(self, name: str, when: datetime, rec: FeedRecord | None) -> None:
        """Schedule the feed's next poll at ``when``, and store it where the state says
        otherwise (a shorter interval, an overdue feed's place in a spread), so `status`
        shows the time the daemon keeps. (A feed the state does not know yet has none.)"""
        self.scheduler.at(name, when, self._poll_job, name)
        feed = self.config.feed(name)
        if feed is not None and feed.settings.stale_after > 0 and rec is not None:
            until = rec.retry_after_at(feed.url)
        else:
            until = None
        if until is not None and until > self.clock():
            self._held_off.add(name)
        else:
            self._held_off.discard(name)
        if rec is None or rec.next_poll == when:
            return
        # through the group commit, in a task: a state locked by another process is
        # waited for with the loop running (only over the value read: a poll storing
        # its own meanwhile wins)
        self._spawn(self._store_next_poll(name, when, rec.next_poll))

    async def _store_next_poll(self, name: str, when: datetime, was: datetime | None) -> None:
        try:
            await self.poller.writes.run(
                functools.partial(self.store.set_next_poll, name, when, was=was)
            )
        except Exception as exc:  # the schedule stands; the next poll stores its own
            log.warning("feed.next_poll_not_stored", feed=name, error=str(exc))

    @staticmethod
    def _within_interval(
        rec: FeedRecord | None, feed: FeedConfig, when: datetime, now: datetime
    ) -> datetime:
        """``when`` under the feed's interval now (``pacing.within_interval``)."""
        if rec is None:
            return when
        until = rec.retry_after_at(feed.url)
        return pacing.within_interval(
            when,
            feed.settings,
            rec.last_poll,
            backing_off=bool(rec.errors_at(feed.url)) or (until is not None and until > now),
            now=now,
        )

    def _reschedule(self, name: str, polled_url: str | None = None) -> None:
        """The next poll of ``name``, after a poll of ``polled_url`` (None: none made)."""
        feed = self.config.feed(name)
        if feed is None or not feed.enabled or self._stopping:
            self.scheduler.cancel(name)
            return
        now = self.clock()
        rec = self.store.feed(name)
        self._count_state(name, feed_state(rec, feed.enabled, feed.url))
        if _gone_here(rec, feed):
            log.warning(
                "feed.gone",
                feed=name,
                hint=f"polling stopped; `feedwatch forget {name}` (or a new url) resumes it",
            )
            self.scheduler.cancel(name)
            self._gone.add(name)
            return
        when = rec.next_poll if rec is not None else None
        if polled_url is not None and polled_url != feed.url:
            # a reload changed the URL during this poll (of the old one): the new URL
            # now, as a reload schedules it when no poll is under way
            when = now
        elif when is None or when <= now:
            when = now + timedelta(seconds=feed.settings.interval)
        else:  # set by a poll that began before a reload shortened the interval?
            when = self._within_interval(rec, feed, when, now)
        until = rec.retry_after_at(feed.url) if rec is not None else None
        if until is not None and until > when:  # (a new url: not the old server's)
            when = until
        self._slot(name, when, rec)

    def _reschedule_refused(self, name: str, claim: FeedClaim) -> None:
        """Another instance polled the feed (look again at the stored next poll) or is
        polling it (look again when its lease expires, or after one interval)."""
        feed = self.config.feed(name)
        if feed is None or not feed.enabled or self._stopping or claim.gone:
            self.scheduler.cancel(name)
            return
        now = self.clock()
        if claim.next_poll is not None and claim.next_poll > now:
            when = claim.next_poll
        else:
            when = now + timedelta(seconds=feed.settings.interval)
            if claim.held_until is not None and claim.held_until < when:
                when = claim.held_until
        self.scheduler.at(name, when, self._poll_job, name)

    async def _poll_job(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        refused: FeedClaim | None = None
        claimed = mine = unclaimed = False
        polled_url: str | None = None
        try:
            feed = self.config.feed(name)
            if self._stopping or feed is None or not feed.enabled or name in self._polling:
                return
            self._polling.add(name)
            mine = True
            polled_url = feed.url
            # (the exact time: the next poll that made this job due was counted from it)
            try:
                claim = self.store.claim_feed(
                    name, feed.url, self.owner, self.exact(), LEASE_SECONDS
                )
            except Exception as exc:
                unclaimed = True
                log_state_failure(log, "feed.claim_failed", exc, _FEED_RETRY, feed=name)
                return
            if not claim.granted:
                refused = claim
                log.debug(
                    "feed.claimed_elsewhere",
                    feed=name,
                    next_poll=claim.next_poll.isoformat() if claim.next_poll else None,
                    held=claim.held_until is not None,
                )
                return
            claimed = True
            slot = self.scheduler.scheduled().get(name)
            late = (self.clock() - slot).total_seconds() if slot else 0.0
            if late > LATE_AFTER:
                POLLS_LATE.inc(feed=name)
            try:
                report = await self.poller.poll(feed)
            except asyncio.CancelledError:
                # shutdown: nothing of this poll was committed; it is polled again next start
                log.info("feed.poll_abandoned", feed=name)
                return
            self._record_metrics(report)
            if report.alerts:
                self._kick_deliveries()
        finally:
            if claimed:
                try:
                    self.store.release_feed(name, self.owner)
                except Exception as exc:  # it expires by itself
                    log.warning("feed.release_failed", feed=name, error=str(exc))
            if mine:
                self._polling.discard(name)
            if task is not None:
                self._inflight.discard(task)
            # a poll of this feed still under way (a reload's job fired during it) will
            # schedule the next one itself as it ends
            if not self._stopping and (mine or name not in self._polling):
                try:
                    if unclaimed:  # the state is out of reach: not asked again now
                        self._retry_later(name)
                    elif refused is not None:
                        self._reschedule_refused(name, refused)
                    else:
                        self._reschedule(name, polled_url)
                except Exception as exc:
                    log_state_failure(log, "feed.reschedule_failed", exc, _FEED_RETRY, feed=name)
                    self._retry_later(name)

    def _retry_later(self, name: str) -> None:
        """The state could not be read (a database restart?): try again after one interval."""
        feed = self.config.feed(name)
        if feed is not None and feed.enabled and not self._stopping:
            when = self.clock() + timedelta(seconds=feed.settings.interval)
            self.scheduler.at(name, when, self._poll_job, name)

    # -- deliveries and upkeep -----------------------------------------------
    async def _delivery_tick(self) -> None:
        self._kick_deliveries()

    def _kick_deliveries(self) -> None:
        """Run the outbox in a task of our own (the tick's job ends at once, so
        APScheduler never finds it still running, and a stop waits for the run as for
        any task of ours), unless a run already waits to start: one that runs may have
        read its queue before the newest alerts, one waiting behind it will not."""
        if self._stopping or self._delivery_runs >= 2:
            return
        self._delivery_runs += 1
        self._spawn(self._deliver_job())

    async def _deliver_job(self) -> None:
        try:
            report = await self.dispatcher.run_once()
            self._record_deliveries(report)
        except Exception as exc:
            log_state_failure(
                log, "delivery.run_failed", exc, "tried again at the next delivery round"
            )
        finally:
            self._delivery_runs -= 1

    async def _maintenance_job(self) -> None:
        """Prune old alerts, then drop feeds removed for ``retention``: in bounded
        transactions, the loop free between two (a prune of millions of alerts takes
        minutes, and polls, deliveries and the watchdog's pings go on meanwhile). A stop
        ends it between two; the next upkeep goes on from there."""
        # each transaction through a group commit of its own: while another process holds
        # SQLite's write lock it waits with the loop running (feedwatch.store.group), and
        # one still waiting after the busy limit ends this upkeep (the next one does it:
        # nothing is lost, what is pruned is only pruned later)
        writes = GroupCommit(self.store)
        try:
            for steps in (pruning_alerts, dropping_removed_feeds):
                walk = steps(self.store, self.config, self.clock())
                try:
                    while await writes.run(functools.partial(_step, walk)):
                        if self._stopping:
                            return
                finally:
                    walk.close()
            self._update_gauges()
        except Exception as exc:
            log_state_failure(
                log, "state.maintenance_failed", exc, "tried again at the next upkeep"
            )

    async def _gone_job(self) -> None:
        """Resume a feed stopped by a 410 once the state no longer says it is gone at its
        URL: `feedwatch forget` cleared it (the daemon is not told), or a reload gave it
        another url (scheduled by the reload itself). One still gone gets its `stale`
        notice here once it is due (no poll of it judges it)."""
        if not self._gone or self._stopping:
            return
        try:
            for name in sorted(self._gone):
                feed = self.config.feed(name)
                if feed is None or not feed.enabled:
                    self._gone.discard(name)
                elif not _gone_here(self.store.feed(name), feed):
                    self._gone.discard(name)
                    if name not in self._polling and name not in self.scheduler.scheduled():
                        log.info("feed.resumed", feed=name)
                        self.scheduler.at(name, self.clock(), self._poll_job, name)
                elif await self.poller.stale_check(feed):
                    self._kick_deliveries()
        except Exception as exc:
            log.warning("state.gone_check_failed", error=str(exc))

    async def _held_off_job(self) -> None:
        """The `stale` notice of a feed whose next poll waits for a Retry-After, once it
        is due: its poll, a day later at most, would judge it that late. (Its next
        schedule, after that poll or a reload, takes it off this list.)"""
        if not self._held_off or self._stopping:
            return
        try:
            for name in sorted(self._held_off):
                feed = self.config.feed(name)
                if feed is None or not feed.enabled or name in self._gone:
                    self._held_off.discard(name)
                elif name not in self._polling and await self.poller.stale_check(feed):
                    self._kick_deliveries()
        except Exception as exc:
            log.warning("state.held_off_check_failed", error=str(exc))

    async def _lease_job(self) -> None:
        try:
            self.store.renew_leases(self.owner, self.clock(), LEASE_SECONDS)
        except Exception as exc:
            log.warning("state.lease_renew_failed", error=str(exc))

    async def _watchdog_job(self) -> None:
        sdnotify.watchdog()

    # -- reload -------------------------------------------------------------------
    async def reload(self) -> bool:
        """Load the config file again (the one the start found: cli._loader) and apply
        it; one that is invalid, or that ``_refused`` names, is logged and the running
        config kept."""
        sdnotify.reloading()
        back = logsetup.restorer()  # loading sets the new config's logging
        kept = {"config": _file(self.config), "hint": "the running config is kept"}
        try:
            try:
                new = self.load()
            except ConfigError as exc:
                back()
                log.error("config.reload_failed", problems=[str(p) for p in exc.problems], **kept)
                return False
            except Exception as exc:
                back()
                log.error("config.reload_failed", error=str(exc), **kept)
                return False
            old = self.config
            refused = _refused(old, new)
            if refused:
                back()
                log.error("config.reload_failed", problems=[str(p) for p in refused], **kept)
                return False
            self._apply(old, new)
            self._log_held(old, new)
            log_config_warnings(new)
            if new.metrics_listen != old.metrics_listen:
                await self._move_metrics(new.metrics_listen, old.metrics_listen)
            if new.parse_workers != old.parse_workers:
                log.warning(
                    "config.restart_needed",
                    keys=["parse_workers"],
                    hint="the parse workers running stay as they are until feedwatch restarts",
                )
            return True
        finally:
            sdnotify.ready(
                status=f"watching {sum(1 for f in self.config.feeds if f.enabled)} feeds"
            )

    async def _move_metrics(self, listen: str, before: str) -> None:
        """``metrics_listen`` changed: serve it there ("" = nowhere). If the new address
        cannot be had, the old one is taken back and the error logged."""
        if self._metrics_server is not None:
            await self._metrics_server.stop()
            self._metrics_server = None
        if not listen:
            return
        hint = "back on the old address" if before else "metrics are off"
        server = await self._serve_metrics(listen, hint)
        if server is None and before:
            server = await self._serve_metrics(before, "metrics are off")
        self._metrics_server = server

    async def _serve_metrics(self, address: str, hint: str) -> metrics.MetricsServer | None:
        """The metrics served at ``address``; None (logged, with ``hint``) if it cannot be had."""
        server = metrics.MetricsServer(address, metrics.REGISTRY, self._health)
        try:
            await server.start()
        except OSError as exc:
            log.error("metrics.listen_failed", error=str(exc), hint=hint)
            return None
        return server

    def _apply(self, old: Config, new: Config) -> None:
        # what the feeds' changes ask for, and the state's slots for them, first: a state
        # out of reach (a database restart) must not leave the reload half done
        plan = self._plan_feeds(old, new)
        records = self._reload_records(plan) if plan.to_schedule or plan.back else {}
        self.config = new
        metrics.REGISTRY.introduce(f.name for f in new.feeds)
        self.poller.reconfigure(new)
        self.dispatcher.config = new
        # sinks: rebuild the changed ones; a removed sink's deliveries stay pending (visible)
        sinks = dict(self.dispatcher.sinks)
        retired = [
            sinks.pop(name)
            for name in list(sinks)
            if name not in new.sinks or new.sinks[name] != old.sinks.get(name)
        ]
        for name, cfg in new.sinks.items():
            if name not in sinks:
                sinks[name] = build_sink(cfg)
        self.dispatcher.sinks = sinks
        if retired:  # closed once the sends under way through them have ended
            self._spawn(self.dispatcher.retire(retired))
            self._kick_deliveries()  # what waits for them goes out through the new ones
        if (new.concurrency, new.per_host) != (old.concurrency, old.per_host):
            replaced = self.fetcher
            self._old_fetchers.append(replaced)
            self.fetcher = Fetcher(concurrency=new.concurrency, per_host=new.per_host)
            self.poller.fetcher = self.fetcher
            busy = [t for t in self._inflight if not t.done()]
            self._spawn(self._retire_fetcher(replaced, busy))
        self._schedule_plan(plan, records, new)
        try:
            self._update_gauges()
        except StateError:  # set again at the next upkeep
            pass
        log.info(
            "config.reloaded",
            config=_file(new),
            added=plan.added,
            removed=plan.removed,
            changed=plan.changed,
            feeds=len(new.feeds),
            sinks=len(new.sinks),
        )

    def _log_held(self, old: Config, new: Config) -> None:
        """Name each sink a reload took out (or renamed) whose deliveries still wait:
        they are held, not sent elsewhere, and `status` shows the sink as removed."""
        gone = [name for name in old.sinks if name not in new.sinks]
        if not gone:
            return
        try:
            counts = self.store.sink_counts()
        except StateError:  # `status` counts them all the same
            return
        until = (
            f"until it is back in the config or give_up_after"
            f" ({format_duration(new.give_up_after)}) passes, then they go dead"
            if new.give_up_after > 0
            else "until it is back in the config (give_up_after = 0s: for ever)"
        )
        for name in gone:
            pending = counts[name].pending if name in counts else 0
            if pending:
                log.warning(
                    "sink.removed_held",
                    sink=name,
                    pending=pending,
                    hint=f"the sink is no longer in the config: its deliveries are held {until}",
                )

    def _plan_feeds(self, old: Config, new: Config) -> _FeedPlan:
        """What a reload does to the feeds. To schedule now: new feeds and new URLs (due
        now), feeds back in the config (at their stored time, as at a start: a backoff or
        a Retry-After holds), and those whose settings changed at their scheduled time,
        which a shorter interval may bring forward (one not scheduled, or being polled,
        is left: that poll's end schedules the next)."""
        plan = _FeedPlan()
        old_feeds = {f.name: f for f in old.feeds}
        slots = self.scheduler.scheduled()
        for f in new.feeds:
            prev = old_feeds.get(f.name)
            if not f.enabled:
                if prev is not None and prev.enabled:
                    plan.removed += 1
                plan.cancel.append(f.name)
                continue
            if prev is None or not prev.enabled:
                plan.added += 1
                plan.back.append(f)
            elif prev != f:
                plan.changed += 1
                if prev.url != f.url:
                    plan.to_schedule.append((f.name, None))
                elif (
                    f.settings != prev.settings and f.name in slots and f.name not in self._polling
                ):
                    plan.to_schedule.append((f.name, slots[f.name]))
        for name in old_feeds:
            if new.feed(name) is None:
                plan.removed += 1
                plan.cancel.append(name)
                plan.dropped.append(name)
        return plan

    def _reload_records(self, plan: _FeedPlan) -> dict[str, FeedRecord]:
        """The state's records for the feeds a reload schedules; none if the state is out
        of reach: those feeds are then due now, and their polls wait for it (a claim on
        PostgreSQL still keeps a feed's stored next poll, Retry-After and 410)."""
        try:
            return self.store.feeds()
        except StateError as exc:
            log_state_failure(
                log,
                "config.reload_state_unread",
                exc,
                "the feeds it adds are polled once the state answers",
                feeds=sorted({n for n, _ in plan.to_schedule} | {f.name for f in plan.back}),
            )
            return {}

    def _schedule_plan(
        self, plan: _FeedPlan, records: Mapping[str, FeedRecord], new: Config
    ) -> None:
        for name in plan.cancel:
            self.scheduler.cancel(name)
        for name in plan.dropped:
            metrics.REGISTRY.remove(feed=name)
        if not (plan.to_schedule or plan.back):
            return
        to_schedule = list(plan.to_schedule)
        for f in plan.back:
            rec = records.get(f.name)
            # (one whose url changed while it was out is a new feed: polled now)
            stored = rec is not None and rec.url == f.url
            to_schedule.append((f.name, _stored_slot(rec, f) if stored else None))
        for name, _when in to_schedule:  # added back, still gone at the same URL?
            if _gone_here(records.get(name), new.feed(name)):
                self._gone.add(name)
            else:  # (its url changed: polled at the new one)
                self._gone.discard(name)
        to_schedule = [x for x in to_schedule if x[0] not in self._gone]
        window = min(60.0, max(1.0, float(len(to_schedule))))
        self._schedule_spread(to_schedule, records, window, self.clock())

    async def _retire_fetcher(self, fetcher: Fetcher, busy: list[asyncio.Task[Any]]) -> None:
        """Close a fetcher a reload replaced (its connections) once the polls that were
        under way at the reload, which may still use it, have ended."""
        if busy:
            await asyncio.wait(busy)
        if fetcher in self._old_fetchers:  # once (the stop closes those still listed)
            self._old_fetchers.remove(fetcher)
            await fetcher.aclose()

    # -- metrics ---------------------------------------------------------------
    def _build_sinks(self, cfg: Config) -> dict[str, Sink]:
        return {name: build_sink(s) for name, s in cfg.sinks.items()}

    def _record_metrics(self, report: PollReport) -> None:
        metrics.POLLS.inc(
            feed=report.feed,
            result=report.result if report.result != "unchanged" else "not_modified",
        )
        metrics.POLL_DURATION.observe(report.duration)
        for a in report.alerts:
            metrics.ALERTS.inc(feed=report.feed, kind=a.kind)
        if report.result != "error":
            metrics.LAST_SUCCESS.set(time.time(), feed=report.feed)

    def _record_deliveries(self, report: DispatchReport) -> None:
        # per-sink delivery counters are kept by the dispatcher itself. The pending
        # gauge after every run, whatever it did: alerts recorded while a sink backs off
        # (or held for a digest) are sent by no run, and one run follows each poll that
        # records alerts (and one runs every DELIVERY_TICK), so it is `status`'s pending
        # as of the last delivery round, for the cost of one count over the pending
        # deliveries, as the run's own look for due ones reads.
        self._update_outbox()

    def _update_outbox(self) -> None:
        """feedwatch_outbox_pending: every configured sink (0 if none waits), and a sink
        out of the config while deliveries still wait for it (held, as `status` shows)."""
        counts = self.store.pending_counts()
        sinks = {name: counts.get(name, 0) for name in self.config.sinks}
        sinks.update((name, n) for name, n in counts.items() if n)
        metrics.OUTBOX_PENDING.replace([({"sink": name}, n) for name, n in sinks.items()])

    def _update_gauges(self) -> None:
        """Every gauge from the state (at the start, a reload, the hourly upkeep); between
        two, each poll's end moves its feed's count (``_count_state``) and its last
        success, each delivery run the pending deliveries (``_record_deliveries``)."""
        records = self.store.feeds()
        self._feed_states = {
            f.name: feed_state(records.get(f.name), f.enabled, f.url) for f in self.config.feeds
        }
        states: dict[str, int] = {}
        for st in self._feed_states.values():
            states[st] = states.get(st, 0) + 1
        metrics.FEEDS.replace([({"state": k}, v) for k, v in states.items()])
        # each enabled feed's last success at its url, as the state has it: a feed still
        # failing after a restart is not left without a series (its staleness alert)
        seeded = []
        for f in self.config.feeds:
            rec = records.get(f.name)
            if f.enabled and rec is not None and rec.url == f.url and rec.last_success:
                seeded.append(({"feed": f.name}, rec.last_success.timestamp()))
        metrics.LAST_SUCCESS.replace(seeded)
        self._update_outbox()

    def _count_state(self, name: str, state: str) -> None:
        """A feed's state after its poll: feedwatch_feeds{state} moves it if it changed
        (a feed the last count did not know waits for the next)."""
        before = self._feed_states.get(name)
        if before is None or before == state:
            return
        self._feed_states[name] = state
        metrics.FEEDS.dec(state=before)
        metrics.FEEDS.inc(state=state)


@dataclass
class _FeedPlan:
    """A reload's changes to the feeds (``Daemon._plan_feeds``)."""

    to_schedule: list[tuple[str, datetime | None]] = field(default_factory=list)
    back: list[FeedConfig] = field(default_factory=list)  # added, or enabled again
    cancel: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # out of the config: their metrics go
    added: int = 0
    removed: int = 0
    changed: int = 0


def _refused(old: Config, new: Config) -> list[Problem]:
    """Why a reload does not apply a valid config: another state file (only a restart
    changes it); no feeds at all, or no sink, where the running config has some: an
    emptied or cut-short file (an editor that writes in two steps, a .path unit's reload
    in between) would stop every feed, or record every alert and send it nowhere. A
    restart takes such a config."""
    problems: list[Problem] = []
    if new.state != old.state:
        problems.append(
            problem_at(
                new.path,
                ("feedwatch", "state"),
                "changed: restart feedwatch to use another state file",
            )
        )
    if old.feeds and not new.feeds:
        problems.append(
            problem_at(
                new.path,
                (),
                f"the new config has no feeds (the running one has {len(old.feeds)}): every"
                " feed would stop; an empty or cut-short file? Restart feedwatch to run"
                " with no feeds",
            )
        )
    if old.sinks and not new.sinks:
        problems.append(
            problem_at(
                new.path,
                ("sinks",),
                f"the new config has none (the running one has {len(old.sinks)}): alerts"
                " would be recorded and sent nowhere; restart feedwatch to run without sinks",
            )
        )
    return problems


def _file(cfg: Config) -> str | None:
    """The config's file, as the log names it."""
    return str(cfg.path) if cfg.path is not None else None


def _stored_slot(rec: FeedRecord | None, feed: FeedConfig) -> datetime | None:
    """When the state says a feed coming into the schedule (a start, a reload that brings
    it back) is due: its stored next poll (a backoff after errors included), not before
    a server's Retry-After; None (now) for a feed never polled at its url (the old
    url's backoff and Retry-After are not the new one's)."""
    if rec is None or rec.url != feed.url:
        return None
    when = rec.next_poll
    if rec.retry_after_until is not None:
        when = max(when or rec.retry_after_until, rec.retry_after_until)
    return when


def _step(walk: Iterator[object]) -> bool:
    """One transaction of an upkeep's walk (``pruning_alerts``...); False once it is done."""
    return next(walk, _DONE) is not _DONE


_DONE = object()


def _gone_here(rec: FeedRecord | None, feed: FeedConfig | None) -> bool:
    return rec is not None and feed is not None and rec.gone_at(feed.url)
