"""The one orchestration of a poll, shared by `check` and the daemon.

    record  = store.feed(name)
    outcome = fetch(url, validators)                     # never raises
    failed?        -> record_failure (backoff, Retry-After, 410)   -> done
    304 / same bytes -> record_unchanged (last body's entries seen) -> done
    parsed  = parse(body)                                # in an executor
    not a feed?    -> record_failure                                -> done
    result  = diff(stored entries, parsed entries)       # pure (the stored entries
                                                         # the body can match)
    alerts  = match + build for each change that may alert
    store.commit_poll(entries, alerts, deliveries)       # ONE transaction (a savepoint
                                                         # of a group commit)

Nothing here decides anything itself: the decisions are in diff, match,
alert and pacing, which are pure.

The parsing and matching modules (feedparser ~25 ms of imports) are imported where a
body is first handled, not with this module: the main process of a big `check` only
fetches and answers 304s; its body workers import them at their first body, and a
round of 304s imports them nowhere. (feedwatch.match imports the regex engine, ~14 ms
more, only when it compiles a term: feeds without rules never need it.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol

import structlog

from feedwatch import pacing, parsecache
from feedwatch.alert import build_alert, build_notice, format_time
from feedwatch.clock import Clock, system_clock, wait_clock
from feedwatch.diff import DiffResult, diff, stored_needed, within_retention
from feedwatch.identity import alert_id, entry_keys, id_bases
from feedwatch.model import (
    Alert,
    Config,
    FeedConfig,
    Fetched,
    FetchFailed,
    FetchOutcome,
    FetchRequest,
    NotModified,
    ParsedFeed,
    Secret,
    only_a_note,
)
from feedwatch.redact import redact
from feedwatch.staleness import ahead_of_clock, as_recorded, stale_notice
from feedwatch.store import ForgottenMeanwhile
from feedwatch.store.base import FeedRecord, PollCommit, StateError, Store
from feedwatch.store.group import GroupCommit

if TYPE_CHECKING:
    from feedwatch.fetch import Fetcher
    from feedwatch.match import CompiledRule

log = structlog.get_logger("feedwatch.poll")

# How long a poll's write may wait for others to share its COMMIT. With responses
# arriving one by one (50 ms of latency, 32 in flight), 10 ms gathers ~6 a COMMIT;
# a 304 holds nothing meanwhile, a body its place among the bodies in hand.
COMMIT_WINDOW = 0.010


@dataclass(frozen=True)
class BodyJob:
    """A fetched body and what its poll knew before the fetch: all a body worker needs."""

    feed: str
    record: FeedRecord
    fetched: Fetched
    digest: str
    next_poll: datetime
    prune_before: datetime
    # when the response arrived: the poll's time for its comparison and its commit, not
    # the end of its parse, which in a big check can wait seconds for a worker
    fetched_at: datetime


class BodyHandler(Protocol):
    async def run(self, job: BodyJob) -> PollReport | None: ...


@dataclass
class PollReport:
    feed: str
    result: str  # ok | not_modified | unchanged | error
    http_status: int | None = None
    error: str | None = None
    new: int = 0
    updated: int = 0
    alerts: list[Alert] = field(default_factory=list)  # queued (or, dry-run, would be)
    warnings: tuple[str, ...] = ()
    flood: int = 0
    baseline: bool = False
    duration: float = 0.0
    retry_after_until: datetime | None = None
    gone: bool = False
    redirected_to: str | None = None
    title: str | None = None  # the feed's title, when its body was parsed


def _voided(report: PollReport) -> PollReport:
    """The report of a poll whose commit ``forget`` voided: nothing was stored or
    queued, and the feed's next poll records a baseline."""
    log.info("feed.forgotten_during_poll", feed=report.feed)
    return dataclasses.replace(
        report,
        new=0,
        updated=0,
        alerts=[],
        flood=0,
        warnings=(*report.warnings, "forgotten during this poll: the next poll records a baseline"),
    )


def _as_polled(record: FeedRecord, report: PollReport, now: datetime) -> FeedRecord:
    """What a dry run's poll would have recorded of the feed (it wrote nothing)."""
    if report.result == "error":
        return as_recorded(record, now, ok=False, error=report.error or "internal error")
    if report.result != "ok":  # a 304 or the same bytes: the title stays
        return as_recorded(record, now, ok=True, title=record.title)
    new_entry = report.new > 0 or report.baseline
    return as_recorded(record, now, ok=True, new_entry=new_entry, title=report.title)


def _reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _last_body_applies(record: FeedRecord, feed: FeedConfig) -> bool:
    """Whether what the state knows of the feed's last body (its validators, its digest,
    the entries it committed) is about this URL: a feed whose `url` was edited starts
    from a full fetch, parse and comparison."""
    return record.baselined and record.url == feed.url


class _Failure(NamedTuple):
    """A failed poll: its write (None: a dry run), its report, its error count; recorded
    here (a body worker) or through the group commit (the event loop)."""

    write: Callable[[], None] | None
    report: PollReport
    errors: int

    def logged(self) -> PollReport:
        r = self.report
        log.warning(
            "feed.failed", feed=r.feed, status=r.http_status, error=r.error, errors=self.errors
        )
        return r


class Poller:
    """Polls feeds of one config against one store; `dry_run` computes but writes nothing."""

    def __init__(
        self,
        config: Config,
        store: Store,
        fetcher: Fetcher | None,
        *,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
        dry_run: bool = False,
        parse_executor: Executor | None = None,
        parse: Callable[..., ParsedFeed] | None = None,
        prune_cache: bool = True,
        body_workers: BodyHandler | None = None,
        records: dict[str, FeedRecord] | None = None,
    ) -> None:
        """``parse``: a parser in place of ``parse.parse_body`` (a test's; no cache).
        ``prune_cache``: remove the parse-cache files of feeds not in the config (a
        body worker's poller does not). ``body_workers``: where a fetched body is parsed,
        compared and stored (feedwatch.bodyworkers), instead of parsing it in
        ``parse_executor`` and storing it here. ``records``: the feeds' records as the
        state held them just before (a check reads them all at once), each used by the
        feed's next poll instead of a query: one read less a poll."""
        self.config = config
        self.store = store
        self.fetcher = fetcher
        self.clock = clock
        self.wait_clock = wait_clock(clock)  # what a next poll counts from
        self.rng = rng or random.Random()
        self.dry_run = dry_run
        self.parse_executor = parse_executor
        self.body_workers = body_workers
        self._records = records if records is not None else {}
        self.parse = parse
        # a feed's compiled rules, with the rules they were compiled from
        self._rules: dict[str, tuple[object, tuple[CompiledRule, ...]]] = {}
        # feeds whose body was logged holding several entries of one identity (once each)
        self._repeated: set[str] = set()
        # polls finishing within 10 ms share a COMMIT (feedwatch.store.group); a poll
        # with no other in progress commits at once
        self._polling = 0
        self.writes = GroupCommit(store, window=COMMIT_WINDOW, pending=lambda: self._polling)
        # feedwatch.partial's cache of parsed items, one file per feed; a dry run
        # reads it if it is there and writes nothing
        where = parsecache.directory(config.state)
        if dry_run:
            self.cache_dir = where if parsecache.usable(where) else None
        else:
            self.cache_dir = parsecache.prepare(where)
            if self.cache_dir is None:
                log.warning(
                    "parse.cache_off",
                    directory=where,
                    hint="it cannot be made, or is not ours alone to write: every changed"
                    " body is parsed in full",
                )
        if prune_cache:
            self._prune_cache()

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (same state): rules are compiled again as they are needed,
        and the cache files of feeds no longer in it go."""
        self.config = config
        self._rules.clear()
        self._prune_cache()

    def _prune_cache(self) -> None:
        if self.cache_dir is not None and not self.dry_run:
            parsecache.prune(self.cache_dir, (f.name for f in self.config.feeds))

    def _cache_file(self, feed: str) -> str | None:
        return None if self.cache_dir is None else parsecache.file_for(self.cache_dir, feed)

    def rules_for(self, feed: FeedConfig) -> tuple[CompiledRule, ...]:
        """The feed's rules compiled, once per config: a poll still under way when a
        reload came ends with the rules it began with, and a later poll (of the new
        config's feed) does not take those (keyed by name alone, they stayed until the
        next reload)."""
        cached = self._rules.get(feed.name)
        if cached is not None and cached[0] is feed.rules:
            return cached[1]
        from feedwatch import match

        rules = match.compile_rules(feed.rules)
        self._rules[feed.name] = (feed.rules, rules)
        return rules

    async def poll(self, feed: FeedConfig) -> PollReport:
        started = time.monotonic()
        self._polling += 1
        try:
            report = await self._poll(feed)
        except Exception as exc:  # a bug must not stop the other feeds
            if isinstance(exc, StateError):
                # the state file failed (full disk, I/O error): its message says what
                # to do; the poll's transaction was rolled back, nothing was lost
                log.error("feed.state_error", feed=feed.name, error=str(exc))
                report = PollReport(feed=feed.name, result="error", error=redact(str(exc)))
            else:
                log.exception("feed.poll_crashed", feed=feed.name)
                report = PollReport(
                    feed=feed.name, result="error", error=redact(f"internal error: {exc}")
                )
                cache = self._cache_file(feed.name)
                if cache is not None and not self.dry_run:
                    # a memo, whatever was wrong with it: the next poll parses in full
                    parsecache.remove(cache)
            if not self.dry_run:
                now = self.clock()
                try:
                    # backed off as any failure is: a feed that crashes every poll must
                    # not be polled at its interval for ever
                    known = self.store.feed(feed.name)
                    errors = (known.errors_at(feed.url) if known is not None else 0) + 1
                    await self.writes.run(
                        functools.partial(
                            self.store.record_failure,
                            feed.name,
                            feed.url,
                            now,
                            http_status=None,
                            error=report.error or "internal error",
                            next_poll=pacing.next_poll_after_failure(
                                self.wait_clock(), feed.settings, errors, self.rng
                            ),
                            masked_name=redact(feed.name),
                        )
                    )
                except StateError as again:
                    log.warning("feed.record_failed", feed=feed.name, error=str(again))
                except Exception:
                    log.exception("feed.record_failed", feed=feed.name)
        finally:
            self._polling -= 1
        if feed.settings.stale_after > 0:
            try:
                report.alerts.extend(await self._staleness(feed, report))
            except Exception:
                log.exception("feed.stale_check_failed", feed=feed.name)
        report.duration = time.monotonic() - started
        log.info(
            "feed.polled",
            feed=feed.name,
            result=report.result,
            status=report.http_status,
            error=report.error,
            new=report.new,
            updated=report.updated,
            alerts=len(report.alerts),
            duration=round(report.duration, 4),
        )
        return report

    async def _poll(self, feed: FeedConfig) -> PollReport:
        s = feed.settings
        record = (
            self._records.pop(feed.name, None)
            or self.store.feed(feed.name)
            or FeedRecord(name=feed.name)
        )
        known = _last_body_applies(record, feed)
        req = FetchRequest(
            url=feed.url,
            timeout=s.timeout,
            max_body=s.max_body,
            user_agent=s.user_agent,
            headers=tuple((k, _reveal(v)) for k, v in feed.headers),
            etag=record.etag if known else None,
            last_modified=record.last_modified if known else None,
            allow_private=feed.allow_private,
        )
        # the body keeps its place among the fetcher's bodies in hand until it is
        # parsed and stored: when parsing falls behind, fetching waits (bounded memory)
        assert self.fetcher is not None, "a poller without a fetcher only handles bodies"
        outcome, release = await self.fetcher.fetch_held(req)
        try:
            return await self._handle(feed, record, outcome)
        finally:
            release()

    async def _handle(
        self, feed: FeedConfig, record: FeedRecord, outcome: FetchOutcome
    ) -> PollReport:
        s = feed.settings
        now = self.clock()

        if isinstance(outcome, FetchFailed):
            return await self._recorded_here(
                self._failure(
                    feed,
                    record,
                    now,
                    outcome.reason,
                    status=outcome.status,
                    retry_after=outcome.retry_after,
                    gone=outcome.gone,
                    redirected_to=outcome.permanent_redirect,
                )
            )

        prune_before = now - timedelta(seconds=s.retention)
        next_poll = pacing.next_poll_after_success(self.wait_clock(), s, self.rng)
        digest = "" if isinstance(outcome, NotModified) else body_hash(outcome.body)
        if isinstance(outcome, NotModified) or (
            _last_body_applies(record, feed) and record.body_hash == digest
        ):
            if not self.dry_run:
                await self.writes.run(
                    functools.partial(
                        self.store.record_unchanged,
                        feed.name,
                        feed.url,
                        now,
                        http_status=outcome.status,
                        etag=outcome.etag or record.etag,
                        last_modified=outcome.last_modified or record.last_modified,
                        next_poll=next_poll,
                        redirected_to=outcome.permanent_redirect,
                        prune_before=prune_before,
                        masked_name=redact(feed.name),
                    )
                )
            return PollReport(
                feed=feed.name,
                result="not_modified" if isinstance(outcome, NotModified) else "unchanged",
                http_status=outcome.status,
                redirected_to=outcome.permanent_redirect,
            )

        fetched: Fetched = outcome
        job = BodyJob(feed.name, record, fetched, digest, next_poll, prune_before, now)
        if self.body_workers is not None and not self.dry_run:
            report = await self.body_workers.run(job)
            if report is not None:  # None: no worker left to take it
                return report
        call = self._parse_call(feed, job)
        if self.parse_executor is not None:
            loop = asyncio.get_running_loop()
            parsed = await loop.run_in_executor(self.parse_executor, call)
        else:
            parsed = call()
        failed = self._not_a_feed(feed, job, parsed)
        if failed is not None:
            return await self._recorded_here(failed)
        commit, report = self._after_parse(feed, job, parsed)
        if commit is not None:  # through the group commit: polls ending together share it
            try:
                queued = await self.writes.run(functools.partial(self.store.commit_poll, commit))
            except ForgottenMeanwhile:
                return _voided(report)
            report.alerts = self._queued(report.alerts, queued)
        return report

    def handle_body(self, job: BodyJob) -> PollReport:
        """A fetched body parsed, compared and stored, here and now: what a body worker
        (feedwatch.bodyworkers) does with each body it is handed."""
        feed = self.config.feed(job.feed)
        if feed is None:
            raise KeyError(f"feed {job.feed!r} is not in the config")
        parsed = self._parse_call(feed, job)()
        failed = self._not_a_feed(feed, job, parsed)
        if failed is not None:
            return self._recorded(failed)
        commit, report = self._after_parse(feed, job, parsed)
        if commit is not None:
            try:
                queued = self.store.commit_poll(commit)
            except ForgottenMeanwhile:
                return _voided(report)
            report.alerts = self._queued(report.alerts, queued)
        return report

    def _parse_call(self, feed: FeedConfig, job: BodyJob) -> Callable[[], ParsedFeed]:
        """The parse of ``job``'s body. The entries of items unchanged since the body the
        state last committed come back ``settled`` (model.Settled): the comparison
        takes them as seen without reading or comparing them."""
        s = feed.settings
        fetched, record = job.fetched, job.record
        basis = record.body_hash if _last_body_applies(record, feed) else None
        if self.parse is None:
            from feedwatch.partial import parse_cached

            # Only the items whose bytes changed since the last poll are parsed; the
            # result is parse_body's (feedwatch.partial). The worker reads and
            # replaces the feed's cache file itself (feedwatch.parsecache).
            return functools.partial(  # picklable: a worker process may run it
                parse_cached,
                fetched.body,
                dict(fetched.headers),
                url=fetched.url,
                max_entries=s.max_entries,
                cache_file=self._cache_file(feed.name),
                write=not self.dry_run,
                digest=job.digest,
                basis=basis,
            )
        # a parser injected by a test: no cache
        return functools.partial(
            self.parse,
            fetched.body,
            dict(fetched.headers),
            url=fetched.url,
            max_entries=s.max_entries,
        )

    def _not_a_feed(self, feed: FeedConfig, job: BodyJob, parsed: ParsedFeed) -> _Failure | None:
        """A body that holds no feed: the failure to record."""
        if parsed.is_feed or parsed.entries:
            return None
        from feedwatch.discover import page_problem  # html.parser: ~3 ms, on failure only

        fetched = job.fetched
        why = "; ".join(parsed.warnings) or "no feed found in the body"
        ctype = fetched.headers.get("content-type", "")
        reason = page_problem(fetched.body, fetched.url, ctype) or (
            f"not a feed ({ctype or 'no content type'}): {why}"
        )
        return self._failure(
            feed,
            job.record,
            job.fetched_at,
            reason,
            status=fetched.status,
            redirected_to=fetched.permanent_redirect,
        )

    def _after_parse(
        self, feed: FeedConfig, job: BodyJob, parsed: ParsedFeed
    ) -> tuple[PollCommit | None, PollReport]:
        """The commit to make (None: a dry run) and the poll's report, whose alerts are
        all of them until the commit says which it queued (``_queued``). A body that
        holds no feed is the caller's (``_not_a_feed``)."""
        s = feed.settings
        record, fetched = job.record, job.fetched
        now = job.fetched_at
        for w in parsed.warnings:
            (log.info if only_a_note(w) else log.warning)(
                "feed.parse_warning", feed=feed.name, warning=w
            )

        keys = parsed.keys
        if keys is None or len(keys) != len(parsed.entries):
            keys = tuple(entry_keys(e) for e in parsed.entries)
        # only the stored entries this body can match, not all the feed has kept, nor
        # those of its settled entries (unchanged since the body the state holds); a
        # baselined feed has stored entries (else, or if they went, every row is read)
        had_rows = record.baselined
        settled = parsed.settled  # the parse was told the body the state holds
        bases = id_bases(fetched.url, fetched.headers, record.url)
        need = stored_needed(
            s,
            record.identity,
            keys,
            baselined=record.baselined,
            has_rows=had_rows,
            settled=settled,
            bases=bases,
        )
        has_rows: bool | None = None  # None: every stored entry is read
        if need is None:
            stored = self.store.entries(feed.name)
        else:
            has_rows, stored, settled_ok = self.store.entries_matching(feed.name, need)
            if not settled_ok:
                # the state lost rows of its own last body (edited by hand, restored in
                # part): those entries are compared, so a missing one is new again
                log.warning("feed.state_incoherent", feed=feed.name, entries=len(need.settled))
                settled = None
            if has_rows != had_rows or not settled_ok:  # rows came or went meanwhile
                stored, has_rows = self.store.entries(feed.name), None
        # rows that left the body longer than `retention` ago are forgotten, though this
        # commit is the first to prune them (no successful poll since they expired)
        stored = within_retention(stored, job.prune_before)
        result = diff(
            feed.name,
            stored,
            parsed.entries,
            settings=s,
            identity=record.identity,
            baselined=record.baselined,
            now=now,
            keys=keys,
            has_rows=has_rows,
            settled=settled,
            bases=bases,
            previous=record.last_success,
        )
        alerts = self._alerts(feed, parsed.title, result, now, job.digest)
        # A body cut short keeps no validators and no digest: the server may give the
        # whole body the same ETag, and a 304 (or the same bytes, taken as unchanged)
        # would then never show what the cut left out.
        whole = not parsed.cut_short
        commit = PollCommit(
            feed=feed.name,
            url=feed.url,
            now=now,
            http_status=fetched.status,
            etag=fetched.etag if whole else None,
            last_modified=fetched.last_modified if whole else None,
            body_hash=job.digest if whole else None,
            title=parsed.title,
            identity=result.identity,
            upserts=result.kept + result.upserts,
            touched=result.touched,
            rekeys=result.rekeys,
            alerts=tuple(alerts),
            prune_before=job.prune_before,
            alerts_before=now - timedelta(seconds=self.config.defaults.retention),
            next_poll=job.next_poll,
            redirected_to=fetched.permanent_redirect,
            had_new_entry=result.new > 0 or result.baseline,
            baselined=record.baselined,
            # the name as it shows, for when the feed has left the config and its ${VAR}
            # values are no longer known for secrets (every poll's write stores it)
            masked_name=redact(feed.name),
        )
        if result.churn:
            log.info("feed.timestamp_churn", feed=feed.name, entries=len(parsed.entries))
        if result.quiet:
            # (once, at the upgrade from a release that kept such entries as one: a
            # recording new in this body did not alert, docs/change-detection.md)
            log.warning("feed.told_apart", feed=feed.name, entries=result.quiet)
        if result.duplicates and (result.repeated_new or feed.name not in self._repeated):
            # of several entries with one identity one is compared, the others neither
            # compared nor alerted (SPEC 4): a new one among them is lost. A warning (a
            # cron `-q check` mails it) where such entries are met for the first time
            # (an identity not stored before), so once, not at every poll; else an
            # info, once per process
            self._repeated.add(feed.name)
            (log.warning if result.repeated_new else log.info)(
                "feed.repeated_identity",
                feed=feed.name,
                entries=result.duplicates,
                policy=result.identity.policy,
            )
        if fetched.permanent_redirect:
            log.warning(
                "feed.redirected", feed=feed.name, url=feed.url, to=fetched.permanent_redirect
            )
        if self.dry_run:
            # what the commit would queue: not an alert recorded before (an entry
            # forgotten and seen again makes the same ids), nor a duplicate claimed
            if alerts:
                known = self.store.recorded_alerts([a.id for a in alerts], commit.alerts_before)
                alerts = [a for a in alerts if a.id not in known]
            alerts = self._left_by_claims(alerts, committed=False, expired=commit.alerts_before)
        return (None if self.dry_run else commit), PollReport(
            feed=feed.name,
            result="ok",
            http_status=fetched.status,
            new=result.new,
            updated=result.updated,
            alerts=alerts,
            warnings=parsed.warnings,
            flood=result.flood,
            baseline=result.baseline,
            redirected_to=fetched.permanent_redirect,
            title=parsed.title,
        )

    async def stale_check(self, feed: FeedConfig) -> list[Alert]:
        """The `stale` notice of a feed that is not polled because it answered 410 Gone
        or its server's Retry-After holds, once it is due: it does not succeed meanwhile,
        so it is judged as a failing feed is (its next poll, after the Retry-After or
        `check --feed`, `forget` or a new url, judges a recovery)."""
        if feed.settings.stale_after <= 0:
            return []
        try:
            return await self._staleness(feed, None)
        except Exception:
            log.exception("feed.stale_check_failed", feed=feed.name)
            return []

    async def _staleness(self, feed: FeedConfig, report: PollReport | None) -> list[Alert]:
        """``report``: the poll just made (None: none, the feed is gone or held off). The
        notice is queued through the group commit (a state locked elsewhere: the loop runs)."""
        record = self.store.feed(feed.name)
        if record is None:
            return []
        now = self.clock()
        ahead = ahead_of_clock(record, now)
        if ahead:
            # stored by a clock that was ahead: read as now (staleness.as_of), and kept
            # so, once: left a year ahead, the feed could not look stale for a year
            log.warning(
                "feed.clock_was_ahead",
                feed=feed.name,
                times={f: format_time(getattr(record, f)) for f in ahead},
                hint="stored by a clock that was ahead; counted from now",
            )
            if not self.dry_run:
                await self.writes.run(functools.partial(self.store.pull_back_times, feed.name, now))
        if self.dry_run and report is not None:
            record = _as_polled(record, report, now)
        due = stale_notice(record, now, feed.settings.stale_after)
        if due is None:
            return []
        kind, message, key = due
        notice = build_notice(feed, record.title, kind, message, now, key=key)
        if self.dry_run:
            # the notice the real run would queue: not one already recorded
            return [] if self.store.recorded_alerts([notice.id]) else [notice]
        queued = await self.writes.run(
            functools.partial(
                self.store.queue_notices, [notice], stale_notified=kind == "stale", now=now
            )
        )
        log.warning(
            "feed.stale" if kind == "stale" else "feed.recovered", feed=feed.name, message=message
        )
        return [notice] if notice.id in queued else []

    def _alerts(
        self,
        feed: FeedConfig,
        title: str | None,
        result: DiffResult,
        now: datetime,
        body_digest: str,
    ) -> list[Alert]:
        from feedwatch import match

        s = feed.settings
        rules = self.rules_for(feed)
        # this poll's regex time, all entries together: matching holds the event loop
        budget = match.RegexBudget(feed.name)
        alerts: list[Alert] = []
        for change in result.changes:
            if change.kind not in s.notify_on:
                continue
            if s.max_age > 0:
                when = change.entry.published or change.entry.updated
                if when is not None and (now - when).total_seconds() > s.max_age:
                    continue
            ok, matched = match.evaluate(rules, change.entry, budget)
            if not ok:
                continue
            aid = alert_id(
                feed.name,
                change.identity,
                change.kind,
                change.fingerprint,
                change.entry.published,
                change.entry.updated,
            )
            alert = build_alert(feed, title, change, matched, now, aid)
            if alert.sinks or not self.config.sinks:
                alerts.append(alert)
        if result.flood:
            alerts.append(
                build_notice(
                    feed,
                    title,
                    "flood",
                    f"{result.flood} new entries appeared at once in feed {feed.name!r} "
                    f"(more than flood_limit = {s.flood_limit}); they were recorded "
                    "without an alert each (a site migration or an id change?)",
                    now,
                    key=body_digest,
                )
            )
        return alerts

    def _recorded(self, failure: _Failure) -> PollReport:
        """A failed poll recorded here and now (a body worker's)."""
        if failure.write is not None:
            failure.write()
        return failure.logged()

    async def _recorded_here(self, failure: _Failure) -> PollReport:
        """A failed poll recorded through the group commit: on the event loop, a state
        locked by another process is waited for with the loop running."""
        if failure.write is not None:
            await self.writes.run(failure.write)
        return failure.logged()

    def _failure(
        self,
        feed: FeedConfig,
        record: FeedRecord,
        now: datetime,
        reason: str,
        *,
        status: int | None,
        retry_after: float | None = None,
        gone: bool = False,
        redirected_to: str | None = None,
    ) -> _Failure:
        """A failed poll: its write (None: a dry run), its report, its error count."""
        # stored, logged, shown by `check` and `status`, quoted by a stale notice: a
        # secret the config expanded into the URL (its host, say) is masked once, here
        reason = redact(reason)
        errors = record.errors_at(feed.url) + 1  # (a new url starts its own backoff)
        since = self.wait_clock()
        next_poll = pacing.next_poll_after_failure(
            since, feed.settings, errors, self.rng, retry_after=retry_after
        )
        retry_until = since + timedelta(seconds=retry_after) if retry_after else None
        if retry_until is not None:
            retry_until = min(retry_until, since + timedelta(seconds=pacing.MAX_RETRY_AFTER))
        write = None
        if not self.dry_run:
            write = functools.partial(
                self.store.record_failure,
                feed.name,
                feed.url,
                now,
                http_status=status,
                error=reason,
                next_poll=None if gone else next_poll,
                retry_after_until=retry_until,
                gone=gone,
                redirected_to=redirected_to,
                masked_name=redact(feed.name),
            )
        report = PollReport(
            feed=feed.name,
            result="error",
            http_status=status,
            error=reason,
            retry_after_until=retry_until,
            gone=gone,
            redirected_to=redirected_to,
        )
        return _Failure(write, report, errors)

    def _queued(self, alerts: list[Alert], queued: list[str]) -> list[Alert]:
        """The alerts a commit queued (one already known from an earlier poll is not),
        each with the sinks it went to."""
        ids = set(queued)
        return self._left_by_claims([a for a in alerts if a.id in ids], committed=True)

    def _left_by_claims(
        self, alerts: list[Alert], *, committed: bool, expired: datetime | None = None
    ) -> list[Alert]:
        """Each alert with a duplicate key (``duplicates = "skip"``) with the sinks that
        key leaves it: once committed, those it claimed; in a dry run, those no alert has
        claimed yet, or only its own expired one (none left: the alert is dropped, as the commit would send it
        nowhere)."""
        keys = [a.duplicate_key for a in alerts if a.duplicate_key is not None and a.sinks]
        if not keys:
            return alerts
        claims = self.store.duplicate_claims(keys, expired)  # (less those a commit drops)
        out: list[Alert] = []
        for a in alerts:
            if a.duplicate_key is not None and a.sinks:
                owners = claims.get(a.duplicate_key, {})
                # in a dry run, a claim of its own id is an expired alert's, which the
                # commit drops with it (recorded_alerts left out those it keeps)
                mine = (a.id,) if committed else (None, a.id)
                sinks = tuple(x for x in a.sinks if owners.get(x) in mine)
                if not sinks:
                    continue
                a = dataclasses.replace(a, sinks=sinks)
            out.append(a)
        return out
