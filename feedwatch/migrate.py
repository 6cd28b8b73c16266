"""`feedwatch migrate-state FROM TO`: copy an SQLite state file into PostgreSQL.

    feedwatch migrate-state ~/.local/state/feedwatch/state.db postgresql://feedwatch@db/feedwatch

Everything is copied as it is: every feed's HTTP state (validators, next poll, errors,
gone, redirects), every entry (so nothing is new again), every alert id (so nothing
alerts again) and every delivery with its status, attempts and next attempt (pending
ones stay pending, dead ones dead). The copy is one PostgreSQL transaction: all of it,
or nothing. The parse cache (``feedwatch.partial``) is deliberately not copied: it is
only a cache, and the first poll of each changed feed after the move parses it in full
and stores a new one. The target must be empty (a fresh database, or a schema of its own);
the source is locked while it is read, so no daemon may be running on it, and it is
left untouched, but for one thing: a file from an older feedwatch is upgraded first, as
`check` would (holding the lock, with its ``.bak-vN`` copy), and the output says so.
Then point `state` at the URL and start the instances.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from feedwatch.model import Config
from feedwatch.redact import redact
from feedwatch.store.base import StateError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# (table, columns, which of them are times stored as microseconds, which are booleans)
_TABLES: tuple[tuple[str, tuple[str, ...], frozenset[str], frozenset[str]], ...] = (
    (
        "feeds",
        (
            "name", "url", "title", "etag", "last_modified", "body_hash", "id_policy",
            "id_candidate", "baselined", "last_poll", "last_success", "http_status", "errors",
            "last_error", "next_poll", "retry_after_until", "gone", "redirected_to",
            "last_new_entry", "stale_notified", "masked_name",
        ),
        frozenset({"last_poll", "last_success", "next_poll", "retry_after_until",
                   "last_new_entry"}),
        frozenset({"baselined", "gone", "stale_notified"}),
    ),
    (
        "entries",
        (
            "feed", "identity", "entry_id", "link", "title", "summary", "content", "published",
            "updated", "fingerprint", "first_seen", "last_seen", "new_alert_id", "link_key",
            "in_body",
        ),
        frozenset({"published", "updated", "first_seen", "last_seen"}),
        frozenset(),
    ),
    (
        "alerts",
        ("seq", "alert_id", "feed", "identity", "kind", "created_at", "payload", "thread_id",
         "duplicate_key"),
        frozenset({"created_at"}),
        frozenset(),
    ),
    # `duplicates = "skip"`: which sink a story's link went to (left behind, a story
    # already sent went again after the switch)
    ("duplicate_claims", ("key", "sink", "alert_id"), frozenset(), frozenset()),
    (
        "deliveries",
        (
            "alert_id", "sink", "status", "attempts", "next_attempt", "last_error",
            "delivered_at", "recipients_left",
        ),
        frozenset({"next_attempt", "delivered_at"}),
        frozenset(),
    ),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Copy an SQLite state file into an empty PostgreSQL database, without re-alerting"
        " anything: entries, alert ids and deliveries (pending stay pending) all carry over."
    )
    parser.add_argument("source", metavar="FROM", help="the SQLite state file")
    parser.add_argument(
        "target",
        metavar="TO",
        help="postgresql://USER@HOST/DB (a password is better kept in PGPASSWORD or ~/.pgpass)",
    )


def run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int:
    from feedwatch.store.postgres import is_postgres_url, safe_location

    source = os.path.expanduser(args.source)
    target = args.target
    if is_postgres_url(source):
        print(
            "feedwatch: migrate-state copies an SQLite state file into PostgreSQL:"
            " FROM must be a file path",
            file=sys.stderr,
        )
        return 2
    if not is_postgres_url(target):
        print(
            f"feedwatch: migrate-state: TO must be a postgresql:// URL, not {redact(target)!r}",
            file=sys.stderr,
        )
        return 2
    where = safe_location(target)  # registers its password before anything can print it
    if not os.path.isfile(source):
        print(f"feedwatch: no SQLite state file at {redact(source)}", file=sys.stderr)
        return 2
    counts, pending, upgraded_from = migrate(source, target)
    print(
        f"migrated {counts['feeds']} feeds, {counts['entries']} entries,"
        f" {counts['alerts']} alerts and {counts['deliveries']} deliveries"
        f" ({pending} pending) from {source} to {where}",
        file=out,
    )
    left = (
        "the SQLite file was left as it was"
        if upgraded_from is None
        else f"the SQLite file was upgraded from schema version {upgraded_from} first, as"
        f" `check` would (its copy as it was: {source}.bak-v{upgraded_from}); nothing else"
        " in it changed"
    )
    print(
        f'next: set state = "{where}" in the config (with the password, or in PGPASSWORD)'
        f" and start the instances; {left}",
        file=out,
    )
    return 0


def migrate(source: str, target: str) -> tuple[dict[str, int], int, int | None]:
    """Copy ``source`` (SQLite) into ``target`` (an empty PostgreSQL state); returns the
    row counts per table, the number of pending deliveries copied and the schema version
    ``source`` was upgraded from first (None: it was this feedwatch's)."""
    from feedwatch.store.lock import acquire_lock
    from feedwatch.store.postgres import PostgresStore
    from feedwatch.store.sqlite import SqliteStore

    with acquire_lock(source):  # no daemon or `check` writes it meanwhile
        # Opening validates it (version, corruption) and brings an older file up to date
        # (under the lock, as `check` does: no older daemon runs on it)
        opened = SqliteStore(source, create=False)
        opened.close()
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dest = PostgresStore(target)
            try:
                if not dest.is_empty():
                    raise StateError(
                        f"PostgreSQL state {dest.path} already holds feedwatch state: migrate"
                        " into an empty database (or schema), never over live state"
                    )
                counts = dest.import_rows(
                    [
                        (table, cols, _rows(conn, table, cols, times, flags))
                        for table, cols, times, flags in _TABLES
                    ]
                )
            finally:
                dest.close()
            pending = conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'"
            ).fetchone()[0]
        except sqlite3.Error as exc:
            raise StateError(f"state file {source}: {exc}") from exc
        finally:
            conn.close()
    return counts, int(pending), opened.upgraded_from


def _rows(
    conn: sqlite3.Connection,
    table: str,
    cols: tuple[str, ...],
    times: frozenset[str],
    flags: frozenset[str],
) -> Iterator[list[Any]]:
    conv: list[Callable[[Any], Any] | None] = [
        _time if c in times else (_flag if c in flags else None) for c in cols
    ]
    order = {"alerts": " ORDER BY seq", "entries": " ORDER BY feed, identity"}.get(table, "")
    cur = conn.execute(f"SELECT {', '.join(cols)} FROM {table}{order}")
    while True:
        batch = cur.fetchmany(2000)
        if not batch:
            return
        for row in batch:
            yield [v if f is None else f(v) for f, v in zip(conv, row, strict=True)]


def _time(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _flag(value: int | None) -> bool:
    return bool(value)
