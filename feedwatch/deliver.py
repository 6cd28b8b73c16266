"""What happens when a sink fails: the outbox dispatcher.

    for each sink with something due, its pending deliveries oldest first:
        failed before and given up (older than give_up_after)?  -> dead
        sink no longer configured?  -> stays pending (visible) until given up, then dead
        digest sink and oldest not yet `digest` old?  -> wait
        in backoff (unless forced, as by `check`)?  -> it and every newer one wait
        send (one, or a digest of all: in parts, oldest first, when the sink's
              receiver would refuse it whole)  -> delivered | retry later (backoff) | dead
              (a digest refused for its size anyway: again as two halves, each marked
              as it goes, until each is taken or one too big alone is dead; the second
              half cut first, as a digest is, to what the receiver took by then)
        a transient failure stops that sink for this round (order is kept);
        a permanent one concerns that delivery only: the next ones still go

A delivery some recipients took while the others were deferred or refused (an email
server answering 4xx or 5xx to some RCPTs) is owed to those alone from then on
(``Delivery.recipients_left``): its retry, or `redeliver` once it is dead, goes to
them alone, so the ones that took it never get it again. Such a delivery is sent on
its own (a digest: with the others owed to the same recipients) and holds back none
of the sink's later alerts, whatever its retry's outcome: the recipient that deferred
may get a later alert before the one it deferred (a server really down fails the next
later alert's own send too, which holds back the rest as any failure does).

The state is the queue: a crash between "sent" and "marked delivered" re-sends
with the same id (at least once), never a different one. A mark the state cannot take
(SQLite locked by another process past the busy limit, PostgreSQL out of reach) is kept
in memory (``_Unmarked``) and stored first at the next run; until it is, that sink sends
nothing (its queue is held), so a delivery sent is never sent again because its mark
waits. A stop tries once more to store them (``store_unmarked_at_stop``); only a crash,
or a state still locked then, loses such a mark: sent again, at least once.

Several instances on one PostgreSQL state: a delivery is sent only under a claim
(``store.claim_deliveries``) that only a pending row can give, so each is sent by one
instance, and never again once marked delivered. A delivery claimed by another
instance stops this instance's run of that sink (order is kept: nothing overtakes
it). A claim ends with the mark; a send interrupted gives it back; a dead
instance's claims expire after ``LEASE_SECONDS`` and another instance sends them.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import structlog

from feedwatch import metrics, pacing
from feedwatch.clock import Clock, system_clock
from feedwatch.model import Config
from feedwatch.redact import redact
from feedwatch.sinks.base import SendResult, Sink
from feedwatch.store.base import (
    LEASE_RENEW,
    LEASE_SECONDS,
    PENDING_PAGE,
    Delivery,
    StateError,
    Store,
    alert_feed_name,
    log_state_failure,
    new_owner,
)
from feedwatch.store.group import GroupCommit

log = structlog.get_logger("feedwatch.deliver")

# partial: some recipients took it, the others' retry waits (it holds back no later alert)
Outcome = Literal["delivered", "dead", "retry", "held", "partial"]


@dataclass
class DispatchReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    waiting: int = 0  # held: for a digest, a removed sink, or behind one that waits to retry
    # sent (counted above), but the state could not take the mark: kept in memory
    unmarked: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class _Unmarked:
    """How a send went, which the state could not take (locked elsewhere past the busy
    limit, out of reach): stored at the next run before anything is sent."""

    sink: str
    ids: tuple[str, ...]
    mark: Callable[[], None]
    what: str  # delivered | retry | dead
    error: str  # why the state did not take it


class Dispatcher:
    def __init__(
        self,
        config: Config,
        store: Store,
        sinks: Mapping[str, Sink],
        *,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
        owner: str | None = None,
        page: int = PENDING_PAGE,
    ) -> None:
        self.config = config
        self.store = store
        self.sinks = dict(sinks)
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or new_owner()  # whose delivery claims these are
        self.page = page  # pending deliveries read (and held) at once, per sink
        self._lock = asyncio.Lock()
        self._stopped = False
        # the marks go through a group commit: while another process holds SQLite's
        # write lock they wait with the event loop running (feedwatch.store.group)
        self.writes = GroupCommit(store)
        # marks the state could not take, oldest first: their sinks send nothing until
        # they are stored (a sent alert is not sent again because its mark waits)
        self._unmarked: list[_Unmarked] = []

    def stop(self) -> None:
        """The daemon stops: the sends under way end as usual, no other starts (what
        was not sent stays pending, in order, for the next run)."""
        self._stopped = True

    async def run_once(
        self, *, force: bool = False, report: DispatchReport | None = None
    ) -> DispatchReport:
        """Send what is due; ``force`` (check, a manual request) ignores the retry backoff.
        ``report``: counted into as it goes (what was sent and marked before a stop
        cancelled the run is in it all the same)."""
        async with self._lock:
            report = DispatchReport() if report is None else report
            await self._store_unmarked()
            # A sink with something due: go through all of its queue, so that a newer
            # alert never overtakes an older one that waits for its retry.
            names = self.store.pending_sinks(due_at=None if force else self.clock())
            keepalive = asyncio.get_running_loop().create_task(self._renew_claims())
            try:
                await asyncio.gather(*(self._run_sink(name, report, force) for name in names))
            finally:
                keepalive.cancel()
            return report

    async def store_unmarked(self, report: DispatchReport) -> None:
        """The end of a run that no other follows (`check`): one more try at storing the
        marks the state did not take; each still owed is a failure of ``report`` (the
        process ends, the mark is lost: the next run sends that alert again)."""
        async with self._lock:
            await self._store_unmarked()
            report.unmarked = sum(len(u.ids) for u in self._unmarked)
            for u in self._unmarked:
                n = len(u.ids)
                report.failures.append(
                    f"{u.sink}: {n} alert{'s' if n != 1 else ''} sent but not marked"
                    f" {'for retry' if u.what == 'retry' else u.what}"
                    f" ({u.error}): the next run sends {'them' if n != 1 else 'it'} again"
                )

    async def store_unmarked_at_stop(self) -> None:
        """A stop (the sends under way have ended): one more try at storing the marks the
        state did not take, waiting for a state locked elsewhere as any write does (the
        busy limit at most, the event loop running: a second signal cuts it short).
        Each still not stored dies with the process: logged (``delivery.unmarked_lost``,
        its sink and alerts), as the next start sends those alerts again."""
        async with self._lock:
            try:
                await self._store_unmarked()
            finally:
                for u in self._unmarked:
                    log.error(
                        "delivery.unmarked_lost",
                        sink=u.sink,
                        alerts=list(u.ids),
                        mark=u.what,
                        error=u.error,
                        hint="sent, but the state still did not take the mark as feedwatch"
                        " stopped: the next start sends these alerts again",
                    )

    async def _store_unmarked(self) -> None:
        """Store the marks the state did not take before (together: one batch); those it
        still does not take stay owed, and their sinks send nothing this run."""
        owed, self._unmarked = self._unmarked, []
        if not owed:
            return
        try:
            results = await asyncio.gather(
                *(self.writes.run(u.mark) for u in owed), return_exceptions=True
            )
        except BaseException:  # cancelled (a stop): still owed, as before
            self._unmarked[:0] = owed
            raise
        for u, result in zip(owed, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, StateError):
                    log.error(
                        "delivery.mark_failed", sink=u.sink, alerts=list(u.ids), exc_info=result
                    )
                u.error = redact(str(result))
                self._unmarked.append(u)
                log.warning(
                    "delivery.mark_pending",
                    sink=u.sink,
                    alerts=list(u.ids),
                    mark=u.what,
                    error=u.error,
                    hint="sent, not marked yet: the sink sends nothing until the mark is stored",
                )
            else:
                log.info("delivery.mark_stored", sink=u.sink, alerts=list(u.ids), mark=u.what)

    def _owes(self, sink: str) -> bool:
        return any(u.sink == sink for u in self._unmarked)

    async def _renew_claims(self) -> None:
        """While sending, keep this instance's claims alive (a slow send outlasting its
        claim would let another instance send the same delivery)."""
        while True:
            await asyncio.sleep(LEASE_RENEW)
            try:
                self.store.renew_leases(self.owner, self.clock(), LEASE_SECONDS)
            except Exception as exc:
                log.warning("delivery.renew_failed", error=str(exc))

    async def _run_sink(self, name: str, report: DispatchReport, force: bool) -> None:
        now = self.clock()
        sink = self.sinks.get(name)
        if self._owes(name):
            # a mark of this sink waits in memory (the state did not take it): nothing
            # goes before it is stored, neither again nor after it (order is kept)
            for page in self.store.pending_pages(name, page=self.page):
                report.waiting += len(page)
            return
        live = self._live(name, sink, now, report)
        if sink is None:
            report.waiting += len([d async for d in live])
            return
        cfg = self.config.sinks.get(name)
        digest = cfg.digest if cfg is not None else 0.0
        if digest > 0 and sink.supports_digest:
            # A digest is one message: all of the queue at once; but one message goes to
            # one set of recipients, so the deliveries owed to some recipients only
            # (partly delivered) go as digests of their own, one per set.
            groups: dict[tuple[str, ...] | None, list[Delivery]] = {}
            async for d in live:
                groups.setdefault(d.recipients_left, []).append(d)
            for items in groups.values():
                if self._owes(name):  # a digest's mark the state did not take
                    report.waiting += len(items)
                else:
                    await self._digest(sink, items, digest, now, force, report)
            return
        # A sink that can take several alerts in one go (jsonl: one write, one fsync) gets
        # them in order, in batches that succeed or fail together. The queue is read a page
        # at a time; a batch may span two pages.
        batch_size = max(1, int(getattr(sink, "max_batch", 1)))
        batch: list[Delivery] = []
        stopped = False
        async for d in live:
            alone = d.recipients_left is not None  # partly delivered: owed to some only
            if (
                not stopped
                and batch
                and (alone or len(batch) >= batch_size or not (force or _due(d, now)))
            ):
                stopped = await self._send(sink, batch, report) in ("retry", "held")
                # the sink is unwell, or another instance sends this one: later alerts
                # wait, so none overtakes it
                batch = []
            if alone:
                # sent on its own when due; waiting for its retry, or failing again, it
                # holds back no later alert (which its recipients took, or may take,
                # before it); only a stop, a claim elsewhere or a mark not stored does
                if stopped or not (force or _due(d, now)):
                    report.waiting += 1
                else:
                    stopped = await self._send(sink, [d], report) == "held"
                continue
            if not stopped and not force and not _due(d, now):
                stopped = True  # in backoff: it and every newer alert wait (oldest first)
            if stopped:
                report.waiting += 1  # (reading on still gives up the ones too old)
                continue
            batch.append(d)
        if batch and not stopped:
            await self._send(sink, batch, report)

    async def _digest(
        self,
        sink: Sink,
        items: list[Delivery],
        digest: float,
        now: datetime,
        force: bool,
        report: DispatchReport,
    ) -> None:
        """Send ``items`` (owed to the same recipients) as a digest once it is due."""
        oldest = min(d.created_at for d in items)
        if (now - oldest).total_seconds() < digest:
            report.waiting += len(items)
            return
        if not force and not all(_due(d, now) for d in items):
            report.waiting += len(items)
            return  # a failed digest waits for its retry; newer alerts join it then
        # Too big for one message, the batch goes as several digests, oldest first,
        # each marked as it goes: a stop or a crash between two sends the next run
        # only those not marked yet.
        parts = await self._digest_parts(sink, items)
        for i, part in enumerate(parts):
            if await self._send(sink, part, report) in ("retry", "held"):
                report.waiting += sum(len(p) for p in parts[i + 1 :])
                break  # the sink is unwell: the later parts wait (order is kept)

    async def _live(
        self, name: str, sink: Sink | None, now: datetime, report: DispatchReport
    ) -> AsyncIterator[Delivery]:
        """``name``'s queue, oldest first, without the deliveries given up (marked dead)."""
        for page in self.store.pending_pages(name, page=self.page):
            for d in page:
                # Only a delivery that has failed can be given up: a fresh or redelivered
                # one gets a try. One for a sink no longer configured can never be tried:
                # it waits, visible, until given up.
                if (d.attempts > 0 or sink is None) and pacing.is_given_up(
                    d.created_at, now, self.config.give_up_after
                ):
                    await self._give_up(name, sink, d, now, report)
                else:
                    yield d

    async def _digest_parts(self, sink: Sink, items: list[Delivery]) -> list[list[Delivery]]:
        """The held batch as the sink cuts it into digests that each fit its receiver."""
        cut = getattr(sink, "digest_parts", None)
        if cut is None:
            return [items]
        try:
            parts = [list(p) for p in await cut(items) if p]
        except Exception:  # a sink bug: the batch as one digest, as before there were parts
            log.exception("delivery.digest_parts_failed", sink=sink.name)
            return [items]
        if [d.alert_id for p in parts for d in p] != [d.alert_id for d in items]:
            log.error("delivery.digest_parts_wrong", sink=sink.name)  # never lose or reorder
            return [items]
        return parts

    async def _give_up(
        self, name: str, sink: Sink | None, d: Delivery, now: datetime, report: DispatchReport
    ) -> None:
        age = _human(self.config.give_up_after)
        if sink is None:
            reason = f"gave up: sink {name!r} is no longer configured ({age} after the alert was created)"
        else:
            reason = f"gave up: still failing {age} after the alert was created"
        if d.last_error:
            reason += f" (last error: {d.last_error})"
        await self.writes.run(
            functools.partial(
                self.store.mark_dead, name, [d.alert_id], now, error=reason, attempted=False
            )
        )
        report.dead += 1
        log.error("delivery.dead", sink=name, alert=d.alert_id, feed=self._feed(d), error=reason)

    def _feed(self, d: Delivery) -> str:
        """The alert's feed as a log line names it (a feed since removed from the config,
        whose alerts still go out, as their payload does: decoded only then)."""
        return alert_feed_name(d.feed, d.payload, in_config=self.config.feed(d.feed) is not None)

    async def _send(self, sink: Sink, batch: Sequence[Delivery], report: DispatchReport) -> Outcome:
        if self._stopped or self.sinks.get(sink.name) is not sink:
            # a stop, or a reload replaced this sink: this sink's run ends here, as for
            # a claim held elsewhere; the rest waits for a run with the new sink
            return "held"
        ids = [d.alert_id for d in batch]
        granted = self.store.claim_deliveries(
            sink.name, ids, self.owner, self.clock(), LEASE_SECONDS
        )
        if len(granted) != len(ids):
            # another instance sends (or has sent) one of them: leave them all to it
            await self._release(sink, granted)
            log.debug("delivery.claimed_elsewhere", sink=sink.name, alerts=ids)
            return "held"
        return await self._attempt(sink, batch, report)

    async def _attempt(
        self, sink: Sink, batch: Sequence[Delivery], report: DispatchReport
    ) -> Outcome:
        """Send ``batch`` (claimed) and mark how it went; a message of several alerts that
        the receiver refused for its size goes again as two halves (``_halves``)."""
        ids = [d.alert_id for d in batch]
        try:
            try:
                result = await sink.send(batch)
            except Exception as exc:  # a sink bug is a transient failure, never a lost alert
                log.exception("delivery.sink_crashed", sink=sink.name)
                result = SendResult.transient(
                    f"internal error in sink: {type(exc).__name__}: {exc}"
                )
        except BaseException:  # cancelled (a stop): give the claims back, pending as before
            await self._release(sink, ids, interrupted=True)
            raise
        if not result.ok and result.too_big and len(batch) > 1:
            return await self._halves(sink, batch, result, report)
        now = self.clock()
        if result.ok:
            stored = await self._mark(
                sink,
                ids,
                functools.partial(self.store.mark_delivered, sink.name, ids, now),
                "delivered",
                report,
            )
            metrics.DELIVERIES.inc(len(ids), sink=sink.name, result="delivered")
            report.delivered += len(ids)
            for d in batch:
                log.info(
                    "alert.delivered",
                    sink=sink.name,
                    alert=d.alert_id,
                    feed=self._feed(d),
                    kind=d.kind,
                )
            return "delivered" if stored else "held"
        # A sink scrubs its own secrets; this also masks any configured secret that a
        # receiver or a program echoed back (it would reach the state, `check` and logs).
        error = redact(result.error or "failed")
        left = result.recipients_left  # some took it: the others are owed it from now on
        if result.permanent:
            stored = await self._mark(
                sink,
                ids,
                functools.partial(
                    self.store.mark_dead, sink.name, ids, now, error=error, recipients_left=left
                ),
                "dead",
                report,
            )
            metrics.DELIVERIES.inc(len(ids), sink=sink.name, result="dead")
            report.dead += len(ids)
            report.failures.append(f"{sink.name}: {error}")
            log.error(
                "delivery.dead",
                sink=sink.name,
                alerts=ids,
                error=error,
                **({"recipients_left": list(left)} if left is not None else {}),
            )
            return "dead" if stored else "held"
        attempts = max(d.attempts for d in batch) + 1
        retry_at = pacing.delivery_retry_at(now, attempts, self.rng, retry_after=result.retry_after)
        stored = await self._mark(
            sink,
            ids,
            functools.partial(
                self.store.mark_retry,
                sink.name,
                ids,
                now,
                error=error,
                next_attempt=retry_at,
                recipients_left=left,
            ),
            "retry",
            report,
        )
        metrics.DELIVERIES.inc(len(ids), sink=sink.name, result="retry")
        report.retried += len(ids)
        report.failures.append(f"{sink.name}: {error}")
        log.warning(
            "delivery.failed",
            sink=sink.name,
            alerts=ids,
            error=error,
            attempts=attempts,
            retry_in=round((retry_at - now).total_seconds()),
            **({"recipients_left": list(left)} if left is not None else {}),
        )
        if not stored:
            return "held"
        return "retry" if left is None else "partial"

    async def _mark(
        self,
        sink: Sink,
        ids: Sequence[str],
        mark: Callable[[], None],
        what: str,
        report: DispatchReport,
    ) -> bool:
        """How a send went, stored through the group commit: True once stored. One the
        state does not take (locked elsewhere past the busy limit, out of reach): kept
        in memory, stored first at the next run, the sink holding its queue till then
        (False: this run of the sink ends here). A stop cancelling the run while the
        mark waits: the mark is not made, the claims go back and the alerts stay
        pending (sent again: at least once, never lost)."""
        try:
            await self.writes.run(mark)
        except asyncio.CancelledError:
            await self._release(sink, ids)
            raise
        except StateError as exc:
            error = redact(str(exc))
            self._unmarked.append(_Unmarked(sink.name, tuple(ids), mark, what, error))
            report.unmarked += len(ids)
            log.error(
                "delivery.mark_failed",
                sink=sink.name,
                alerts=list(ids),
                mark=what,
                error=error,
                hint="sent; the mark is kept in memory and stored at the next delivery"
                " round (or as feedwatch stops), the sink sending nothing till then"
                " (a crash meanwhile loses it: sent again)",
            )
            return False
        return True

    async def _halves(
        self, sink: Sink, batch: Sequence[Delivery], refused: SendResult, report: DispatchReport
    ) -> Outcome:
        """A message refused for its size (a receiver taking less than it announced, or
        announcing nothing): its alerts go again now in two halves, oldest first, each
        message marked as it goes and halved again if refused too. The first half goes as
        one message; the second as the sink cuts it (``_digest_parts``: to what its
        receiver took, which the first half taught it), so that it is not refused in
        turn. So each alert is delivered, or only one too big alone goes dead; none that
        the receiver took is sent again."""
        if self._stopped:  # a stop came during the refused send: nothing new starts
            await self._release(sink, [d.alert_id for d in batch])
            report.waiting += len(batch)
            return "held"
        cut = (len(batch) + 1) // 2
        log.info(
            "delivery.split",
            sink=sink.name,
            alerts=len(batch),
            halves=[cut, len(batch) - cut],
            error=redact(refused.error or ""),
        )
        left = list(batch)  # not sent yet, oldest first (claimed: given back if not sent)
        outcome: Outcome = "delivered"
        try:
            # The first half goes whole: it is what the receiver is asked next, as it
            # refused twice as much. The second goes cut first, as a held digest is, to
            # what the receiver is known to take by then (the first half taught the sink
            # how much it takes): sent whole, it would be refused in turn, and halved.
            for i, half in enumerate((list(batch[:cut]), list(batch[cut:]))):
                for part in [half] if i == 0 else await self._digest_parts(sink, half):
                    if self._stopped:
                        # the daemon stops: the rest waits (order is kept)
                        await self._release(sink, [d.alert_id for d in left])
                        report.waiting += len(left)
                        return "held"
                    del left[: len(part)]
                    sent = await self._attempt(sink, part, report)
                    if sent in ("retry", "held"):
                        # the sink is unwell: the rest waits (order is kept)
                        await self._release(sink, [d.alert_id for d in left])
                        report.waiting += len(left)
                        return sent
                    if sent != "delivered":
                        outcome = sent
        except BaseException:
            await self._release(sink, [d.alert_id for d in left])
            raise
        return outcome

    async def _release(self, sink: Sink, ids: Sequence[str], *, interrupted: bool = False) -> None:
        """Give back claims not settled by a mark (pending again). ``interrupted`` (a
        send a stop cut short) also notes that on them: on SQLite a write (only then:
        one instance has no claims), so it goes through the group commit, a state locked
        by another process waited for (at most the busy limit) with the event loop
        running. Not given back, they stay pending all the same."""
        if not ids:
            return
        release = functools.partial(
            self.store.release_deliveries, sink.name, list(ids), self.owner, interrupted=interrupted
        )
        try:
            if interrupted:
                await self.writes.run(release)
            else:
                release()
        except Exception as exc:
            log_state_failure(
                log,
                "delivery.release_failed",
                exc,
                f"they stay pending (a claim on them expires within {LEASE_SECONDS:g} s)",
                sink=sink.name,
            )

    async def retire(self, sinks: Sequence[Sink]) -> None:
        """Close sinks a reload replaced, once no run can be sending through them: a run
        takes its sinks as it starts and holds the lock to its end, so after the runs
        under way or waiting. (Closing one mid-send cut the request short: a webhook
        the receiver had got failed here, and its retry sent it a second time.)"""
        async with self._lock:
            pass
        for sink in sinks:
            try:
                await sink.aclose()
            except Exception:
                log.exception("sink.close_failed", sink=sink.name)

    async def aclose(self) -> None:
        for sink in self.sinks.values():
            try:
                await sink.aclose()
            except Exception:
                log.exception("sink.close_failed", sink=sink.name)


def _due(d: Delivery, now: datetime) -> bool:
    return d.next_attempt is None or d.next_attempt <= now


def _human(seconds: float) -> str:
    """A duration as the config writes it: ``3d``, ``1h30m``, ``90s`` -> ``1m30s``."""
    rest = max(0, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
