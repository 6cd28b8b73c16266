"""What both SQL stores say alike, written once: the reads, their rows as model
objects, and the writes whose SQL is the same in both dialects.

Why: sqlite.py and postgres.py differ in most of their writes (dialect, leases, NUL
bytes in text) and in the type of their time columns (integer microseconds against
TIMESTAMPTZ), but read the same columns into the same objects, and some writes are
the same statements. A store says what differs: its placeholder, its transactions,
its two time converters, how it spells "column in this list", and how it ensures a
feed row and queues alerts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from feedwatch.identity import normalize_link
from feedwatch.model import Alert, IdentityState, StoredEntry, StoredNeed
from feedwatch.payload import StoredPayload
from feedwatch.store.base import (
    AlertQuery,
    AlertRecord,
    Delivery,
    FeedRecord,
    ForgottenMeanwhile,
    Matching,
    SinkCounts,
)

_new = object.__new__  # a StoredEntry without its frozen __init__ (see ``entries``)

DELIVERY_COLS = (
    "d.alert_id, d.sink, a.feed, a.kind, a.payload, a.thread_id, a.created_at,"
    " d.attempts, d.next_attempt, d.status, d.last_error, d.delivered_at, d.recipients_left"
)


def recipients_to_db(recipients: Sequence[str]) -> str:
    """``Delivery.recipients_left`` as the deliveries table holds it: a JSON list."""
    return json.dumps(list(recipients))


def recipients_from_db(value: str | None) -> tuple[str, ...] | None:
    """``recipients_to_db`` read back; NULL (or a value not a list of strings): None,
    all of the sink's recipients."""
    if value is None:
        return None
    try:
        got = json.loads(value)
    except ValueError:
        return None
    if not isinstance(got, list) or not all(isinstance(a, str) for a in got):
        return None
    return tuple(got)


_FEED_COLS = (
    "SELECT f.name, f.url, f.title, f.etag, f.last_modified, f.body_hash, f.id_policy,"
    " f.id_candidate, f.baselined, f.last_poll, f.last_success, f.http_status, f.errors,"
    " f.last_error, f.next_poll, f.retry_after_until, f.gone, f.redirected_to,"
    " f.last_new_entry, f.stale_notified, f.masked_name,"
)
# With the count of each feed's entries (status, explain), or without: counting reads
# every entry's index row, ~50 ms for a state of 1M entries at the start of a `check`.
FEED_SELECT = _FEED_COLS + " (SELECT COUNT(*) FROM entries e WHERE e.feed = f.name) FROM feeds f"
FEED_SELECT_NO_COUNT = _FEED_COLS + " 0 FROM feeds f"
ENTRY_SELECT = (
    "SELECT identity, entry_id, link, title, summary, content, published, updated,"
    " fingerprint, first_seen, last_seen, new_alert_id, in_body FROM entries"
)


def link_key(link: str | None) -> str:
    """The ``link_key`` column of an entry whose ``link`` column holds ``link``: what
    ``diff`` compares a new entry's link with (``identity.normalize_link``), '' for none."""
    return normalize_link(link) or ""


def _read_all_up_to(body: int) -> int:
    """How many stored entries a feed with a body of ``body`` entries may keep for one
    range read of all of them to be the cheaper read (measured: with none kept beyond
    the body, the searches cost 1.4x the range read; with 1,000 kept, 1/16 of it)."""
    return 2 * body + 16


_ANY: Any = object()  # set_next_poll's ``was`` not given

# The most alerts one transaction of a prune looks at (``prune_batches``), and the most
# entries one transaction of ``drop_batches`` drops. Measured on a backlog of 1.5M
# alerts (docs/performance.md, "Pruning a backlog"): 2,000 alerts hold the daemon's
# loop ~0.15 s a transaction on SQLite (its indexes keyed by hashed ids: about a page
# written per alert and index), ~70 ms on PostgreSQL; 5,000 entries, 15 to 45 ms.
# Larger batches cost less in all, but hold the loop longer.
PRUNE_BATCH = 2_000
DROP_BATCH = 5_000

# What ``forget`` sets on a feed's row (its name appended): its next poll is a baseline.
# A feed stopped by a 410 is resumed: the 410 goes with its gone mark (its error count,
# last error, HTTP status; no next poll time: due at once), so `status` shows it due,
# not `error` (`--check` failing) until its next poll. An erring feed keeps its streak
# and backoff: it still fails. A `stale` notice of a failing feed (gone, or erring)
# stays noted: its next good poll sends the `recovered` (the way a feed stopped by a
# 410 comes back under the daemon), a failing one no repeat. A feed stale only for
# want of new entries is as it was: its baseline is no news, so no `recovered` (every
# right-hand side reads the old row).
_RESET_FEED = (
    "UPDATE feeds SET etag = NULL, last_modified = NULL, body_hash = NULL,"
    " id_policy = 'guid', id_candidate = NULL, baselined = FALSE, gone = FALSE,"
    " errors = CASE WHEN gone THEN 0 ELSE errors END,"
    " last_error = CASE WHEN gone THEN NULL ELSE last_error END,"
    " http_status = CASE WHEN gone THEN NULL ELSE http_status END,"
    " next_poll = CASE WHEN gone THEN NULL ELSE next_poll END,"
    " stale_notified = (stale_notified AND (gone OR errors > 0)) WHERE name = "
)


def kept_alert(p: str, table: str = "alerts") -> str:
    """SQL: the alert row ``table`` is one the prune keeps at the cut ``p`` (a poll's
    ``PollCommit.alerts_before``): made since, or with a delivery pending. What a poll's
    commit drops is NOT this (an alert of an id it makes again, or holding its story's
    claims); what a dry run and ``explain`` count as recorded, this."""
    return (
        f"({table}.created_at >= {p} OR EXISTS (SELECT 1 FROM deliveries d"
        f" WHERE d.alert_id = {table}.alert_id AND d.status = 'pending'))"
    )


class SharedReads:
    """The reads of feeds, entries, pending deliveries and their counts, for a store
    that gives:

    - ``P``: its driver's placeholder (``?`` or ``%s``);
    - ``_reading()``: a cursor in one read transaction;
    - ``_to_db`` / ``_from_db`` / ``_from_db_req``: a time to its column's type and
      back (``_from_db_req`` for columns that are never NULL);
    - ``_ids_in(column, ids)``: ``column`` in ``ids``, as (clause, arguments) pairs to
      run one after the other (SQLite caps a statement's parameters).
    """

    P: ClassVar[str] = "?"
    ROW_LOCK: ClassVar[str] = ""  # " FOR UPDATE" where writers are not serialised
    # the feeds no instance polls now (their lease, where there are leases, expired
    # before the time given: the same placeholder as the last poll's)
    UNLEASED: ClassVar[str] = ""
    SAME: ClassVar[str] = " IS "  # equal, NULL to NULL included

    def _ids_in(self, column: str, ids: Sequence[str]) -> Iterator[tuple[str, Sequence[Any]]]:
        raise NotImplementedError

    def _reading(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    @staticmethod
    def _to_db(dt: datetime | None) -> Any:
        raise NotImplementedError

    @staticmethod
    def _from_db(value: Any) -> datetime | None:
        raise NotImplementedError

    @staticmethod
    def _from_db_req(value: Any) -> datetime:
        raise NotImplementedError

    def _feed_record(self, r: Sequence[Any]) -> FeedRecord:
        dt = self._from_db
        return FeedRecord(
            name=r[0],
            url=r[1],
            title=r[2],
            etag=r[3],
            last_modified=r[4],
            body_hash=r[5],
            identity=IdentityState(policy=r[6], candidate=r[7]),
            baselined=bool(r[8]),
            last_poll=dt(r[9]),
            last_success=dt(r[10]),
            http_status=r[11],
            errors=r[12],
            last_error=r[13],
            next_poll=dt(r[14]),
            retry_after_until=dt(r[15]),
            gone=bool(r[16]),
            redirected_to=r[17],
            last_new_entry=dt(r[18]),
            stale_notified=bool(r[19]),
            masked_name=r[20],
            entries=int(r[21]),
        )

    def _delivery(self, r: Sequence[Any]) -> Delivery:
        payload: Mapping[str, Any] = StoredPayload(r[4])  # decoded where a sink reads it
        return Delivery(
            alert_id=r[0],
            sink=r[1],
            feed=r[2],
            kind=r[3],
            payload=payload,
            thread_id=r[5],
            created_at=self._from_db_req(r[6]),
            attempts=r[7],
            next_attempt=self._from_db(r[8]),
            status=r[9],
            last_error=r[10],
            delivered_at=self._from_db(r[11]),
            recipients_left=recipients_from_db(r[12]),
        )

    def feed(self, name: str, *, counts: bool = False) -> FeedRecord | None:
        select = FEED_SELECT if counts else FEED_SELECT_NO_COUNT
        with self._reading() as cur:
            row = cur.execute(f"{select} WHERE f.name = {self.P}", (name,)).fetchone()
        return None if row is None else self._feed_record(row)

    def feeds(self, *, counts: bool = False) -> dict[str, FeedRecord]:
        select = FEED_SELECT if counts else FEED_SELECT_NO_COUNT
        with self._reading() as cur:
            rows = cur.execute(select + " ORDER BY f.name").fetchall()
        return {r[0]: self._feed_record(r) for r in rows}

    def knows_feed(self, name: str) -> bool:
        p = self.P
        with self._reading() as cur:
            row = cur.execute(
                f"SELECT EXISTS (SELECT 1 FROM feeds WHERE name = {p})"
                f" OR EXISTS (SELECT 1 FROM alerts WHERE feed = {p})",
                (name, name),
            ).fetchone()
        return bool(row[0])

    def entries(self, feed: str) -> dict[str, StoredEntry]:
        with self._reading() as cur:
            rows = cur.execute(f"{ENTRY_SELECT} WHERE feed = {self.P}", (feed,)).fetchall()
        return self._stored_entries(rows)

    def entries_matching(self, feed: str, need: StoredNeed) -> Matching:
        """Whether the feed has any stored entry, and at least the entries ``need`` names
        (feedwatch.diff.stored_needed), in one read: those with one of its identities,
        those whose ``link_key`` (the normalised link) is one of its links, and those
        whose ``link_key`` was never computed (PostgreSQL rows written before schema
        3). Every entry when the feed keeps few more than its body (one range read is
        then cheaper than the searches), when the lists do not fit one statement, or
        when one of ``need.all_if_missing`` is not stored (a second read). And
        whether each of ``need.settled`` is an entry of the feed's last body (the
        ``entries_body`` index)."""
        p = self.P
        ids = list(self._ids_in("identity", need.identities))
        links = list(self._ids_in("link_key", need.links))
        with self._reading() as cur:
            # counted in the index: a few microseconds for a thousand rows
            (stored,) = cur.execute(
                f"SELECT COUNT(*) FROM entries WHERE feed = {p}", (feed,)
            ).fetchone()
            if stored <= _read_all_up_to(len(need.identities)) or len(ids) > 1 or len(links) > 1:
                rows = cur.execute(f"{ENTRY_SELECT} WHERE feed = {p}", (feed,)).fetchall()
            else:
                # each term on its own, so each is an index search (SQLite: MULTI-INDEX OR)
                terms: list[str] = []
                args: list[Any] = []
                for clause, values in [*ids, *links, ("link_key IS NULL", ())]:
                    terms.append(f"(feed = {p} AND {clause})")
                    args += [feed, *values]
                rows = cur.execute(f"{ENTRY_SELECT} WHERE {' OR '.join(terms)}", args).fetchall()
                if need.all_if_missing and not {r[0] for r in rows}.issuperset(need.all_if_missing):
                    rows = cur.execute(f"{ENTRY_SELECT} WHERE feed = {p}", (feed,)).fetchall()
            settled_ok = not need.settled or self._body_identities(cur, feed).issuperset(
                need.settled
            )
        return Matching(stored > 0, self._stored_entries(rows), settled_ok)

    def _body_identities(self, cur: Any, feed: str) -> set[str]:
        """The identities of the feed's last body (``in_body``, the ``entries_body``
        index)."""
        sql = f"SELECT identity FROM entries WHERE feed = {self.P} AND in_body = 1"
        return {r[0] for r in cur.execute(sql, (feed,)).fetchall()}

    def _stored_entries(self, rows: Iterable[Sequence[Any]]) -> dict[str, StoredEntry]:
        dt, req = self._from_db, self._from_db_req
        out: dict[str, StoredEntry] = {}
        for r in rows:
            # Filled in without the frozen __init__ (its twelve setattr calls were half
            # of this read's CPU, which every changed feed pays for each of its
            # entries): the same fields, the same values (tests/test_store.py checks).
            e = _new(StoredEntry)
            e.__dict__.update(
                identity=r[0],
                entry_id=r[1],
                link=r[2],
                title=r[3],
                summary=r[4],
                content=r[5],
                published=dt(r[6]),
                updated=dt(r[7]),
                fingerprint=r[8],
                first_seen=req(r[9]),
                last_seen=req(r[10]),
                new_alert_id=r[11],
                in_body=bool(r[12]),
            )
            out[r[0]] = e
        return out

    def pending(self, *, sink: str | None = None, due_at: datetime | None = None) -> list[Delivery]:
        sql = (
            f"SELECT {DELIVERY_COLS} FROM deliveries d JOIN alerts a ON a.alert_id = d.alert_id"
            " WHERE d.status = 'pending'"
        )
        args: list[Any] = []
        if sink is not None:
            sql += f" AND d.sink = {self.P}"
            args.append(sink)
        if due_at is not None:
            sql += f" AND (d.next_attempt IS NULL OR d.next_attempt <= {self.P})"
            args.append(self._to_db(due_at))
        sql += " ORDER BY a.created_at, a.seq, d.sink"
        with self._reading() as cur:
            rows = cur.execute(sql, args).fetchall()
        return [self._delivery(r) for r in rows]

    def pending_sinks(self, *, due_at: datetime | None = None) -> list[str]:
        sql = "SELECT DISTINCT sink FROM deliveries WHERE status = 'pending'"
        args: list[Any] = []
        if due_at is not None:
            sql += f" AND (next_attempt IS NULL OR next_attempt <= {self.P})"
            args.append(self._to_db(due_at))
        with self._reading() as cur:
            return sorted(r[0] for r in cur.execute(sql + " ORDER BY sink", args).fetchall())

    def pending_counts(self) -> dict[str, int]:
        with self._reading() as cur:
            rows = cur.execute(
                "SELECT sink, COUNT(*) FROM deliveries WHERE status = 'pending' GROUP BY sink"
            ).fetchall()
        return {sink: int(n) for sink, n in sorted(rows)}

    def sink_counts(self) -> dict[str, SinkCounts]:
        with self._reading() as cur:
            rows = cur.execute(
                "SELECT sink, status, COUNT(*) FROM deliveries GROUP BY sink, status"
            ).fetchall()
        counts: dict[str, dict[str, int]] = {}
        for sink, status, n in rows:
            counts.setdefault(sink, {})[status] = int(n)
        return {sink: SinkCounts(**c) for sink, c in sorted(counts.items())}


class SharedWrites(SharedReads):
    """The writes both stores phrase alike (and ``alerts_for``, two reads that must
    see one state), for a store that gives, besides ``SharedReads``'s:

    - ``_writing(pipeline=)``: a cursor in one write transaction (``pipeline``: a hint
      that the statements need not wait for each other's results);
    - ``_snapshot()``: a cursor whose SELECTs all see the same state;
    - ``_ensure_feed(cur, feed, url)`` and ``_queue(cur, alerts, at)``.
    """

    def _writing(self, *, pipeline: bool = False) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _snapshot(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _ensure_feed(self, cur: Any, feed: str, url: str | None) -> None:
        raise NotImplementedError

    def _queue(self, cur: Any, alerts: Iterable[Alert], at: Any) -> list[str]:
        raise NotImplementedError

    def _rekey(
        self, cur: Any, feed: str, old: str, new: str, prune_before: datetime | None = None
    ) -> None:
        """Move a stored entry to a new identity (the feed's id policy changed, or its
        GUID churned); when both exist, the row seen last wins and keeps the earliest
        first_seen. (For an entry of the body, the poll then writes the row its
        comparison kept, ``DiffResult.kept``, whichever this keeps.) A row at the new
        identity that left the body before ``prune_before`` is one the comparison did
        not see (``diff.within_retention``): it goes first, and decides nothing."""
        if old == new:
            return
        p = self.P
        key = (
            "SELECT first_seen, last_seen, in_body FROM entries"
            f" WHERE feed = {p} AND identity = {p}"
        )
        o = cur.execute(key, (feed, old)).fetchone()
        if o is None:
            return
        n = cur.execute(key, (feed, new)).fetchone()
        if n is not None and prune_before is not None:
            if not n[2] and n[1] < self._to_db(prune_before):  # forgotten
                cur.execute(f"DELETE FROM entries WHERE feed = {p} AND identity = {p}", (feed, new))
                n = None
        if n is None:
            cur.execute(
                f"UPDATE entries SET identity = {p} WHERE feed = {p} AND identity = {p}",
                (new, feed, old),
            )
            return
        first_seen = min(o[0], n[0])
        if o[1] > n[1]:
            cur.execute(f"DELETE FROM entries WHERE feed = {p} AND identity = {p}", (feed, new))
            cur.execute(
                f"UPDATE entries SET identity = {p}, first_seen = {p}"
                f" WHERE feed = {p} AND identity = {p}",
                (new, first_seen, feed, old),
            )
        else:
            cur.execute(f"DELETE FROM entries WHERE feed = {p} AND identity = {p}", (feed, old))
            cur.execute(
                f"UPDATE entries SET first_seen = {p} WHERE feed = {p} AND identity = {p}",
                (first_seen, feed, new),
            )

    def queue_notices(
        self,
        alerts: Iterable[Alert],
        *,
        stale_notified: bool | None = None,
        now: datetime | None = None,
    ) -> list[str]:
        """Queue feed-level notices, created at ``now`` (an extension of the protocol),
        else at each payload's ``detected_at``, else at the wall clock;
        ``stale_notified`` is set on the feed row of every alert's feed."""
        alerts = list(alerts)
        at = None if now is None else self._to_db(now)
        with self._writing(pipeline=True) as cur:
            queued = self._queue(cur, alerts, at)
            if stale_notified is not None:
                for feed in dict.fromkeys(a.feed for a in alerts):
                    self._ensure_feed(cur, feed, None)
                    cur.execute(
                        f"UPDATE feeds SET stale_notified = {self.P} WHERE name = {self.P}",
                        (stale_notified, feed),
                    )
        return queued

    def set_next_poll(self, feed: str, next_poll: datetime | None, *, was: Any = _ANY) -> None:
        at = self._to_db(next_poll)
        p = self.P
        with self._writing(pipeline=True) as cur:
            self._ensure_feed(cur, feed, None)
            if was is _ANY:
                cur.execute(f"UPDATE feeds SET next_poll = {p} WHERE name = {p}", (at, feed))
            else:  # only over the value read: not over another instance's poll's
                cur.execute(
                    f"UPDATE feeds SET next_poll = {p} WHERE name = {p} AND next_poll{self.SAME}{p}",
                    (at, feed, self._to_db(was)),
                )

    def pull_back_times(self, feed: str, now: datetime) -> None:
        p, at = self.P, self._to_db(now)
        with self._writing(pipeline=True) as cur:
            cur.execute(
                f"UPDATE feeds SET"
                f" last_success = CASE WHEN last_success > {p} THEN {p} ELSE last_success END,"
                f" last_new_entry = CASE WHEN last_new_entry > {p} THEN {p}"
                f" ELSE last_new_entry END WHERE name = {p}",
                (at, at, at, at, feed),
            )

    def _void_if_forgotten(self, cur: Any, feed: str, baselined: bool) -> None:
        """In a poll's write: raise ForgottenMeanwhile if the poll took the feed as
        baselined and ``forget`` has reset it since (the only way back to not
        baselined)."""
        if not baselined:
            return
        row = cur.execute(
            f"SELECT baselined FROM feeds WHERE name = {self.P}{self.ROW_LOCK}", (feed,)
        ).fetchone()
        if row is None or not row[0]:
            raise ForgottenMeanwhile(feed)

    def forget(self, feed: str) -> bool:
        """Drop entries and HTTP state so the next poll is a baseline; alerts stay."""
        with self._writing() as cur:
            dropped = cur.execute(f"DELETE FROM entries WHERE feed = {self.P}", (feed,)).rowcount
            known = cur.execute(_RESET_FEED + self.P, (feed,)).rowcount
        return bool(known or dropped)

    def drop_batches(self, keep: Iterable[str], idle_before: datetime) -> Iterator[list[str]]:
        """``Store.drop_batches``: one transaction at a time, each dropping at most
        DROP_BATCH entries: a feed removed from the config keeps every entry it had within
        its retention, and several removed together can hold millions, too many for one
        transaction (see ``prune_batches``). Each finds the idle feeds again, resets the
        first one's row as ``forget`` does (a poll meanwhile, of a feed put back in the
        config, is a baseline: never a comparison with half its entries), drops its
        entries, and its row once none is left, then the next feed's. Yields the names
        each dropped (often none); the first one is the last in the common case."""
        kept = set(keep)
        at = self._to_db(idle_before)
        p = self.P
        while True:
            budget = DROP_BATCH
            dropped: list[str] = []
            with self._writing() as cur:
                idle = cur.execute(
                    f"SELECT name FROM feeds WHERE (last_poll IS NULL OR last_poll < {p})"
                    + self.UNLEASED.format(p=p),
                    (at, at) if self.UNLEASED else (at,),
                ).fetchall()
                for name in sorted(r[0] for r in idle if r[0] not in kept):
                    cur.execute(_RESET_FEED + p, (name,))
                    budget -= cur.execute(
                        f"DELETE FROM entries WHERE feed = {p} AND identity IN"
                        f" (SELECT identity FROM entries WHERE feed = {p} LIMIT {budget})",
                        (name, name),
                    ).rowcount
                    if budget <= 0:  # it may have more: the next transaction
                        break
                    cur.execute(f"DELETE FROM feeds WHERE name = {p}", (name,))
                    dropped.append(name)
            yield dropped
            if budget > 0:  # every idle feed dropped
                return

    def alerts_for(
        self, feed: str, identity: str | None = None, limit: int = 50
    ) -> list[AlertRecord]:
        """The feed's (or one entry's) alerts, newest first, with their deliveries."""
        return self.recent_alerts(AlertQuery(feeds=(feed,), identity=identity, limit=limit))

    def recent_alerts(self, query: AlertQuery) -> list[AlertRecord]:
        p = self.P
        where: list[str] = []
        args: list[Any] = []
        if query.feeds:
            where.append(f"feed IN ({', '.join([p] * len(query.feeds))})")
            args += query.feeds
        if query.identity is not None:
            where.append(f"identity = {p}")
            args.append(query.identity)
        if query.since is not None:
            where.append(f"created_at >= {p}")
            args.append(self._to_db(query.since))
        if query.sink is not None or query.status is not None:
            cond = ["d.alert_id = alerts.alert_id"]
            if query.sink is not None:
                cond.append(f"d.sink = {p}")
                args.append(query.sink)
            if query.status is not None:
                cond.append(f"d.status = {p}")
                args.append(query.status)
            where.append(f"EXISTS (SELECT 1 FROM deliveries d WHERE {' AND '.join(cond)})")
        sql = (
            "SELECT alert_id, feed, identity, kind, created_at, payload, duplicate_key,"
            " thread_id FROM alerts"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY created_at DESC, seq DESC LIMIT {p}"
        )
        args.append(query.limit)
        with self._snapshot() as cur:
            rows = cur.execute(sql, args).fetchall()
            deliveries: dict[str, list[Delivery]] = {r[0]: [] for r in rows}
            for clause, ids in self._ids_in("d.alert_id", list(deliveries)):
                for d in cur.execute(
                    f"SELECT {DELIVERY_COLS} FROM deliveries d"
                    f" JOIN alerts a ON a.alert_id = d.alert_id WHERE {clause} ORDER BY d.sink",
                    ids,
                ).fetchall():
                    deliveries[d[0]].append(self._delivery(d))
            duplicate_of: dict[str, tuple[tuple[str, str, str], ...]] = {}
            for r in rows:
                if r[6] is not None:
                    duplicate_of[r[0]] = tuple(
                        (c[0], c[1], c[2])
                        for c in cur.execute(
                            "SELECT c.sink, c.alert_id, a.feed FROM duplicate_claims c"
                            " JOIN alerts a ON a.alert_id = c.alert_id"
                            f" WHERE c.key = {p} AND c.alert_id <> {p} ORDER BY c.sink",
                            (r[6], r[0]),
                        ).fetchall()
                    )
        return [
            AlertRecord(
                alert_id=r[0],
                feed=r[1],
                identity=r[2],
                kind=r[3],
                created_at=self._from_db_req(r[4]),
                payload=StoredPayload(r[5]),
                deliveries=tuple(deliveries[r[0]]),
                duplicate_of=duplicate_of.get(r[0], ()),
                thread_id=r[7],
            )
            for r in rows
        ]

    def recorded_alerts(
        self, alert_ids: Sequence[str], expired: datetime | None = None
    ) -> set[str]:
        # the commit's condition (the store's _queue), reversed: kept are those made
        # since ``expired`` or with a delivery pending
        p = self.P
        kept = "" if expired is None else f" AND {kept_alert(p)}"
        after = () if expired is None else (self._to_db(expired),)
        out: set[str] = set()
        with self._reading() as cur:
            for clause, values in self._ids_in("alert_id", list(dict.fromkeys(alert_ids))):
                out.update(
                    row[0]
                    for row in cur.execute(
                        f"SELECT alert_id FROM alerts WHERE {clause}{kept}", [*values, *after]
                    ).fetchall()
                )
        return out

    def duplicate_claims(
        self, keys: Sequence[str], expired: datetime | None = None
    ) -> dict[str, dict[str, str]]:
        # with ``expired``: the claims a commit keeps (the store's _queue drops an
        # alert holding one that the prune would drop, and the claim with it)
        p = self.P
        kept = (
            ""
            if expired is None
            else " AND alert_id IN (SELECT a.alert_id FROM alerts a WHERE a.alert_id ="
            f" duplicate_claims.alert_id AND {kept_alert(p, 'a')})"
        )
        after = () if expired is None else (self._to_db(expired),)
        out: dict[str, dict[str, str]] = {}
        with self._reading() as cur:
            for clause, values in self._ids_in("key", list(dict.fromkeys(keys))):
                for key, sink, alert_id in cur.execute(
                    f"SELECT key, sink, alert_id FROM duplicate_claims WHERE {clause}{kept}",
                    [*values, *after],
                ).fetchall():
                    out.setdefault(key, {})[sink] = alert_id
        return out

    def prune_batches(self, before: datetime) -> Iterator[int]:
        """``Store.prune_batches``: one transaction at a time, each over the next PRUNE_BATCH
        alerts created before ``before``, oldest first (by ``created_at``, then ``seq``):
        their finished deliveries go, then those of them left with none. Yields the
        number of deliveries each dropped.

        Why: the alerts older than ``retention`` are an hour's worth in the daemon's
        upkeep, but millions once ``retention`` is lowered or after a long stop; one
        transaction over them all held the daemon (its event loop) for minutes, and on
        PostgreSQL, past SLOW_LIMIT, was cut and rolled back every hour, never done.
        The walk's lower bound moves past each batch, so an alert kept (a delivery
        still pending) is never looked at again and never stops it; it ends at the
        first batch short of PRUNE_BATCH alerts (one transaction in the common case).
        Run to its end, it drops the rows the two statements over every alert before
        ``before`` drop: each alert's fate depends on its own deliveries alone."""
        p = self.P
        at = self._to_db(before)
        after: tuple[Any, ...] = ()  # (created_at, seq) of the last batch's last alert
        while True:
            lower = f" AND (created_at, seq) > ({p}, {p})" if after else ""
            dropped = 0
            with self._writing() as cur:
                batch = cur.execute(
                    f"SELECT alert_id, created_at, seq FROM alerts WHERE created_at < {p}{lower}"
                    f" ORDER BY created_at, seq LIMIT {PRUNE_BATCH}",
                    (at, *after),
                ).fetchall()
                # By their ids, not by the range of the walk: PostgreSQL then looks each
                # up (primary keys), where for a range it read every delivery of the
                # state once a batch (a hash join); SQLite takes 500 ids a statement.
                for clause, ids in self._ids_in("alert_id", [r[0] for r in batch]):
                    dropped += cur.execute(
                        # status <> 'pending' (the CHECK allows only the three), not IN
                        # ('delivered', 'dead'): never a walk of deliveries_status
                        f"DELETE FROM deliveries WHERE status <> 'pending' AND {clause}",
                        ids,
                    ).rowcount
                    cur.execute(
                        f"DELETE FROM alerts WHERE {clause} AND NOT EXISTS"
                        " (SELECT 1 FROM deliveries d WHERE d.alert_id = alerts.alert_id)",
                        ids,
                    )
            yield dropped
            if len(batch) < PRUNE_BATCH:
                return
            after = (batch[-1][1], batch[-1][2])
