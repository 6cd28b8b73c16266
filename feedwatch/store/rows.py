"""What both SQL stores read, written once: the SELECTs and their rows as model objects.

Why: sqlite.py and postgres.py differ in their writes (dialect, leases, NUL bytes in
text) and in the type of their time columns (integer microseconds against
TIMESTAMPTZ), but read the same columns into the same objects. A store says what
differs: its placeholder, its read transaction and its two time converters.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from feedwatch.model import IdentityState, StoredEntry
from feedwatch.store.base import Delivery, FeedRecord, SinkCounts

DELIVERY_COLS = (
    "d.alert_id, d.sink, a.feed, a.kind, a.payload, a.thread_id, a.created_at,"
    " d.attempts, d.next_attempt, d.status, d.last_error, d.delivered_at"
)
FEED_SELECT = (
    "SELECT f.name, f.url, f.title, f.etag, f.last_modified, f.body_hash, f.id_policy,"
    " f.id_candidate, f.baselined, f.last_poll, f.last_success, f.http_status, f.errors,"
    " f.last_error, f.next_poll, f.retry_after_until, f.gone, f.redirected_to,"
    " f.last_new_entry, f.stale_notified,"
    " (SELECT COUNT(*) FROM entries e WHERE e.feed = f.name) FROM feeds f"
)


class SharedReads:
    """The reads of feeds, entries, pending deliveries and their counts, for a store
    that gives:

    - ``P``: its driver's placeholder (``?`` or ``%s``);
    - ``_reading()``: a cursor in one read transaction;
    - ``_to_db`` / ``_from_db`` / ``_from_db_req``: a time to its column's type and
      back (``_from_db_req`` for columns that are never NULL).
    """

    P: ClassVar[str] = "?"

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
            entries=int(r[20]),
        )

    def _delivery(self, r: Sequence[Any]) -> Delivery:
        payload: Mapping[str, Any] = json.loads(r[4])
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
        )

    def feed(self, name: str) -> FeedRecord | None:
        with self._reading() as cur:
            row = cur.execute(f"{FEED_SELECT} WHERE f.name = {self.P}", (name,)).fetchone()
        return None if row is None else self._feed_record(row)

    def feeds(self) -> dict[str, FeedRecord]:
        with self._reading() as cur:
            rows = cur.execute(FEED_SELECT + " ORDER BY f.name").fetchall()
        return {r[0]: self._feed_record(r) for r in rows}

    def entries(self, feed: str) -> dict[str, StoredEntry]:
        with self._reading() as cur:
            rows = cur.execute(
                "SELECT identity, entry_id, link, title, summary, content, published, updated,"
                " fingerprint, first_seen, last_seen, new_alert_id"
                f" FROM entries WHERE feed = {self.P}",
                (feed,),
            ).fetchall()
        dt, req = self._from_db, self._from_db_req
        return {
            r[0]: StoredEntry(
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
            )
            for r in rows
        }

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

    def sink_counts(self) -> dict[str, SinkCounts]:
        with self._reading() as cur:
            rows = cur.execute(
                "SELECT sink, status, COUNT(*) FROM deliveries GROUP BY sink, status"
            ).fetchall()
        counts: dict[str, dict[str, int]] = {}
        for sink, status, n in rows:
            counts.setdefault(sink, {})[status] = int(n)
        return {sink: SinkCounts(**c) for sink, c in sorted(counts.items())}
