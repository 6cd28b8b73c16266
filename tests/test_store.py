"""The state store: one contract suite, run against every backend (SQLite, PostgreSQL).

To add a backend, add its name to ``BACKENDS`` and a branch to ``_open_backend``;
every ``store``/``reopen`` test then runs against it. The PostgreSQL runs use a
throwaway cluster (``tests/pg.py``: a fresh schema per test) and skip, with the
reason, where PostgreSQL cannot be run. SQLite-only behaviour (the file itself:
schema versions, corruption, permissions, the lock) and PostgreSQL-only behaviour
(leases shared by several instances, its schema table) are at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedwatch.model import Alert, IdentityState, StoredEntry, StoredNeed
from feedwatch.store import (
    AlertQuery,
    FeedRecord,
    ForgottenMeanwhile,
    PollCommit,
    SinkCounts,
    SqliteStore,
    StateBusy,
    StateError,
    StateLocked,
    Store,
    acquire_lock,
    open_store,
)
from tests.helpers import HeldWriteLock, LoopLateness, wait_for
from tests.pg import PgCluster, pg_cluster, pg_url

__all__ = ["pg_cluster", "pg_url"]  # fixtures, imported for pytest

BACKENDS = ["sqlite", "postgres"]
T0 = datetime(2024, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parent.parent


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _pruned(store: Store, before: datetime) -> int:
    """``Store.prune_batches`` run to its end: the deliveries it dropped."""
    return sum(store.prune_batches(before))


def _dropped(store: Store, keep: list[str], before: datetime) -> list[str]:
    """``Store.drop_batches`` run to its end: the feeds it dropped, sorted."""
    return sorted(name for names in store.drop_batches(keep, before) for name in names)


def entry(identity: str, seen: datetime = T0, **kw: object) -> StoredEntry:
    fields: dict[str, object] = dict(
        identity=identity,
        entry_id=identity,
        link=f"https://example.org/{identity}",
        title=f"title {identity}",
        summary="summary",
        content="content",
        published=T0,
        updated=None,
        fingerprint=f"fp-{identity}",
        first_seen=seen,
        last_seen=seen,
        new_alert_id=f"new-{identity}",
    )
    fields.update(kw)
    return StoredEntry(**fields)  # type: ignore[arg-type]


def alert(
    alert_id: str,
    feed: str = "f",
    sinks: tuple[str, ...] = ("mail",),
    kind: str = "new",
    identity: str | None = None,
    payload: object = None,
    detected: datetime | None = None,
) -> Alert:
    body = {"version": 1, "id": alert_id, "kind": kind} if payload is None else payload
    if detected is not None:  # how notices carry their time through queue_notices
        body = {**body, "detected_at": detected.strftime("%Y-%m-%dT%H:%M:%SZ")}  # type: ignore[dict-item]
    return Alert(
        id=alert_id,
        kind=kind,
        feed=feed,
        payload=body,  # type: ignore[arg-type]
        sinks=sinks,
        thread_id=f"thread-{identity}" if identity else None,
        identity=identity,
    )


def poll(feed: str = "f", now: datetime = T0, **kw: object) -> PollCommit:
    fields: dict[str, object] = dict(
        feed=feed,
        url=f"https://example.org/{feed}.xml",
        now=now,
        http_status=200,
        etag='"e1"',
        last_modified="Fri, 22 Nov 2024 10:00:00 GMT",
        body_hash="hash1",
        title=f"Feed {feed}",
        identity=IdentityState(),
    )
    fields.update(kw)
    return PollCommit(**fields)  # type: ignore[arg-type]


# PostgreSQL: the session's cluster, and the schema standing for each `where` directory.
_PG: dict[str, Any] = {"cluster": None, "schemas": {}}


def _open_backend(backend: str, where: Path) -> Store:
    if backend == "sqlite":
        return SqliteStore(where / "state.db")
    if backend == "postgres":
        from feedwatch.store.postgres import PostgresStore

        url = _PG["schemas"].get(str(where))
        if url is None:
            url = _PG["schemas"][str(where)] = _PG["cluster"].new_schema()
        return PostgresStore(url)
    raise AssertionError(f"unknown backend {backend}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        _PG["cluster"] = request.getfixturevalue("pg_cluster")  # skips where impossible
    return str(request.param)


@pytest.fixture
def reopen(backend: str, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens (again) the same state; every store opened is closed at the end."""
    opened: list[Store] = []

    def _open() -> Store:
        s = _open_backend(backend, tmp_path)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def store(reopen: Callable[[], Store]) -> Store:
    return reopen()


def sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# Contract: feeds and entries
# ---------------------------------------------------------------------------


def test_empty_store(store: Store) -> None:
    assert store.feed("f") is None
    assert store.feeds() == {}
    assert store.entries("f") == {}
    assert store.pending() == []
    assert store.sink_counts() == {}
    assert store.alerts_for("f") == []


def test_commit_poll_records_entries_feed_and_queues_alerts(store: Store) -> None:
    a, b = entry("a", published=at(-60), updated=at(-30)), entry("b")
    ids = store.commit_poll(
        poll(
            upserts=(a, b),
            alerts=(alert("x1", sinks=("mail", "hook"), identity="a"),),
            identity=IdentityState("link", "content"),
            next_poll=at(900),
            had_new_entry=True,
            redirected_to="https://new.example.org/f.xml",
            stale_notified=True,
        )
    )
    assert ids == ["x1"]
    assert store.entries("f") == {"a": a, "b": b}
    # read back without the dataclass's __init__: no field may be missing or extra
    names = {f.name for f in dataclasses.fields(StoredEntry)}
    assert all(vars(e).keys() == names for e in store.entries("f").values())
    assert store.feed("f") == replace(store.feed("f", counts=True), entries=0)  # type: ignore[type-var]
    rec = store.feed("f", counts=True)
    assert rec == FeedRecord(
        name="f",
        url="https://example.org/f.xml",
        title="Feed f",
        etag='"e1"',
        last_modified="Fri, 22 Nov 2024 10:00:00 GMT",
        body_hash="hash1",
        identity=IdentityState("link", "content"),
        baselined=True,
        last_poll=T0,
        last_success=T0,
        http_status=200,
        errors=0,
        last_error=None,
        next_poll=at(900),
        retry_after_until=None,
        gone=False,
        redirected_to="https://new.example.org/f.xml",
        last_new_entry=T0,
        stale_notified=True,
        entries=2,
    )
    assert store.feeds(counts=True) == {"f": rec}
    pending = store.pending()
    assert [(d.alert_id, d.sink) for d in pending] == [("x1", "hook"), ("x1", "mail")]
    for d in pending:
        assert d.status == "pending" and d.attempts == 0
        assert d.next_attempt == T0 and d.created_at == T0
        assert d.feed == "f" and d.kind == "new" and d.thread_id == "thread-a"
        assert d.payload == {"version": 1, "id": "x1", "kind": "new"}


def test_commit_poll_upsert_replaces_row_and_leaves_others(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    changed = entry("a", seen=at(60), title="edited", first_seen=T0, updated=at(50))
    store.commit_poll(poll(now=at(60), upserts=(changed,), had_new_entry=False))
    got = store.entries("f")
    assert got["a"] == changed
    assert got["b"] == entry("b")  # neither touched nor upserted: unchanged
    rec = store.feed("f")
    assert rec is not None and rec.last_new_entry is None and rec.stale_notified is False


def test_touched_sets_last_seen_only(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    later = at(3600 + 100)  # the first success of the next hour (feedwatch.store.seen)
    store.commit_poll(poll(now=later, touched=("a", "missing")))
    got = store.entries("f")
    assert got["a"] == entry("a", last_seen=later)
    assert got["b"].last_seen == T0
    assert set(got) == {"a", "b"}  # touching an unknown identity creates nothing


def test_touched_within_the_step_keep_last_seen(store: Store) -> None:
    """Entries a changed poll only sees again move once per seen step, as on a 304;
    the rows it writes get the exact time."""
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    edited = entry("b", seen=at(100), title="edited", first_seen=T0)
    store.commit_poll(poll(now=at(100), upserts=(edited,), touched=("a",)))
    got = store.entries("f")
    assert got["a"].last_seen == T0  # same hour as the last success: not rewritten
    assert got["b"] == edited
    # a retention shorter than two hours shrinks the step: then the touch is due
    store.commit_poll(poll(now=at(200), touched=("a",), prune_before=at(200 - 120)))
    assert store.entries("f")["a"].last_seen == at(200)


def test_entries_are_per_feed(store: Store) -> None:
    store.commit_poll(poll("f", upserts=(entry("a"),)))
    store.commit_poll(poll("g", upserts=(entry("a", title="other"), entry("b"))))
    assert store.entries("f")["a"].title == "title a"
    assert store.entries("g")["a"].title == "other"
    assert {n: r.entries for n, r in store.feeds(counts=True).items()} == {"f": 1, "g": 2}
    assert {n: r.entries for n, r in store.feeds().items()} == {"f": 0, "g": 0}  # not counted


def test_entries_matching_reads_the_body_and_its_links_not_the_history(store: Store) -> None:
    kept = [entry(f"old{i}", link=f"https://example.org/old/{i}") for i in range(300)]
    body = [entry(f"now{i}") for i in range(5)]
    alias = entry("gone", link="HTTPS://EXAMPLE.ORG/now0?utm_source=x")  # the same link
    store.commit_poll(poll(upserts=(*kept, *body, alias, entry("nolink", link=None))))
    need = StoredNeed(
        identities=("now0", "now1", "now2", "now3", "now4", "absent"),
        links=("https://example.org/now0", "https://example.org/elsewhere"),
    )
    has_rows, got, _ = store.entries_matching("f", need)
    assert has_rows
    assert set(got) == {"now0", "now1", "now2", "now3", "now4", "gone"}
    assert got == {k: v for k, v in store.entries("f").items() if k in got}  # whole rows
    assert store.entries_matching("g", need) == (False, {}, True)
    # no body, no links: nothing to read, and still whether the feed has rows
    assert store.entries_matching("f", StoredNeed((), ())) == (True, {}, True)
    # every row when an entry without an id is not stored (diff's link churn)
    assert store.entries_matching("f", replace(need, all_if_missing=("now1",)))[1] == got
    assert store.entries_matching("f", replace(need, all_if_missing=("now1", "absent"))) == (
        True,
        store.entries("f"),
        True,
    )


def test_entries_matching_vouches_for_the_settled_entries(store: Store) -> None:
    """Settled identities (diff reads no row of them) must be entries of the feed's last
    body: rows that left it, or that are gone, are not."""
    store.commit_poll(poll(upserts=(entry("a"), entry("b"), entry("c"))))
    store.commit_poll(poll(now=at(60), upserts=(entry("a"),), touched=("b",)))  # c left
    got = store.entries_matching("f", StoredNeed(("x",), (), settled=("a", "b")))
    assert got.settled_ok and got.has_rows
    assert not store.entries_matching("f", StoredNeed((), (), settled=("a", "c"))).settled_ok
    assert not store.entries_matching("f", StoredNeed((), (), settled=("zzz",))).settled_ok
    assert not store.entries_matching("g", StoredNeed((), (), settled=("a",))).settled_ok


def test_entries_matching_a_feed_that_keeps_little_more_than_its_body(store: Store) -> None:
    """One range read of every row is cheaper than the searches: all rows come back."""
    store.commit_poll(poll(upserts=tuple(entry(f"e{i}") for i in range(20))))
    has_rows, got, _ = store.entries_matching("f", StoredNeed(("e0", "e1"), ()))
    assert has_rows and set(got) == {f"e{i}" for i in range(20)}


def test_entries_matching_a_long_list_misses_nothing(store: Store) -> None:
    """More identities than SQLite takes in one statement: it reads every row."""
    store.commit_poll(poll(upserts=tuple(entry(f"e{i}") for i in range(20))))
    need = StoredNeed(("e0", *(f"x{i}" for i in range(2000)), "e19"), ())
    has_rows, got, _ = store.entries_matching("f", need)
    assert has_rows and set(got) >= {"e0", "e19"}  # a superset: never fewer


def test_rekey_renames_entries(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("guid-1"), entry("guid-2"))))
    store.commit_poll(
        poll(now=at(60), rekeys=(("guid-1", "link-1"), ("nope", "x")), touched=("link-1",))
    )
    got = store.entries("f")
    assert set(got) == {"link-1", "guid-2"}
    # renamed as it was (within the seen step, a touch does not move last_seen)
    assert got["link-1"] == replace(entry("guid-1"), identity="link-1")


@pytest.mark.parametrize("old_is_newer", [True, False])
def test_rekey_onto_existing_keeps_most_recently_seen(store: Store, old_is_newer: bool) -> None:
    old_seen, new_seen = (at(50), at(10)) if old_is_newer else (at(10), at(50))
    old = entry("old", first_seen=T0, last_seen=old_seen, title="from old")
    new = entry("new", first_seen=at(5), last_seen=new_seen, title="from new")
    store.commit_poll(poll(upserts=(old, new)))
    store.commit_poll(poll(now=at(60), rekeys=(("old", "new"),)))
    got = store.entries("f")
    assert set(got) == {"new"}
    assert got["new"].title == ("from old" if old_is_newer else "from new")
    assert got["new"].last_seen == at(50)
    assert got["new"].first_seen == T0  # the earliest sighting of the two


def test_prune_drops_entries_last_seen_before(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("old", seen=at(0)), entry("kept", seen=at(0)))))
    store.commit_poll(poll(now=at(100), upserts=(entry("fresh", seen=at(100)),), touched=("kept",)))
    store.commit_poll(poll("g", upserts=(entry("other", seen=at(0)),)))
    store.commit_poll(poll(now=at(200), touched=("kept",), prune_before=at(50)))
    assert set(store.entries("f")) == {"kept", "fresh"}
    assert set(store.entries("g")) == {"other"}  # another feed is never pruned


def test_record_unchanged_touches_every_entry(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"), entry("b"), entry("c"))))
    store.record_failure(
        "f", "https://example.org/f.xml", at(10), http_status=503, error="HTTP 503",
        next_poll=at(40), retry_after_until=at(30),
    )  # fmt: skip
    later = at(2 * 3600)  # past SEEN_STEP: every entry's last_seen moves (test_seen.py)
    store.record_unchanged(
        "f", "https://example.org/f.xml", later, http_status=304, etag=None,
        last_modified="Sat, 23 Nov 2024 00:00:00 GMT", next_poll=at(960),
    )  # fmt: skip
    assert {e.last_seen for e in store.entries("f").values()} == {later}
    rec = store.feed("f")
    assert rec is not None
    assert (rec.last_poll, rec.last_success, rec.http_status) == (later, later, 304)
    assert (rec.errors, rec.last_error, rec.retry_after_until) == (0, None, None)
    assert rec.body_hash == "hash1" and rec.title == "Feed f"  # kept
    assert rec.etag == '"e1"'  # a 304 without a validator keeps the one we had
    assert rec.last_modified == "Sat, 23 Nov 2024 00:00:00 GMT"
    assert rec.next_poll == at(960) and rec.baselined


def test_record_unchanged_prunes_and_creates_feed(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    store.commit_poll(poll(now=at(50), touched=("b",)))  # "a" left
    store.record_unchanged(
        "f", "u", at(100), http_status=200, etag=None, last_modified=None,
        next_poll=None, prune_before=at(200),
    )  # fmt: skip
    assert set(store.entries("f")) == {"b"}  # "a" older than 200; "b" is in the feed
    store.record_unchanged(
        "new", "u2", at(5), http_status=304, etag='"x"', last_modified=None, next_poll=None
    )
    rec = store.feed("new")
    assert rec is not None and rec.url == "u2" and rec.etag == '"x"' and not rec.baselined


def test_record_failure_counts_and_keeps_last_success(store: Store) -> None:
    store.record_failure(
        "f", "u", T0, http_status=None, error="connection refused", next_poll=at(60)
    )
    rec = store.feed("f")
    assert rec is not None
    assert (rec.errors, rec.last_error, rec.last_poll, rec.last_success) == (
        1, "connection refused", T0, None,
    )  # fmt: skip
    assert not rec.baselined and rec.entries == 0
    store.commit_poll(poll(now=at(100), upserts=(entry("a"),)))
    for i in range(3):
        store.record_failure(
            "f", "u", at(200 + i), http_status=429, error="HTTP 429 Too Many Requests",
            next_poll=at(500), retry_after_until=at(400), redirected_to="https://r/",
        )  # fmt: skip
    rec = store.feed("f")
    assert rec is not None
    assert rec.errors == 3 and rec.http_status == 429 and rec.last_poll == at(202)
    assert rec.last_success == at(100) and rec.retry_after_until == at(400)
    assert rec.redirected_to == "https://r/" and rec.next_poll == at(500)
    assert set(store.entries("f")) == {"a"}  # a failure prunes nothing
    store.record_failure("f", "u", at(300), http_status=410, error="HTTP 410 Gone",
                         next_poll=None, gone=True)  # fmt: skip
    rec = store.feed("f")
    assert rec is not None and rec.gone and rec.errors == 4
    store.clear_gone("f")
    rec = store.feed("f")
    assert rec is not None and not rec.gone and rec.errors == 4
    # a failure at another url (the feed's url was edited) is its first in a row there
    store.record_failure("f", "u2", at(350), http_status=500, error="HTTP 500", next_poll=None)
    rec = store.feed("f")
    assert rec is not None and rec.url == "u2" and rec.errors == 1 and rec.errors_at("u") == 0
    store.commit_poll(poll(now=at(400)))
    rec = store.feed("f")
    assert rec is not None
    assert (rec.errors, rec.last_error, rec.gone, rec.retry_after_until) == (0, None, False, None)


def test_drop_removed_feeds_drops_idle_feeds_out_of_the_config_not_their_alerts(
    store: Store,
) -> None:
    """SPEC 6: a removed feed's state is kept until `retention` (nothing dropped it)."""
    for name, polled in (("old", at(0)), ("recent", at(500)), ("kept", at(0))):
        store.commit_poll(
            poll(name, now=polled, upserts=(entry("x", polled),),
                 alerts=(alert(f"{name}-1", feed=name, identity="x"),))
        )  # fmt: skip
    store.set_next_poll("never", at(10))  # a row never polled
    assert _dropped(store, ["kept"], at(100)) == ["never", "old"]
    assert set(store.feeds()) == {"recent", "kept"}
    assert store.entries("old") == {} and set(store.entries("kept")) == {"x"}
    # its alert stays, its delivery still pending (and sent)
    assert {d.alert_id for d in store.pending()} == {"old-1", "recent-1", "kept-1"}
    assert [a.alert_id for a in store.alerts_for("old")] == ["old-1"]
    assert _dropped(store, ["kept"], at(100)) == []
    # its alerts keep its name known (`alerts --feed`, `redeliver --feed`, `explain`)
    assert store.knows_feed("old") and store.knows_feed("kept")
    assert not store.knows_feed("never") and not store.knows_feed("nosuch")


def test_each_poll_keeps_the_name_as_shown_for_when_the_feed_is_removed(store: Store) -> None:
    """SPEC 2: a feed is keyed by its name with its ${VAR} values expanded; once it left
    the config nothing knew them for secrets, and `status`, `explain` and `forget` showed
    them. Each poll's write (a success, a 304, a failure) now keeps the name as it shows;
    one that gives none, a `forget`, or another row's write leaves it as it was."""
    store.record_failure(
        "t acme", "u", T0, http_status=500, error="HTTP 500", next_poll=None,
        masked_name="t ***",
    )  # fmt: skip
    rec = store.feed("t acme")
    assert rec is not None and (rec.masked_name, rec.shown_name) == ("t ***", "t ***")
    store.commit_poll(poll("t acme", now=at(10), upserts=(entry("a"),), masked_name="*** acme"))
    assert store.feeds()["t acme"].shown_name == "*** acme"
    store.record_unchanged(
        "t acme", "u", at(20), http_status=304, etag=None, last_modified=None,
        next_poll=None, masked_name="t ***",
    )  # fmt: skip
    store.commit_poll(poll("t acme", now=at(30)))  # none given: kept
    store.record_failure("t acme", "u", at(40), http_status=None, error="x", next_poll=None)
    store.forget("t acme")
    store.commit_poll(poll("other", now=at(50), masked_name="other"))
    rec = store.feed("t acme", counts=True)
    assert rec is not None and rec.masked_name == "t ***"
    # a row no poll wrote a shown name to (one from before schema 6): nothing of it shows
    store.record_unchanged(
        "plain", "u", at(60), http_status=304, etag=None, last_modified=None, next_poll=None
    )
    rec = store.feed("plain")
    assert rec is not None and (rec.masked_name, rec.shown_name) == (None, "***")
    store.record_unchanged(
        "plain", "u", at(70), http_status=304, etag=None, last_modified=None, next_poll=None,
        masked_name="plain",
    )  # fmt: skip
    assert store.feeds()["plain"].shown_name == "plain"


def test_set_next_poll(store: Store) -> None:
    store.set_next_poll("f", at(30))
    rec = store.feed("f")
    assert rec is not None and rec.next_poll == at(30) and not rec.baselined
    store.set_next_poll("f", None)
    rec = store.feed("f")
    assert rec is not None and rec.next_poll is None


def test_set_next_poll_over_the_value_read_only(store: Store) -> None:
    """Several instances: one starting read a feed's next poll (none yet: another had
    just created its row to poll it), that other's poll committed its own, and the
    starting one's slot overwrote it with "now": it polled the feed again 0.2 s later
    (red once in CI). With ``was``, a value stored meanwhile stands."""
    store.set_next_poll("f", None)
    store.set_next_poll("f", at(30))  # the other instance's poll
    store.set_next_poll("f", at(1), was=None)  # the slot of what the starting one read
    rec = store.feed("f")
    assert rec is not None and rec.next_poll == at(30)
    store.set_next_poll("f", at(40), was=at(30))
    rec = store.feed("f")
    assert rec is not None and rec.next_poll == at(40)


def test_forget_drops_entries_and_http_state_but_keeps_alerts(store: Store) -> None:
    assert store.forget("f") is False
    store.commit_poll(
        poll(upserts=(entry("a"),), alerts=(alert("x1", identity="a"),),
             identity=IdentityState("link"), next_poll=at(900), stale_notified=True)
    )  # fmt: skip
    store.commit_poll(poll("g", upserts=(entry("a"),)))
    assert store.forget("f") is True
    assert store.entries("f") == {}
    rec = store.feed("f")
    assert rec is not None
    # stale for want of new entries (no failure): its baseline is no news, so the mark
    # goes, as it always did (a `recovered` now would be false)
    assert not rec.stale_notified
    assert (rec.etag, rec.last_modified, rec.body_hash) == (None, None, None)
    assert rec.identity == IdentityState() and not rec.baselined and rec.entries == 0
    assert [d.alert_id for d in store.pending()] == ["x1"]
    assert [a.alert_id for a in store.alerts_for("f")] == ["x1"]
    assert set(store.entries("g")) == {"a"}
    # the id is still recorded: the same change never alerts twice
    assert store.commit_poll(poll(alerts=(alert("x1"),))) == []


@pytest.mark.parametrize("gone", [True, False], ids=["gone", "erring"])
def test_forget_keeps_the_stale_mark_of_a_failing_feed(store: Store, gone: bool) -> None:
    """A failing feed's `stale` notice stays noted through a `forget` (how a feed
    stopped by a 410 comes back under the daemon): its next good poll sends the
    `recovered`, and while it still fails no second `stale` comes."""
    store.commit_poll(poll(upserts=(entry("a"),), stale_notified=True))
    store.record_failure(
        "f", "https://example.org/f.xml", at(10), http_status=410 if gone else 503,
        error="HTTP 410 Gone" if gone else "HTTP 503", next_poll=at(40), gone=gone,
    )  # fmt: skip
    assert store.forget("f") is True
    rec = store.feed("f")
    assert rec is not None and rec.stale_notified and not rec.gone
    if gone:
        # the 410 goes with the gone mark: the feed is due as one to be polled at once
        # (status shows it neither `error` nor with the 410); its stale mark stays
        failure = (rec.errors, rec.last_error, rec.http_status, rec.next_poll)
        assert failure == (0, None, None, None)
    else:  # still failing as it was: its streak and backoff stay
        failure = (rec.errors, rec.last_error, rec.http_status, rec.next_poll)
        assert failure == (1, "HTTP 503", 503, at(40))


def test_a_poll_that_took_the_feed_as_baselined_is_void_after_a_forget(store: Store) -> None:
    """`forget` under a poll in flight: the poll compared against entries now gone,
    so its commit writes nothing and the next poll is the baseline forget promised."""
    store.commit_poll(poll(upserts=(entry("a"),), etag='"1"'))
    store.forget("f")
    late = poll(upserts=(entry("b"),), alerts=(alert("x1", identity="b"),), baselined=True)
    with pytest.raises(ForgottenMeanwhile):
        store.commit_poll(late)
    rec = store.feed("f")
    assert rec is not None and not rec.baselined and rec.etag is None
    assert store.entries("f") == {} and store.pending() == []
    # a poll that took it as not baselined (the baseline) commits
    assert store.commit_poll(replace(late, baselined=False)) == ["x1"]
    rec = store.feed("f")
    assert rec is not None and rec.baselined
    # and once baselined, a poll that knew it commits as always
    assert store.commit_poll(poll(upserts=(entry("c"),), baselined=True)) == []
    assert set(store.entries("f")) == {"b", "c"}


def test_recent_alerts_filters_in_the_query(store: Store) -> None:
    """`feedwatch alerts`: newest first; each filter narrows before the limit applies."""
    store.commit_poll(poll(now=at(0), alerts=(alert("a1", sinks=("mail", "chat")),)))
    store.commit_poll(poll("g", now=at(60), alerts=(alert("b1", feed="g", sinks=("chat",)),)))
    store.commit_poll(poll(now=at(120), alerts=(alert("a2", sinks=("mail",)),)))
    store.mark_delivered("chat", ["a1", "b1"], at(130))
    store.mark_dead("mail", ["a1"], at(140), error="401 Unauthorized")

    def ids(**kw: object) -> list[str]:
        return [r.alert_id for r in store.recent_alerts(AlertQuery(**kw))]  # type: ignore[arg-type]

    assert ids() == ["a2", "b1", "a1"]
    assert ids(limit=2) == ["a2", "b1"]
    assert ids(feeds=("f",)) == ["a2", "a1"]
    assert ids(feeds=("f", "g"), limit=2) == ["a2", "b1"]
    assert ids(feeds=("nosuch",)) == []
    assert ids(since=at(60)) == ["a2", "b1"]
    assert ids(sink="chat") == ["b1", "a1"]
    assert ids(status="dead") == ["a1"]
    assert ids(sink="chat", status="dead") == []  # both on one delivery
    assert ids(sink="mail", status="pending") == ["a2"]
    (rec,) = store.recent_alerts(AlertQuery(status="dead"))
    assert {(d.sink, d.status, d.last_error) for d in rec.deliveries} == {
        ("chat", "delivered", None),
        ("mail", "dead", "401 Unauthorized"),
    }
    assert rec.created_at == at(0) and rec.payload["id"] == "a1"


def test_times_round_trip_exactly_as_aware_utc(store: Store) -> None:
    odd = datetime(2024, 11, 22, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    e = entry("a", seen=odd, published=datetime(1969, 7, 20, 20, 17, tzinfo=timezone.utc))
    store.commit_poll(poll(now=odd, upserts=(e,), next_poll=odd + timedelta(seconds=1)))
    got = store.entries("f")["a"]
    assert got == e
    assert got.last_seen.utcoffset() == timedelta(0) and got.last_seen.tzinfo is not None
    rec = store.feed("f")
    assert rec is not None and rec.last_poll == odd and rec.last_poll.tzinfo == timezone.utc
    with pytest.raises(ValueError, match="naive"):
        store.set_next_poll("f", datetime(2024, 1, 1))


# ---------------------------------------------------------------------------
# Contract: atomicity and duplicates
# ---------------------------------------------------------------------------


def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        store.feeds(),
        {name: store.entries(name) for name in store.feeds()},
        store.pending(),
        store.sink_counts(),
        store.alerts_for("f"),
    )


def test_commit_poll_is_all_or_nothing(store: Store) -> None:
    bad = alert("bad", payload={"oops": object()})  # json cannot serialise it
    # a feed never seen: nothing at all may be left behind
    with pytest.raises(TypeError):
        store.commit_poll(poll(upserts=(entry("a"),), alerts=(alert("ok"), bad)))
    assert _snapshot(store) == ({}, {}, [], {}, [])
    # a known feed: every part of the failing poll is undone
    store.commit_poll(poll(upserts=(entry("a"), entry("b")), alerts=(alert("x0"),)))
    before = _snapshot(store)
    with pytest.raises(TypeError):
        store.commit_poll(
            poll(
                now=at(60), upserts=(entry("c"), entry("a", title="changed")), touched=("b",),
                rekeys=(("b", "b2"),), alerts=(alert("x1"), bad), prune_before=at(30),
                http_status=203, etag='"e2"',
            )
        )  # fmt: skip
    assert _snapshot(store) == before
    # and the store is usable afterwards
    assert store.commit_poll(poll(now=at(90), alerts=(alert("x1"),))) == ["x1"]


def test_duplicate_alert_ids_are_skipped_within_and_across_polls(store: Store) -> None:
    first = store.commit_poll(
        poll(alerts=(alert("x1", sinks=("a", "b")), alert("x1", sinks=("c",)), alert("x2")))
    )
    assert first == ["x1", "x2"]
    again = store.commit_poll(poll(now=at(60), alerts=(alert("x1", sinks=("a", "z")), alert("x3"))))
    assert again == ["x3"]
    assert store.queue_notices([alert("x2"), alert("n1", kind="stale", detected=at(70))]) == ["n1"]
    pairs = [(d.alert_id, d.sink) for d in store.pending()]
    assert sorted(pairs) == [("n1", "mail"), ("x1", "a"), ("x1", "b"), ("x2", "mail"),
                             ("x3", "mail")]  # fmt: skip
    # a sink named twice in one alert is one delivery
    assert store.commit_poll(poll(alerts=(alert("x4", sinks=("a", "a")),))) == ["x4"]
    assert [d.sink for d in store.pending() if d.alert_id == "x4"] == ["a"]


def test_duplicate_keys_send_one_alert_per_sink_across_feeds(store: Store) -> None:
    """``duplicates = "skip"``: the first alert of a key takes each of its sinks; a later
    one (another feed, another poll) goes only where none went, and is still recorded
    (its id never alerts again) when it goes nowhere."""
    dup = {"duplicate_key": "k1"}
    first = replace(alert("a1", feed="world", sinks=("mail",)), **dup)
    assert store.commit_poll(poll("world", alerts=(first,))) == ["a1"]
    wider = replace(alert("b1", feed="europe", sinks=("mail", "chat")), **dup)
    same = replace(alert("c1", feed="russia", sinks=("mail",)), **dup)
    other = replace(alert("c2", feed="russia", sinks=("mail",)), duplicate_key="k2")
    plain = alert("c3", feed="russia", sinks=("mail",))  # no key: as ever
    assert store.commit_poll(poll("europe", now=at(10), alerts=(wider,))) == ["b1"]
    assert store.commit_poll(poll("russia", now=at(20), alerts=(same, other, plain))) == [
        "c2",
        "c3",
    ]
    pairs = sorted((d.alert_id, d.sink) for d in store.pending())
    assert pairs == [("a1", "mail"), ("b1", "chat"), ("c2", "mail"), ("c3", "mail")]
    # the duplicate is recorded: offered again, it is not queued, not even where it could go
    assert (
        store.commit_poll(poll("russia", now=at(30), alerts=(replace(same, sinks=("sms",)),))) == []
    )
    # within one poll too, and two alerts of one key in one commit
    twins = (
        replace(alert("d1", feed="asia", sinks=("mail",)), duplicate_key="k3"),
        replace(alert("d2", feed="asia", sinks=("mail", "chat")), duplicate_key="k3"),
    )
    assert store.commit_poll(poll("asia", now=at(40), alerts=twins)) == ["d1", "d2"]
    assert [d.sink for d in store.pending() if d.alert_id == "d2"] == ["chat"]
    # what check, a dry run and explain read back
    assert store.duplicate_claims(["k1", "k2", "k3", "nope", "k1"]) == {
        "k1": {"mail": "a1", "chat": "b1"},
        "k2": {"mail": "c2"},
        "k3": {"mail": "d1", "chat": "d2"},
    }
    (skipped,) = store.alerts_for("russia", identity=None, limit=1_000)[-1:]
    assert skipped.alert_id == "c1" and skipped.deliveries == ()
    assert skipped.duplicate_of == (("chat", "b1", "europe"), ("mail", "a1", "world"))


def test_queue_notices_sets_stale_notified(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"),)))
    ids = store.queue_notices(
        [alert("s1", kind="stale", sinks=("mail", "hook"), detected=at(10))], stale_notified=True
    )
    assert ids == ["s1"]
    rec = store.feed("f", counts=True)
    assert rec is not None and rec.stale_notified and rec.entries == 1
    assert {(d.alert_id, d.sink, d.kind, d.created_at) for d in store.pending()} == {
        ("s1", "mail", "stale", at(10)), ("s1", "hook", "stale", at(10)),
    }  # fmt: skip
    store.queue_notices([alert("r1", kind="recovered", detected=at(20))], stale_notified=False)
    rec = store.feed("f")
    assert rec is not None and not rec.stale_notified
    # a poll leaves the flag alone unless it says otherwise
    store.queue_notices([], stale_notified=None)
    store.commit_poll(poll(now=at(30), stale_notified=None))
    rec = store.feed("f")
    assert rec is not None and not rec.stale_notified


def test_pull_back_times_stores_now_for_the_times_ahead_only(store: Store) -> None:
    """A poll by a clock a year ahead left its times there (staleness.as_of)."""
    year = timedelta(days=365)
    store.commit_poll(poll(now=T0 + year, had_new_entry=True))
    store.pull_back_times("f", at(10))
    rec = store.feed("f")
    assert rec is not None and (rec.last_success, rec.last_new_entry) == (at(10), at(10))
    assert rec.last_poll == T0 + year  # not a time staleness counts from
    # times not ahead stay; a feed without a last new entry keeps none
    store.pull_back_times("f", at(20))
    rec = store.feed("f")
    assert rec is not None and (rec.last_success, rec.last_new_entry) == (at(10), at(10))
    store.commit_poll(poll(feed="g", now=T0 + year))
    store.pull_back_times("g", at(10))
    rec = store.feed("g")
    assert rec is not None and (rec.last_success, rec.last_new_entry) == (at(10), None)
    store.pull_back_times("missing", at(10))
    assert store.feed("missing") is None


# ---------------------------------------------------------------------------
# Contract: the outbox
# ---------------------------------------------------------------------------


def test_pending_oldest_alert_first_then_insertion_order(store: Store) -> None:
    store.commit_poll(poll("f", now=at(100), alerts=(alert("z-late", "f"),)))
    store.commit_poll(poll("g", now=at(0), alerts=(alert("m", "g"), alert("a", "g"))))
    store.commit_poll(poll("h", now=at(50), alerts=(alert("k", "h", sinks=("hook", "mail")),)))
    order = [(d.alert_id, d.sink) for d in store.pending()]
    assert order == [("m", "mail"), ("a", "mail"), ("k", "hook"), ("k", "mail"),
                     ("z-late", "mail")]  # fmt: skip
    assert [d.alert_id for d in store.pending(sink="hook")] == ["k"]
    assert [d.alert_id for d in store.pending(sink="nope")] == []


def test_a_clock_set_back_moves_the_retries_waiting_by_as_much(store: Store, backend: str) -> None:
    """Retries set on a clock an hour ahead wait an hour too many once NTP sets it
    back: each waiting one moves back by the step (never before now); due ones and
    finished ones stay. A shared PostgreSQL state is left alone (store.base)."""
    store.commit_poll(poll(alerts=(alert("x1"), alert("x2"), alert("x3"), alert("x4"))))
    store.mark_retry("mail", ["x1"], at(3600), error="503", next_attempt=at(3660))
    store.mark_retry("mail", ["x2"], at(3600), error="503", next_attempt=at(7200))
    store.mark_retry("mail", ["x3"], at(3600), error="503", next_attempt=at(3610))
    store.mark_dead("mail", ["x4"], at(3600), error="404")
    now = at(5)  # the clock went from 3605 back to 5
    moved = store.shift_retries(-3600.0, now)
    when = {d.alert_id: d.next_attempt for d in store.pending()}
    if backend == "postgres":
        assert moved == 0 and when == {"x1": at(3660), "x2": at(7200), "x3": at(3610)}
        return
    assert moved == 3
    assert when == {"x1": at(60), "x2": at(3600), "x3": at(10)}
    assert store.shift_retries(3600.0, now) == 0  # a step forward: they are due sooner anyway


def test_pending_due_at_and_marks(store: Store) -> None:
    store.commit_poll(poll(alerts=(alert("x1", sinks=("mail", "hook")), alert("x2"))))
    assert {d.alert_id for d in store.pending(due_at=T0)} == {"x1", "x2"}
    assert store.pending(due_at=at(-1)) == []
    store.mark_retry("mail", ["x1"], at(5), error="timeout", next_attempt=at(35))
    store.mark_retry("mail", ["x1"], at(40), error="HTTP 503", next_attempt=at(100))
    due = store.pending(sink="mail", due_at=at(50))
    assert [d.alert_id for d in due] == ["x2"]
    (x1,) = [d for d in store.pending(sink="mail") if d.alert_id == "x1"]
    assert (x1.attempts, x1.last_error, x1.next_attempt) == (2, "HTTP 503", at(100))
    assert [d.alert_id for d in store.pending(sink="mail", due_at=at(100))] == ["x1", "x2"]

    store.mark_delivered("mail", ["x1", "x2"], at(101))
    store.mark_dead("hook", ["x1"], at(102), error="HTTP 404")
    assert store.pending() == []
    # a late retry or dead mark never revives a delivered one
    store.mark_retry("mail", ["x1"], at(103), error="late", next_attempt=at(200))
    store.mark_dead("mail", ["x2"], at(103), error="late")
    assert store.sink_counts() == {
        "hook": SinkCounts(pending=0, delivered=0, dead=1),
        "mail": SinkCounts(pending=0, delivered=2, dead=0),
    }
    (rec,) = store.alerts_for("f", limit=1)
    assert rec.alert_id == "x2"
    (d,) = rec.deliveries
    assert (d.status, d.delivered_at, d.sink) == ("delivered", at(101), "mail")
    (rec1,) = [r for r in store.alerts_for("f") if r.alert_id == "x1"]
    hook, mail = rec1.deliveries
    assert (hook.sink, hook.status, hook.last_error) == ("hook", "dead", "HTTP 404")
    assert (mail.sink, mail.status, mail.attempts) == ("mail", "delivered", 3)  # 2 failed, 1 sent


def test_redeliver_filters_by_sink_and_feed(store: Store) -> None:
    store.commit_poll(poll("f", alerts=(alert("f1", "f", ("mail", "hook")),)))
    store.commit_poll(poll("g", alerts=(alert("g1", "g", ("mail", "hook")),)))
    for sink in ("mail", "hook"):
        store.mark_retry(sink, ["f1", "g1"], at(1), error="503", next_attempt=at(30))
        store.mark_dead(sink, ["f1", "g1"], at(2), error="401 Unauthorized")
    assert store.pending() == []
    assert store.redeliver(at(10), sink="nope") == 0
    assert store.redeliver(at(10), sink="hook", feed="g") == 1
    assert [(d.alert_id, d.sink, d.attempts, d.next_attempt) for d in store.pending()] == [
        ("g1", "hook", 0, at(10))
    ]
    assert store.redeliver(at(20), feed="f") == 2
    assert store.redeliver(at(30), sink="mail") == 1  # g1/mail: the only dead one left
    assert store.redeliver(at(40)) == 0
    assert store.sink_counts() == {"hook": SinkCounts(pending=2), "mail": SinkCounts(pending=2)}


def test_the_recipients_a_delivery_is_still_owed_stay_until_it_is_delivered(
    store: Store,
) -> None:
    """Some recipients took it: the others are stored (a retry, then `redeliver` of the
    dead delivery, goes to them alone); a failure of the whole send keeps them."""
    store.commit_poll(poll(alerts=(alert("x1", sinks=("mail", "hook")),)))
    assert {d.recipients_left for d in store.pending()} == {None}
    store.mark_retry(
        "mail", ["x1"], at(1), error="452", next_attempt=at(30), recipients_left=["b@x", "c@x"]
    )
    store.mark_retry("mail", ["x1"], at(31), error="connection refused", next_attempt=at(90))
    store.mark_retry("hook", ["x1"], at(1), error="503", next_attempt=at(30))
    got = {d.sink: d.recipients_left for d in store.pending()}
    assert got == {"mail": ("b@x", "c@x"), "hook": None}
    store.mark_dead("mail", ["x1"], at(91), error="550 c@x", recipients_left=["c@x"])
    (rec,) = store.alerts_for("f")
    assert {d.sink: (d.status, d.recipients_left) for d in rec.deliveries} == {
        "mail": ("dead", ("c@x",)),
        "hook": ("pending", None),
    }
    assert store.redeliver(at(100), sink="mail") == 1
    (mail,) = store.pending(sink="mail")
    assert (mail.attempts, mail.recipients_left) == (0, ("c@x",))
    assert [d.recipients_left for p in store.pending_pages("mail") for d in p] == [("c@x",)]


def test_sink_counts(store: Store) -> None:
    store.commit_poll(poll(alerts=tuple(alert(f"x{i}", sinks=("a", "b")) for i in range(5))))
    store.mark_delivered("a", ["x0", "x1", "x2"], at(1))
    store.mark_dead("a", ["x3"], at(1), error="no")
    store.mark_dead("b", ["x0"], at(1), error="no")
    assert store.sink_counts() == {
        "a": SinkCounts(pending=1, delivered=3, dead=1),
        "b": SinkCounts(pending=4, delivered=0, dead=1),
    }
    assert store.pending_counts() == {"a": 1, "b": 4}  # (feedwatch_outbox_pending)
    store.mark_delivered("a", ["x4"], at(2))
    assert store.pending_counts() == {"b": 4}


def test_alerts_for_newest_first_by_identity_with_limit(store: Store) -> None:
    store.commit_poll(poll(now=at(0), alerts=(alert("n-a", identity="a"),)))
    store.commit_poll(
        poll(now=at(10), alerts=(alert("u-a", identity="a", kind="updated"),
                                 alert("n-b", identity="b")))
    )  # fmt: skip
    store.commit_poll(poll("g", now=at(20), alerts=(alert("g", "g", identity="a"),)))
    store.queue_notices([alert("stale", kind="stale", sinks=(), detected=at(30))])
    assert [a.alert_id for a in store.alerts_for("f")] == ["stale", "n-b", "u-a", "n-a"]
    assert [a.alert_id for a in store.alerts_for("f", "a")] == ["u-a", "n-a"]
    assert [a.alert_id for a in store.alerts_for("f", limit=2)] == ["stale", "n-b"]
    upd = store.alerts_for("f", "a", limit=1)[0]
    assert (upd.kind, upd.identity, upd.feed, upd.created_at) == ("updated", "a", "f", at(10))
    assert upd.payload == {"version": 1, "id": "u-a", "kind": "updated"}
    assert [(d.sink, d.status) for d in upd.deliveries] == [("mail", "pending")]
    assert store.alerts_for("f")[0].deliveries == ()


def test_prune_deliveries(store: Store) -> None:
    store.commit_poll(poll(now=at(0), alerts=(alert("old-done", sinks=("a", "b")),
                                              alert("old-mixed", sinks=("a", "b")))))  # fmt: skip
    store.commit_poll(poll(now=at(100), alerts=(alert("new-done"),)))
    store.mark_delivered("a", ["old-done", "old-mixed"], at(1))
    store.mark_dead("b", ["old-done"], at(1), error="x")
    store.mark_delivered("mail", ["new-done"], at(101))
    assert _pruned(store, at(50)) == 3
    left = {(a.alert_id, tuple(d.sink for d in a.deliveries)) for a in store.alerts_for("f")}
    assert left == {("old-mixed", ("b",)), ("new-done", ("mail",))}
    assert [(d.alert_id, d.sink) for d in store.pending()] == [("old-mixed", "b")]
    assert _pruned(store, at(50)) == 0


def test_a_poll_drops_the_expired_alert_of_an_id_it_makes_again_and_queues_it(
    store: Store,
) -> None:
    """An entry back unchanged after `retention` makes its first `new` alert's id. When
    no prune had dropped that alert yet (`check` prunes after its polls, the daemon
    hourly), the insert was ignored: the entry stored as known, never alerting again.
    A poll drops such an alert itself, on the prune's condition (made before
    `alerts_before`, no delivery pending), with its deliveries and claims, and queues
    the new one; one still pending, or younger, is kept and nothing is queued."""
    fates: dict[str, tuple[tuple[str, str], ...]] = {
        "done": (("a", "delivered"), ("b", "dead")),
        "waiting": (("a", "delivered"), ("b", "pending")),
        "nowhere": (),
        "young": (("a", "delivered"),),
    }

    def made(alert_id: str, n: int) -> Alert:
        a = alert(alert_id, sinks=tuple(s for s, _ in fates[alert_id]), payload={"n": n})
        return replace(a, duplicate_key=f"k-{alert_id}")

    for alert_id, t in (("done", 0), ("waiting", 0), ("nowhere", 0), ("young", 160)):
        assert store.commit_poll(poll(now=at(t), alerts=(made(alert_id, 1),))) == [alert_id]
        for sink, status in fates[alert_id]:
            if status == "delivered":
                store.mark_delivered(sink, [alert_id], at(t + 1))
            elif status == "dead":
                store.mark_dead(sink, [alert_id], at(t + 1), error="x")
    again = tuple(made(a, 2) for a in fates)
    assert store.recorded_alerts(list(fates)) == set(fates)
    assert store.recorded_alerts(list(fates), at(150)) == {"waiting", "young"}  # a dry run's
    assert store.commit_poll(poll(now=at(200), alerts=again)) == []  # no cut: none again
    assert store.commit_poll(poll(now=at(200), alerts=again, alerts_before=at(150))) == [
        "done",
        "nowhere",
    ]
    left = {
        a.alert_id: (a.created_at, a.payload, tuple((d.sink, d.status) for d in a.deliveries))
        for a in store.recent_alerts(AlertQuery(limit=10))
    }
    assert left == {
        "done": (at(200), {"n": 2}, (("a", "pending"), ("b", "pending"))),
        "waiting": (at(0), {"n": 1}, fates["waiting"]),
        "nowhere": (at(200), {"n": 2}, ()),
        "young": (at(160), {"n": 1}, fates["young"]),
    }
    assert store.duplicate_claims(["k-done"]) == {"k-done": {"a": "done", "b": "done"}}
    # made again within `retention` of the new one: never sent twice
    assert store.commit_poll(poll(now=at(210), alerts=again, alerts_before=at(150))) == []


def test_a_story_whose_claiming_alert_expired_goes_out_again_from_another_feed(
    store: Store,
) -> None:
    """`duplicates = "skip"`: a story alerted from feed f (f's alert holds the claim),
    then gone from both feeds past `retention`, came back in feed g only: g's alert was
    queued to no sink, f's expired claim still held, and the prune then dropped f's
    alert, so the story never went out (the dry run said so too). A poll drops an
    expired alert holding its story's claims, as the prune would, and queues its own."""
    first = replace(alert("from-f", "f", sinks=("a",)), duplicate_key="story")
    assert store.commit_poll(poll("f", now=at(0), alerts=(first,))) == ["from-f"]
    store.mark_delivered("a", ["from-f"], at(1))
    again = replace(alert("from-g", "g", sinks=("a",)), duplicate_key="story")
    # within retention (no cut, or one before f's alert): still sent, so skipped
    assert store.duplicate_claims(["story"], at(0)) == {"story": {"a": "from-f"}}
    # a dry run's view with the cut after f's alert: the claim is the commit's to drop
    assert store.duplicate_claims(["story"], at(150)) == {}
    assert store.commit_poll(poll("g", now=at(200), alerts=(again,), alerts_before=at(150))) == [
        "from-g"
    ]
    assert store.duplicate_claims(["story"]) == {"story": {"a": "from-g"}}
    assert [d.alert_id for d in store.pending()] == ["from-g"]
    # a claim of an alert still pending somewhere is kept
    late = replace(alert("from-h", "h", sinks=("a",)), duplicate_key="story")
    assert store.commit_poll(poll("h", now=at(400), alerts=(late,), alerts_before=at(350))) == []


# Alert i of the prune tests: its sinks, and what each of them ends as.
_PRUNE_FATES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("a", "delivered"), ("b", "pending")),  # kept, without a's delivery
    (("a", "pending"),),  # kept whole
    (("a", "delivered"), ("b", "dead")),  # all gone
    (),  # routed nowhere: no delivery, gone once old
    (("a", "dead"),),  # gone
)


def _prune_state(store: Store) -> dict[str, tuple[datetime, tuple[tuple[str, str], ...]]]:
    """Nine polls of three alerts each (three created at the same time, ties the walk
    splits), every kind of delivery fate at every place of a batch; every third alert
    claims a duplicate key. The alerts: their creation time and deliveries."""
    made = {}
    for k in range(9):
        alerts, fates = [], []
        for j in range(3):
            i = 3 * k + j
            fate = _PRUNE_FATES[(i * 2) % len(_PRUNE_FATES)]  # not in step with the polls
            a = replace(alert(f"p{i:02}", sinks=tuple(s for s, _ in fate)),
                        duplicate_key=f"k{i}" if i % 3 == 0 else None)  # fmt: skip
            alerts.append(a)
            fates.append((a.id, fate))
            made[a.id] = (at(10 * k), fate)
        store.commit_poll(poll(now=at(10 * k), alerts=tuple(alerts)))
        for alert_id, fate in fates:
            for sink, status in fate:
                if status == "delivered":
                    store.mark_delivered(sink, [alert_id], at(10 * k + 1))
                elif status == "dead":
                    store.mark_dead(sink, [alert_id], at(10 * k + 1), error="x")
    return made


def _alerts_left(store: Store) -> dict[str, tuple[tuple[str, str], ...]]:
    return {
        a.alert_id: tuple((d.sink, d.status) for d in a.deliveries)
        for a in store.recent_alerts(AlertQuery(limit=1000))
    }


@pytest.mark.parametrize("batch", [1, 2, 5, 24, 1000])
def test_prune_in_batches_drops_what_one_transaction_did(
    store: Store, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune over every alert older than `retention` in one transaction held the
    daemon for minutes after `retention` was lowered (1.5M alerts: 149 s on SQLite), and
    on PostgreSQL was cut at SLOW_LIMIT and never done. It goes PRUNE_BATCH alerts a
    transaction, and drops the same rows: each batch's finished deliveries, then its
    alerts left with none, pending ones kept wherever they fall (a kept alert never
    stops the walk, and alerts created at the same time may fall in two batches)."""
    import feedwatch.store.rows as rows

    monkeypatch.setattr(rows, "PRUNE_BATCH", batch)
    made = _prune_state(store)
    cut = at(75)  # the 24 alerts of the first 8 polls are older, the last 3 are not
    expected = {}
    for alert_id, (created, fate) in made.items():
        left = tuple(d for d in fate if created >= cut or d[1] == "pending")
        if created >= cut or left:
            expected[alert_id] = left
    dropped = sum(len(f) - len(expected.get(a, ())) for a, (_, f) in made.items())
    assert dropped == 20 and len(expected) == 13  # what the two statements dropped
    steps = []
    before = set(_alerts_left(store))
    for n in store.prune_batches(cut):
        now = set(_alerts_left(store))
        steps.append((n, len(before - now)))
        before = now
    assert all(gone <= batch for _, gone in steps)  # never more than a batch at once
    assert len(steps) == 24 // batch + 1  # the last one short of a batch
    assert sum(n for n, _ in steps) == dropped
    assert _alerts_left(store) == expected
    claims = store.duplicate_claims([f"k{i}" for i in range(27)])
    # a claim goes with its alert (one routed nowhere has none)
    assert set(claims) == {f"k{int(a[1:])}" for a in expected if int(a[1:]) % 3 == 0 and made[a][1]}
    assert _pruned(store, cut) == 0 and _alerts_left(store) == expected


def test_drop_removed_feeds_in_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A removed feed keeps its entries until `retention`: several removed together can
    hold millions, once too many for one transaction. They go DROP_BATCH entries a
    transaction; a feed half dropped is reset as by `forget` (a poll of it meanwhile,
    put back in the config, is a baseline), its row goes with its last entries."""
    import feedwatch.store.rows as rows

    monkeypatch.setattr(rows, "DROP_BATCH", 2)
    for name, n, polled in (("old1", 5, at(0)), ("old2", 3, at(0)), ("kept", 4, at(0)),
                            ("recent", 3, at(500))):  # fmt: skip
        store.commit_poll(
            poll(name, now=polled, upserts=tuple(entry(f"e{i}", polled) for i in range(n)))
        )
    store.set_next_poll("never", at(10))  # a row never polled, no entries
    count = lambda: sum(len(store.entries(f)) for f in ("old1", "old2", "kept", "recent"))  # noqa: E731
    left = count()
    steps = []
    for names in store.drop_batches(["kept"], at(100)):
        steps.append((names, left - count()))
        left = count()
        if steps[0][0] == [] and len(steps) == 1:
            rec = store.feed("old1")
            assert rec is not None and not rec.baselined and rec.etag is None  # as `forget`
    assert [gone for _, gone in steps] == [2, 2, 2, 2, 0]
    assert [names for names, _ in steps] == [["never"], [], ["old1"], [], ["old2"]]
    assert set(store.feeds()) == {"kept", "recent"}
    assert len(store.entries("kept")) == 4 and len(store.entries("recent")) == 3
    assert _dropped(store, ["kept"], at(100)) == []


def test_reopen_keeps_everything(reopen: Callable[[], Store]) -> None:
    s = reopen()
    s.commit_poll(
        poll(upserts=(entry("a"), entry("b", updated=at(3))), next_poll=at(900),
             alerts=(alert("x1", sinks=("m", "h"), identity="a"),), had_new_entry=True)
    )  # fmt: skip
    s.record_failure("g", "u", at(5), http_status=500, error="HTTP 500", next_poll=at(65))
    s.mark_retry("m", ["x1"], at(6), error="timeout", next_attempt=at(36))
    s.mark_dead("h", ["x1"], at(7), error="gone")
    before = (
        s.feeds(), s.entries("f"), s.pending(), s.sink_counts(), s.alerts_for("f"),
    )  # fmt: skip
    s.close()
    s2 = reopen()
    after = (s2.feeds(), s2.entries("f"), s2.pending(), s2.sink_counts(), s2.alerts_for("f"))
    assert after == before
    assert s2.commit_poll(poll(now=at(60), alerts=(alert("x1"),))) == []


# ---------------------------------------------------------------------------
# Contract: no (alert, sink) is ever queued twice, whatever the sequence
# ---------------------------------------------------------------------------

_ids = st.sampled_from([f"id{i}" for i in range(6)])
_sinks = st.lists(st.sampled_from(["a", "b", "c"]), max_size=3).map(tuple)
_op = st.one_of(
    st.tuples(
        st.just("poll"), st.sampled_from(["f", "g"]), st.lists(st.tuples(_ids, _sinks), max_size=4)
    ),  # fmt: skip
    st.tuples(
        st.just("notice"),
        st.sampled_from(["f", "g"]),
        st.lists(st.tuples(_ids, _sinks), max_size=2),
    ),  # fmt: skip
    st.tuples(st.just("delivered"), st.sampled_from(["a", "b", "c"]), st.lists(_ids, max_size=3)),
    st.tuples(st.just("dead"), st.sampled_from(["a", "b", "c"]), st.lists(_ids, max_size=3)),
    st.tuples(st.just("redeliver"), st.sampled_from([None, "a"]), st.none()),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(_op, max_size=12))
def test_property_no_alert_sink_queued_twice(backend: str, ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as where:
        store = _open_backend(backend, Path(where))
        try:
            queued: list[str] = []
            sinks_of: dict[str, set[str]] = {}
            for step, (kind, arg, items) in enumerate(ops):
                now = at(step)
                if kind in ("poll", "notice"):
                    alerts = [alert(i, arg, s, detected=now) for i, s in items]
                    if kind == "poll":
                        got = store.commit_poll(poll(arg, now=now, alerts=tuple(alerts)))
                    else:
                        got = store.queue_notices(alerts)
                    for a in alerts:
                        if a.id in got and a.id not in sinks_of:
                            sinks_of[a.id] = set(a.sinks)  # the first one recorded wins
                    queued += got
                elif kind == "delivered":
                    store.mark_delivered(arg, items, now)
                elif kind == "dead":
                    store.mark_dead(arg, items, now, error="x")
                else:
                    store.redeliver(now, sink=arg)
                pending = [(d.alert_id, d.sink) for d in store.pending()]
                assert len(pending) == len(set(pending))
            assert len(queued) == len(set(queued))
            records = {a.alert_id: a for g in ("f", "g") for a in store.alerts_for(g, limit=100)}
            assert set(records) == set(queued)
            for alert_id, rec in records.items():
                sinks = [d.sink for d in rec.deliveries]
                assert len(sinks) == len(set(sinks))
                assert set(sinks) == sinks_of[alert_id]
            counts = store.sink_counts()
            total = sum(c.pending + c.delivered + c.dead for c in counts.values())
            assert total == sum(len(s) for s in sinks_of.values())
        finally:
            store.close()


_keyed_alert = st.tuples(
    st.sampled_from(["a1", "a2", "a3", "a4", "a5", "a6"]),  # ids: some offered again
    st.sampled_from(["f", "g", "h"]),
    st.lists(st.sampled_from(["mail", "chat", "sms"]), max_size=3),
    st.sampled_from([None, "k1", "k2"]),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(polls=st.lists(st.lists(_keyed_alert, min_size=1, max_size=4), max_size=6))
def test_property_a_duplicate_key_reaches_each_sink_once(backend: str, polls: list) -> None:
    """Whatever the order, feeds and repeats: each (key, sink) has one delivery at most,
    the first alert of a key takes every sink still free, a later one only those, and a
    keyed alert left with no sink is recorded but not queued."""
    with tempfile.TemporaryDirectory() as where:
        store = _open_backend(backend, Path(where))
        try:
            claims: dict[tuple[str, str], str] = {}
            expected: dict[str, list[str]] = {}  # alert id -> the sinks it was queued for
            for step, items in enumerate(polls):
                offered = [
                    replace(alert(i, feed, tuple(sinks)), duplicate_key=key)
                    for i, feed, sinks, key in items
                ]
                want: list[str] = []
                for a in offered:
                    if a.id in expected:  # an id once recorded is never queued again
                        continue
                    free = list(dict.fromkeys(a.sinks))
                    if a.duplicate_key is not None:
                        free = [x for x in free if (a.duplicate_key, x) not in claims]
                        claims.update({(a.duplicate_key, x): a.id for x in free})
                    expected[a.id] = free
                    if free or not a.sinks:
                        want.append(a.id)
                got = store.commit_poll(poll(f"p{step}", now=at(step), alerts=tuple(offered)))
                assert got == want
            pending = sorted((d.alert_id, d.sink) for d in store.pending())
            assert pending == sorted((i, x) for i, sinks in expected.items() for x in sinks)
            held: dict[str, dict[str, str]] = {}
            for (key, sink), owner in claims.items():
                held.setdefault(key, {})[sink] = owner
            assert store.duplicate_claims(["k1", "k2"]) == held
        finally:
            store.close()


# ---------------------------------------------------------------------------
# Performance: flat as the table grows
# ---------------------------------------------------------------------------


def test_commit_poll_stays_fast_on_a_big_table(store: Store) -> None:
    for f in range(10):  # 20,000 entries in the store
        store.commit_poll(poll(f"feed{f}", upserts=tuple(entry(f"e{i}") for i in range(2000))))
    store.commit_poll(poll("big", upserts=tuple(entry(f"e{i}") for i in range(550))))
    timings = []
    for rnd in range(5):
        now = at(60 * (rnd + 1))
        commit = poll(
            "big", now=now,
            upserts=tuple(entry(f"e{i}", seen=now, title=f"v{rnd}") for i in range(50)),
            touched=tuple(f"e{i}" for i in range(50, 550)),
            alerts=tuple(alert(f"r{rnd}-{i}", "big", identity=f"e{i}") for i in range(50)),
            prune_before=at(-1),
        )  # fmt: skip
        start = time.perf_counter()
        store.commit_poll(commit)
        timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert len(store.entries("big")) == 550
        timings.append(time.perf_counter() - start)
    # a few ms each on a laptop; the bound only catches a full-table scan gone wrong
    assert sorted(timings)[len(timings) // 2] < 0.1, timings


def test_queries_use_indexes(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        for sql in (
            "SELECT * FROM entries WHERE feed = 'f'",
            "UPDATE entries SET last_seen = 1 WHERE feed = 'f' AND identity = 'x'",
            "SELECT * FROM deliveries WHERE status = 'pending' AND sink = 'a'",
            "SELECT * FROM alerts WHERE feed = 'f' AND identity = 'a'",
            # retention, and a comparison's read (each term its own index search)
            "DELETE FROM entries WHERE feed = 'f' AND last_seen < 5",
            "SELECT * FROM entries WHERE (feed = 'f' AND identity IN ('a', 'b'))"
            " OR (feed = 'f' AND link_key IN ('x')) OR (feed = 'f' AND link_key IS NULL)",
            # what a 304 sees again, and what a changed poll compares its body with
            "UPDATE entries SET last_seen = 1 WHERE feed = 'f' AND in_body = 1",
            "SELECT identity FROM entries WHERE feed = 'f' AND in_body = 1",
        ):
            plan = " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "USING" in plan and "INDEX" in plan, (sql, plan)
            if sql.startswith("DELETE"):
                assert "entries_seen (feed=? AND last_seen<?)" in plan, plan
            if "link_key" in sql:
                assert "MULTI-INDEX OR" in plan, plan
            if "in_body" in sql:
                assert "entries_body" in plan, plan
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# SQLite: the file itself
# ---------------------------------------------------------------------------


def _filled(path: Path) -> None:
    with SqliteStore(path) as s:
        s.commit_poll(
            poll(upserts=tuple(entry(f"e{i}", content="x" * 2000) for i in range(200)),
                 alerts=(alert("x1"),))
        )  # fmt: skip


def test_open_store_creates_private_file_and_dirs(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    s = open_store(str(path))
    assert isinstance(s, SqliteStore)
    s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sqlite_rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert sqlite_rows(path, "PRAGMA user_version") == [(len(SqliteStore.MIGRATIONS),)]


def test_open_store_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = open_store("~/st/state.db")
    assert s is not None
    assert s.path == str(tmp_path / "st" / "state.db")
    s.close()
    assert (tmp_path / "st" / "state.db").exists()


def test_open_store_without_create_creates_nothing(tmp_path: Path) -> None:
    assert open_store(str(tmp_path / "no" / "state.db"), create=False) is None
    assert open_store(str(tmp_path / "state.db"), create=False) is None
    assert list(tmp_path.iterdir()) == []
    _filled(tmp_path / "state.db")
    s = open_store(str(tmp_path / "state.db"), create=False)
    assert s is not None and s.feed("f") is not None
    s.close()


def test_open_store_unreachable_postgresql_does_not_echo_the_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(StateError, match="cannot connect to the PostgreSQL state") as info:
        open_store(f"postgresql://feedwatch:hunter2secret@127.0.0.1:{port}/feedwatch")
    assert "hunter2secret" not in str(info.value)
    assert f"postgresql://***@127.0.0.1:{port}/feedwatch" in str(info.value)
    with pytest.raises(StateError, match="not supported"):
        open_store("mysql://x@y/z")
    with pytest.raises(StateError, match="empty"):
        open_store("")


def test_a_password_with_an_unencoded_at_sign_is_masked_whole() -> None:
    """libpq splits "feedwatch:s3cr@tTail99@host" at the first "@" and names the rest
    as the host in its error: that piece of the password was shown. Such a URL is
    refused before libpq reads it, in words that quote none of it."""
    from feedwatch.redact import clear_secrets
    from feedwatch.store.postgres import safe_location

    url = "postgresql://feedwatch:s3cr@tTail99@127.0.0.1:5432/feedwatch"
    try:
        where = safe_location(url)
        assert where == "postgresql://***@127.0.0.1:5432/feedwatch"
        with pytest.raises(StateError, match='^not a valid PostgreSQL URL: an "@"') as info:
            open_store(url)
        assert "s3cr" not in str(info.value) and "tTail99" not in str(info.value)
    finally:
        clear_secrets()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StateError) as info:
        SqliteStore(path)
    msg = str(info.value)
    assert str(path) in msg and "upgrade feedwatch" in msg and "99" in msg
    assert sqlite_rows(path, "PRAGMA user_version") == [(99,)]


@pytest.mark.parametrize("depth", [0, 1])
def test_a_file_where_the_state_directory_should_be_is_named(tmp_path: Path, depth: int) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    path = blocker / "sub" / "state.db" if depth else blocker / "state.db"
    with pytest.raises(StateError) as info:
        SqliteStore(path)
    msg = str(info.value)
    assert str(path) in msg and f"{blocker} is a file, not a directory" in msg
    with pytest.raises(StateError, match="is a file, not a directory"):
        acquire_lock(path)
    assert blocker.read_text() == "x"


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.close()
    with pytest.raises(StateError, match="not a feedwatch state file"):
        SqliteStore(path)


class _StoreV2(SqliteStore):
    MIGRATIONS = (*SqliteStore.MIGRATIONS, ("ALTER TABLE feeds ADD COLUMN note TEXT",))


def test_migration_writes_backup_first(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    v1 = len(SqliteStore.MIGRATIONS)
    with _StoreV2(path) as s:
        assert s.feed("f") is not None and len(s.entries("f")) == 200
    backup = tmp_path / f"state.db.bak-v{v1}"
    assert sqlite_rows(path, "PRAGMA user_version") == [(v1 + 1,)]
    assert sqlite_rows(backup, "PRAGMA user_version") == [(v1,)]
    assert sqlite_rows(backup, "SELECT COUNT(*) FROM entries") == [(200,)]
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    with pytest.raises(StateError, match="upgrade feedwatch"):
        SqliteStore(path)  # the older code refuses the migrated file


def test_a_failed_backup_leaves_nothing_and_migrates_nothing(tmp_path: Path) -> None:
    """Where no tiny disk can be mounted (test_state_trouble has the full-disk case):
    the backup's name is taken by a directory, so the copy cannot be put in place."""
    path = tmp_path / "state.db"
    _filled(path)
    v1 = len(SqliteStore.MIGRATIONS)
    (tmp_path / f"state.db.bak-v{v1}").mkdir()
    names = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StateError) as info:
        _StoreV2(path)
    msg = str(info.value)
    assert f"cannot write backup {path}.bak-v{v1}" in msg and "left as it was" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no copy under any name
    assert sqlite_rows(path, "PRAGMA user_version") == [(v1,)]


def test_migration_to_schema_3_fills_in_each_link_key(tmp_path: Path) -> None:
    """A schema-2 file's entries get their normalised link, so a poll reads only the
    rows its body can match from the first poll after the upgrade."""
    path = tmp_path / "state.db"
    _filled(path)
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE entries SET link = 'HTTPS://Example.org/a?utm_medium=x' WHERE identity = 'e1'"
    )
    conn.execute("UPDATE entries SET link = NULL WHERE identity = 'e2'")
    conn.commit()
    conn.close()
    _downgrade_to_2(path)
    with SqliteStore(path) as s:
        keys = dict(sqlite_rows(path, "SELECT identity, link_key FROM entries"))
        assert keys["e1"] == "https://example.org/a" and keys["e2"] == ""
        assert keys["e3"] == "https://example.org/e3"
        assert None not in keys.values()
        has_rows, got, _ = s.entries_matching("f", StoredNeed(("e3",), ("https://example.org/a",)))
        assert has_rows and set(got) == {"e1", "e3"}
    assert (tmp_path / "state.db.bak-v2").exists()
    indexes = {
        r[0] for r in sqlite_rows(path, "SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert {"entries_link_key", "entries_seen"} <= indexes


def test_migration_to_schema_4_keeps_every_entry_in_the_body(tmp_path: Path) -> None:
    """Rows from before are treated as they were (a 304 sees them) until the feed's
    next changed poll says which left it."""
    path = tmp_path / "state.db"
    _filled(path)
    _downgrade_to_4(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX entries_body")
    conn.execute("ALTER TABLE entries DROP COLUMN in_body")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with SqliteStore(path) as s:
        assert sqlite_rows(path, "SELECT DISTINCT in_body FROM entries") == [(1,)]
        s.commit_poll(poll(now=at(60), touched=("e1", "e2")))
        assert sqlite_rows(path, "SELECT identity FROM entries WHERE in_body = 1 ORDER BY 1") == [
            ("e1",),
            ("e2",),
        ]
    assert (tmp_path / "state.db.bak-v3").exists()


def test_migration_to_schema_5_keeps_alerts_and_claims_nothing_before(tmp_path: Path) -> None:
    """A schema-4 file's alerts stay as they were (no duplicate key: nothing was a
    duplicate before); new alerts take claims from the first poll after the upgrade."""
    path = tmp_path / "state.db"
    _filled(path)
    with SqliteStore(path) as s:
        s.commit_poll(poll(now=at(10), alerts=(alert("old1"),)))
    _downgrade_to_4(path)
    with SqliteStore(path) as s:
        assert set(sqlite_rows(path, "SELECT alert_id, duplicate_key FROM alerts")) == {
            ("x1", None),
            ("old1", None),
        }
        keyed = replace(alert("new1", sinks=("mail",)), duplicate_key="k")
        again = replace(alert("new2", feed="g", sinks=("mail",)), duplicate_key="k")
        assert s.commit_poll(poll(now=at(20), alerts=(keyed,))) == ["new1"]
        assert s.commit_poll(poll("g", now=at(30), alerts=(again,))) == []
        (record,) = s.alerts_for("g")
        assert record.alert_id == "new2" and record.deliveries == ()
        assert record.duplicate_of == (("mail", "new1", "f"),)
    assert (tmp_path / "state.db.bak-v4").exists()


def test_migration_to_schema_6_shows_a_row_no_poll_wrote_since_as_masked(
    tmp_path: Path,
) -> None:
    """A schema-5 file's feeds have no name as shown: what in a removed feed's expanded
    name was a secret is not known, so none of it shows (``***``); the first poll after
    the upgrade writes it."""
    path = tmp_path / "state.db"
    _filled(path)
    with SqliteStore(path) as s:
        s.commit_poll(poll("t acme", now=at(10), masked_name="t ***"))
    _downgrade_to_5(path)
    with SqliteStore(path) as s:
        assert sqlite_rows(path, "SELECT name, masked_name FROM feeds ORDER BY name") == [
            ("f", None),
            ("t acme", None),
        ]
        assert [r.shown_name for r in s.feeds().values()] == ["***", "***"]
        s.commit_poll(poll("t acme", now=at(20), masked_name="t ***"))
        assert s.feeds()["t acme"].shown_name == "t ***"
        assert len(s.entries("f")) == 200 and [d.alert_id for d in s.pending()] == ["x1"]
    assert (tmp_path / "state.db.bak-v5").exists()


def test_migration_to_schema_7_owes_a_delivery_from_before_to_every_recipient(
    tmp_path: Path,
) -> None:
    """A schema-6 file's deliveries have no recipients left (all of the sink's); the
    column is there for the next partial send, and a newer file is still refused."""
    path = tmp_path / "state.db"
    _filled(path)
    _downgrade_to_6(path)
    assert "recipients_left" not in {
        r[1] for r in sqlite_rows(path, "PRAGMA table_info(deliveries)")
    }
    with SqliteStore(path) as s:
        assert [(d.alert_id, d.recipients_left) for d in s.pending()] == [("x1", None)]
        s.mark_retry(
            "mail", ["x1"], at(5), error="452", next_attempt=at(9), recipients_left=["a@x"]
        )
        assert [d.recipients_left for d in s.pending()] == [("a@x",)]
    assert sqlite_rows(path, "PRAGMA user_version") == [(7,)] == [(len(SqliteStore.MIGRATIONS),)]
    assert sqlite_rows(tmp_path / "state.db.bak-v6", "PRAGMA user_version") == [(6,)]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 8")
    conn.close()
    with pytest.raises(StateError, match="schema version 8, newer"):
        SqliteStore(path)


def _downgrade_to_6(path: Path) -> None:
    """The file as schema 6 left it (nothing of schema 7)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("ALTER TABLE deliveries DROP COLUMN recipients_left")
        conn.execute("PRAGMA user_version = 6")
        conn.commit()
    finally:
        conn.close()


def _downgrade_to_5(path: Path) -> None:
    """The file as schema 5 left it (nothing of schemas 6 and 7)."""
    _downgrade_to_6(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute("ALTER TABLE feeds DROP COLUMN masked_name")
        conn.execute("PRAGMA user_version = 5")
        conn.commit()
    finally:
        conn.close()


def test_a_reader_refuses_an_older_schema_and_leaves_the_file_alone(tmp_path: Path) -> None:
    """``upgrade=False`` (status, explain, alerts, check --dry-run, forget, redeliver): an
    older schema is not migrated under whatever older release may still run on it (it
    was, with a `.bak-v*` written, by a command that says it never writes)."""
    path = tmp_path / "state.db"
    _filled(path)
    _downgrade_to_4(path)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    target = len(SqliteStore.MIGRATIONS)
    with pytest.raises(StateError) as info:
        open_store(str(path), create=False, upgrade=False)
    assert str(info.value) == (
        f"state file {path} has schema version 4, older than this feedwatch's ({target}):"
        " `feedwatch check`, or restarting `feedwatch run`, upgrades it (keeping a copy as"
        f" {path}.bak-v4); stop every older feedwatch instance using it first"
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    with open_store(str(path)) as s:  # as `check` and `run` open it: upgraded
        assert s is not None and len(s.entries("f")) == 200
    assert sqlite_rows(path, "PRAGMA user_version") == [(target,)]
    assert (tmp_path / "state.db.bak-v4").exists()
    with open_store(str(path), create=False, upgrade=False) as s:
        assert s is not None and len(s.entries("f")) == 200


def test_a_reader_writes_nothing_when_it_opens_the_state(tmp_path: Path) -> None:
    """Not the legacy parse cache's rows, nor the journal mode of a file restored from a
    `.bak-v*` copy (which is not in WAL mode): the next `check` or `run` sees to both."""
    path = tmp_path / "state.db"
    _filled(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("INSERT INTO parse_cache (feed, data) VALUES ('f', x'00')")
    conn.commit()
    conn.close()
    data = path.read_bytes()
    with open_store(str(path), create=False, upgrade=False) as s:
        assert s is not None and s.feed("f") is not None and len(s.entries("f")) == 200
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
    with open_store(str(path), create=False) as s:
        assert s is not None
    assert sqlite_rows(path, "SELECT COUNT(*) FROM parse_cache") == [(0,)]
    assert sqlite_rows(path, "PRAGMA journal_mode") == [("wal",)]


def _downgrade_to_4(path: Path) -> None:
    """The file as schema 4 left it (nothing of schemas 5 to 7)."""
    _downgrade_to_5(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TABLE duplicate_claims")
        conn.execute("ALTER TABLE alerts DROP COLUMN duplicate_key")
        conn.execute("PRAGMA user_version = 4")
        conn.commit()
    finally:
        conn.close()


def _downgrade_to_2(path: Path) -> None:
    """The file as schema 2 left it (nothing of schemas 3 to 7)."""
    _downgrade_to_4(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP INDEX entries_body")
        conn.execute("ALTER TABLE entries DROP COLUMN in_body")
        conn.execute("DROP INDEX entries_link_key")
        conn.execute("DROP INDEX entries_seen")
        conn.execute("ALTER TABLE entries DROP COLUMN link_key")
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("cut", ["garbage", "header", "half", "last-page", "empty"])
def test_corrupt_or_truncated_file_is_refused_and_left_alone(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    data = path.read_bytes()
    bad = {
        "garbage": b"this is not an sqlite file at all" * 100,
        "header": data[:60],
        "half": data[: len(data) // 2],
        "last-page": data[:-4096],
        "empty": b"",
    }[cut]
    path.write_bytes(bad)
    with pytest.raises(StateError) as info:
        open_store(str(path))
    msg = str(info.value)
    assert str(path) in msg and "corrupt" in msg
    assert "backup" in msg and "move it aside" in msg and "never resets" in msg
    assert path.read_bytes() == bad


def test_an_empty_state_file_is_refused_whatever_opens_it(tmp_path: Path) -> None:
    """status, explain and the like open without ``create``: an emptied state is not
    "no state yet" to them either, and its -wal is left for whoever restores it."""
    path = tmp_path / "state.db"
    _filled(path)
    path.write_bytes(b"")
    wal = tmp_path / "state.db-wal"
    wal.write_bytes(b"what SQLite would delete")
    for create in (True, False):
        with pytest.raises(StateError, match="corrupt .the file is empty"):
            open_store(str(path), create=create)
    assert path.read_bytes() == b"" and wal.read_bytes() == b"what SQLite would delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db", "state.db-wal"]


class _BrokenSchema(SqliteStore):
    MIGRATIONS = (*SqliteStore.MIGRATIONS, ("CREATE TABLE feeds (name TEXT)",))


def test_a_new_state_is_whole_or_absent(tmp_path: Path) -> None:
    """A new file is built under another name: a failure (or a crash) part way leaves no
    state file, so the next start creates one instead of refusing an empty one."""
    path = tmp_path / "state" / "state.db"
    with pytest.raises(StateError, match="already exists"):
        _BrokenSchema(path)
    assert list(path.parent.iterdir()) == []
    with SqliteStore(path) as s:
        assert s.feeds() == {}
    assert sqlite_rows(path, "PRAGMA user_version") == [(len(SqliteStore.MIGRATIONS),)]
    assert sqlite_rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.db"]


def test_a_new_state_through_a_dangling_symlink_is_made_where_it_points(tmp_path: Path) -> None:
    """state = a symlink to a file not there yet: the file is built and linked in where
    the symlink points, mode 0600 (it holds feed URLs with their user-info), once."""
    (tmp_path / "data").mkdir()
    link = tmp_path / "state.db"
    link.symlink_to(tmp_path / "data" / "feedwatch.db")
    old = os.umask(0o022)
    try:
        with SqliteStore(link) as s:
            s.commit_poll(poll(upserts=(entry("a"),)))
    finally:
        os.umask(old)
    real = tmp_path / "data" / "feedwatch.db"
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sqlite_rows(real, "PRAGMA user_version") == [(len(SqliteStore.MIGRATIONS),)]
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.endswith(".new")] == []
    with SqliteStore(link) as s:
        assert set(s.entries("f")) == {"a"}


def test_disk_full_is_a_state_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as s:
        s.commit_poll(poll(upserts=(entry("a"),)))
        s._conn.execute("PRAGMA max_page_count = 30")  # a disk this small is full
        big = tuple(entry(f"e{i}", content="x" * 4000) for i in range(100))
        with pytest.raises(StateError) as info:
            s.commit_poll(poll(now=at(5), upserts=big, alerts=(alert("x1"),)))
        assert str(path) in str(info.value) and "full" in str(info.value)
        assert set(s.entries("f")) == {"a"} and s.pending() == []
        assert s.commit_poll(poll(now=at(6), alerts=(alert("x1"),))) == ["x1"]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Makes a file unwritable even for root (immutable attribute), undone at the end."""
    done: list[Path] = []

    def _make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o400)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and chattr +i is not available here")
        done.append(path)

    yield _make
    for path in done:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        path.chmod(0o600)


def test_read_only_file_is_a_state_error(tmp_path: Path, read_only: Callable[[Path], None]) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    read_only(path)
    with pytest.raises(StateError) as info:
        open_store(str(path))
    msg = str(info.value)
    assert str(path) in msg and "cannot be written" in msg
    assert "Permission denied" in msg or "Operation not permitted" in msg
    # `status` may still read it
    s = open_store(str(path), create=False)
    assert s is not None and s.feed("f") is not None
    with pytest.raises(StateError, match="cannot be written"):
        s.set_next_poll("f", at(5))
    s.close()


# ---------------------------------------------------------------------------
# The daemon lock
# ---------------------------------------------------------------------------

_HOLD = """
import sys
from feedwatch.store import acquire_lock
lock = acquire_lock(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
"""

_TRY = """
import sys
from feedwatch.store import StateLocked, acquire_lock
try:
    acquire_lock(sys.argv[1])
except StateLocked as exc:
    print(exc)
    sys.exit(3)
print("acquired")
"""


def _python(code: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


def test_lock_refused_to_a_second_process(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with acquire_lock(state) as lock:
        assert lock.held
        assert (tmp_path / "state.db.lock").read_text().strip() == str(os.getpid())
        child = _python(_TRY, str(state), stdout=subprocess.PIPE)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == 3, out
        assert out.strip() == (
            f"state {state} is in use by another feedwatch process (pid {os.getpid()}: a `feedwatch run` daemon or a `check`); wait for it, or stop it"
        )
        with pytest.raises(StateLocked):  # a second handle in this process too
            acquire_lock(state)
    assert not lock.held
    child = _python(_TRY, str(state), stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=30)
    assert (child.returncode, out.strip()) == (0, "acquired")


def test_lock_held_by_another_process_until_it_dies(tmp_path: Path) -> None:
    state = tmp_path / "sub" / "state.db"
    holder = _python(_HOLD, str(state), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StateLocked, match=rf"\(pid {holder.pid}:") as info:
            acquire_lock(state)
        assert str(state) in str(info.value)
    finally:
        holder.kill()  # like kill -9: flock dies with the process
        holder.wait(timeout=30)
    lock = acquire_lock(state)
    lock.release()
    lock.release()  # idempotent


_HOLD_AND_FORK = """
import os, sys, time
from feedwatch.store import acquire_lock
lock = acquire_lock(sys.argv[1])
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:  # a body worker of a `check`: lives on a while after its parent
    os.write(ready_w, b"x")  # (running: what the fork does in a child is done)
    time.sleep(60)
    os._exit(0)
os.read(ready_r, 1)
print(child, flush=True)
sys.stdin.readline()
"""


def test_a_forked_child_does_not_keep_the_lock_of_a_killed_parent(tmp_path: Path) -> None:
    """A `check` killed with SIGKILL while its forked body workers ran: the next `check`
    was refused, naming the dead pid, until the workers ended (they held the lock's
    open file)."""
    state = tmp_path / "state.db"
    holder = _python(_HOLD_AND_FORK, str(state), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child = 0
    try:
        assert holder.stdout is not None
        child = int(holder.stdout.readline())
        # the child's copy closed at the fork: the parent still holds it, pid and all
        with pytest.raises(StateLocked, match=rf"\(pid {holder.pid}:"):
            acquire_lock(state)
        holder.kill()
        holder.wait(timeout=30)
        os.kill(child, 0)  # still alive
        lock = acquire_lock(state)
        lock.release()
    finally:
        holder.kill()
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_a_symlink_to_the_state_names_the_same_lock(tmp_path: Path) -> None:
    """`--state /elsewhere/link.db` pointing at the daemon's state made a second lock
    file beside the link: two daemons ran on one state and sent alerts twice."""
    (tmp_path / "real").mkdir()
    state = tmp_path / "real" / "state.db"
    state.touch()
    (tmp_path / "link.db").symlink_to(state)
    (tmp_path / "dir").symlink_to(tmp_path / "real")
    holder = _python(_HOLD, str(state), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for other in (tmp_path / "link.db", tmp_path / "dir" / "state.db"):
            with pytest.raises(StateLocked, match=rf"\(pid {holder.pid}:"):
                acquire_lock(other)
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_lock_refuses_a_url() -> None:
    with pytest.raises(StateError, match="PostgreSQL") as info:
        acquire_lock("postgresql://u:hunter2@h/db")
    assert "hunter2" not in str(info.value)


def test_queue_notices_time(tmp_path: Path) -> None:
    """SQLite extension: an explicit ``now`` wins; without one nor ``detected_at``, the clock."""
    with SqliteStore(tmp_path / "s.db") as s:
        s.queue_notices([alert("a", detected=at(5))], now=at(9))
        before = datetime.now(timezone.utc)
        s.queue_notices([alert("b")])
        after = datetime.now(timezone.utc)
        a, b = s.pending()
        assert a.created_at == at(9) and a.next_attempt == at(9)
        assert before <= b.created_at <= after


def test_store_payload_is_json(tmp_path: Path) -> None:
    """The payload is stored as JSON text: readable with plain sqlite3 for debugging."""
    path = tmp_path / "s.db"
    with SqliteStore(path) as s:
        s.commit_poll(poll(alerts=(alert("x1", payload={"title": "Dnipró ✓", "n": [1, 2]}),)))
    ((text,),) = sqlite_rows(path, "SELECT payload FROM alerts")
    assert json.loads(str(text)) == {"title": "Dnipró ✓", "n": [1, 2]}


# ---------------------------------------------------------------------------
# PostgreSQL: opening, schema, secrets
# ---------------------------------------------------------------------------


def _pg_tables(cluster: PgCluster, url: str) -> set[str]:
    import psycopg

    schema = url.rsplit("search_path%3D", 1)[-1]
    with psycopg.connect(cluster.url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


def _pg_exec(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def test_pg_open_store_masks_the_password(pg_cluster: PgCluster, pg_url: str) -> None:
    from feedwatch.store.postgres import PostgresStore

    password = pg_cluster.password
    assert password
    s = open_store(pg_url)
    try:
        assert isinstance(s, PostgresStore)
        assert password not in s.path and "***@127.0.0.1" in s.path
        assert _pg_tables(pg_cluster, pg_url) == {
            "feedwatch_schema", "feeds", "entries", "alerts", "deliveries", "parse_cache",
            "duplicate_claims",
        }  # fmt: skip
    finally:
        s.close()
    wrong = pg_url.replace(password, "wrong-password-42")
    with pytest.raises(StateError) as info:
        open_store(wrong)
    msg = str(info.value)
    assert "cannot connect" in msg and "password authentication failed" in msg
    assert "wrong-password-42" not in msg and password not in msg


def test_pg_without_create_creates_nothing(pg_cluster: PgCluster, pg_url: str) -> None:
    assert open_store(pg_url, create=False) is None
    assert _pg_tables(pg_cluster, pg_url) == set()
    open_store(pg_url).close()  # type: ignore[union-attr]
    s = open_store(pg_url, create=False)
    assert s is not None and s.feeds() == {}
    s.close()


def test_pg_newer_schema_is_refused(pg_url: str) -> None:
    open_store(pg_url).close()  # type: ignore[union-attr]
    _pg_exec(pg_url, "INSERT INTO feedwatch_schema (version) VALUES (99)")
    with pytest.raises(StateError, match=r"schema version 99, newer .* upgrade feedwatch"):
        open_store(pg_url)


def test_pg_a_reader_refuses_an_older_schema_and_writes_nothing(pg_url: str) -> None:
    """As on SQLite: the commands that open with ``upgrade=False`` neither migrate the
    schema nor empty the legacy parse cache; `check` and `run` do both."""
    import psycopg

    from feedwatch.store.postgres import PostgresStore

    class V2(PostgresStore):
        MIGRATIONS = (*PostgresStore.MIGRATIONS, ("ALTER TABLE feeds ADD COLUMN note TEXT",))

    with PostgresStore(pg_url) as s:
        s.commit_poll(poll(upserts=(entry("a"),), alerts=(alert("x1"),)))
    _pg_exec(pg_url, "INSERT INTO parse_cache (feed, data) VALUES ('f', '\\x00')")

    def state() -> tuple[list[int], int]:
        with psycopg.connect(pg_url) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM feedwatch_schema")]
            cached = conn.execute("SELECT COUNT(*) FROM parse_cache").fetchone()
        assert cached is not None
        return sorted(versions), cached[0]

    current = len(PostgresStore.MIGRATIONS)
    before = state()
    assert before == (list(range(1, current + 1)), 1)
    with pytest.raises(StateError) as info:
        V2.open(pg_url, create=False, upgrade=False)
    msg = str(info.value)
    assert msg.startswith("PostgreSQL state postgresql://") and "***@127.0.0.1" in msg
    assert msg.endswith(
        f" has schema version {current}, older than this feedwatch's ({current + 1}):"
        " `feedwatch check`, or restarting `feedwatch run`, upgrades it (pg_dump it first:"
        " no copy is kept); stop every older feedwatch instance using it first"
    ), msg
    assert state() == before
    with PostgresStore.open(pg_url, create=False, upgrade=False) as s:
        assert s is not None and set(s.entries("f")) == {"a"}
    assert state() == before
    with V2(pg_url) as s:  # `check` or `run` of the newer release
        assert set(s.entries("f")) == {"a"}
    assert state() == (list(range(1, current + 2)), 0)


def test_pg_foreign_tables_are_refused(pg_cluster: PgCluster, pg_url: str) -> None:
    _pg_exec(pg_url, "CREATE TABLE alerts (id INTEGER)")
    with pytest.raises(StateError, match="has tables named alerts but no feedwatch_schema"):
        open_store(pg_url)
    assert _pg_tables(pg_cluster, pg_url) == {"alerts"}  # left as it was


def test_pg_migrations_apply_once_even_when_instances_start_together(pg_url: str) -> None:
    import threading

    from feedwatch.store.postgres import PostgresStore

    class V2(PostgresStore):
        MIGRATIONS = (*PostgresStore.MIGRATIONS, ("ALTER TABLE feeds ADD COLUMN note TEXT",))

    with PostgresStore(pg_url) as s:
        s.commit_poll(poll(upserts=(entry("a"),), alerts=(alert("x1"),)))
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(V2(pg_url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(opened) == 4
    for s in opened:
        assert set(s.entries("f")) == {"a"} and [d.alert_id for d in s.pending()] == ["x1"]
        s.close()
    import psycopg

    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM feedwatch_schema ORDER BY 1")]
    assert versions == list(range(1, len(V2.MIGRATIONS) + 1))
    with pytest.raises(StateError, match="upgrade feedwatch"):
        PostgresStore(pg_url)  # the older code refuses the migrated database


def test_pg_rows_from_before_schema_3_are_always_read(pg_url: str) -> None:
    """PostgreSQL cannot compute a link_key for the rows it already has: they stay NULL
    and every comparison reads them, until a poll rewrites them or retention drops them."""
    import psycopg

    from feedwatch.store.postgres import PostgresStore

    with PostgresStore(pg_url) as s:
        kept = tuple(entry(f"k{i}") for i in range(40))  # more than the body: searched
        s.commit_poll(poll(upserts=(entry("a"), entry("b"), *kept)))
        with psycopg.connect(pg_url) as conn:
            conn.execute("UPDATE entries SET link_key = NULL WHERE identity = 'b'")
        has_rows, got, _ = s.entries_matching("f", StoredNeed(("a",), ()))
        assert has_rows and set(got) == {"a", "b"}
        s.commit_poll(poll(now=at(60), upserts=(entry("b", title="new title"),)))
        assert set(s.entries_matching("f", StoredNeed(("a",), ()))[1]) == {"a"}


def test_pg_migration_to_schema_6_shows_a_row_no_poll_wrote_since_as_masked(
    pg_url: str,
) -> None:
    """As SQLite's: a schema-5 database's feeds have no name as shown (``***`` once
    removed); the first poll after the upgrade writes it."""
    import psycopg

    from feedwatch.store.postgres import PostgresStore

    with PostgresStore(pg_url) as s:
        s.commit_poll(poll("t acme", upserts=(entry("a"),), alerts=(alert("x1", feed="t acme"),),
                           masked_name="t ***"))  # fmt: skip
    with psycopg.connect(pg_url) as conn:  # the database as schema 5 left it
        conn.execute("ALTER TABLE deliveries DROP COLUMN recipients_left")
        conn.execute("DELETE FROM feedwatch_schema WHERE version = 7")
        conn.execute("ALTER TABLE feeds DROP COLUMN masked_name")
        conn.execute("DELETE FROM feedwatch_schema WHERE version = 6")
    with PostgresStore(pg_url) as s:
        rec = s.feed("t acme")
        assert rec is not None and (rec.masked_name, rec.shown_name) == (None, "***")
        s.record_unchanged(
            "t acme", "u", at(60), http_status=304, etag=None, last_modified=None,
            next_poll=None, masked_name="t ***",
        )  # fmt: skip
        assert s.feeds()["t acme"].shown_name == "t ***"
        assert set(s.entries("t acme")) == {"a"} and [d.alert_id for d in s.pending()] == ["x1"]
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM feedwatch_schema ORDER BY 1")]
    assert versions == list(range(1, len(PostgresStore.MIGRATIONS) + 1)) and versions[-1] == 7


def test_pg_migration_to_schema_7_owes_a_delivery_from_before_to_every_recipient(
    pg_url: str,
) -> None:
    """As SQLite's: a schema-6 database's deliveries have no recipients left."""
    import psycopg

    from feedwatch.store.postgres import PostgresStore

    with PostgresStore(pg_url) as s:
        s.commit_poll(poll("f", upserts=(entry("a"),), alerts=(alert("x1"),)))
    with psycopg.connect(pg_url) as conn:  # the database as schema 6 left it
        conn.execute("ALTER TABLE deliveries DROP COLUMN recipients_left")
        conn.execute("DELETE FROM feedwatch_schema WHERE version = 7")
    with PostgresStore(pg_url) as s:
        assert [(d.alert_id, d.recipients_left) for d in s.pending()] == [("x1", None)]
        s.mark_retry(
            "mail", ["x1"], at(5), error="452", next_attempt=at(9), recipients_left=["a@x"]
        )
        assert [d.recipients_left for d in s.pending()] == [("a@x",)]
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM feedwatch_schema ORDER BY 1")]
    assert versions[-1] == 7 == len(PostgresStore.MIGRATIONS)


def test_pg_nul_in_text_is_stored(pg_url: str) -> None:
    with open_store(pg_url) as s:  # type: ignore[union-attr]
        s.record_failure("f", "u", T0, http_status=500, error="bad\x00byte", next_poll=None)
        rec = s.feed("f")
        assert rec is not None and rec.last_error == "bad\ufffdbyte"


# ---------------------------------------------------------------------------
# PostgreSQL: leases shared by several instances
# ---------------------------------------------------------------------------

LEASE = 20.0


@pytest.fixture
def pg_pair(pg_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database: two feedwatch instances."""
    a, b = open_store(pg_url), open_store(pg_url)
    assert a is not None and b is not None
    yield a, b
    a.close()
    b.close()


def test_pg_feed_lease_is_exclusive_until_released_or_expired(
    pg_pair: tuple[Store, Store],
) -> None:
    a, b = pg_pair
    url = "https://example.org/f.xml"
    assert a.claim_feed("f", url, "A", T0, LEASE).granted  # new feed: due, row created
    held = b.claim_feed("f", url, "B", at(1), LEASE)
    assert not held.granted and held.held_until == at(LEASE) and not held.gone
    assert a.claim_feed("f", url, "A", at(2), LEASE).granted  # its own lease: renewed
    a.commit_poll(poll(now=at(3), next_poll=at(63)))
    a.release_feed("f", "A")
    # released, but polled: not due before the shared next_poll
    later = b.claim_feed("f", url, "B", at(4), LEASE)
    assert not later.granted and later.next_poll == at(63) and later.held_until is None
    assert b.claim_feed("f", url, "B", at(63), LEASE).granted
    # B dies holding it: A takes over once the lease expired, not before
    assert not a.claim_feed("f", url, "A", at(63 + LEASE - 1), LEASE).granted
    assert a.claim_feed("f", url, "A", at(63 + LEASE), LEASE).granted


def test_pg_feed_lease_renewal_release_gone_and_url_change(pg_pair: tuple[Store, Store]) -> None:
    a, b = pg_pair
    url = "https://example.org/f.xml"
    assert a.claim_feed("f", url, "A", T0, LEASE).granted
    assert a.claim_feed("g", url, "A", T0, LEASE).granted
    a.renew_leases("A", at(15), LEASE)  # alive: held until 35
    assert not b.claim_feed("f", url, "B", at(30), LEASE).granted
    a.release_leases("A")  # a graceful stop: both free at once
    assert b.claim_feed("f", url, "B", at(31), LEASE).granted
    assert b.claim_feed("g", url, "B", at(31), LEASE).granted
    b.release_leases("B")
    # polled at its URL, not due: a new URL in the config makes it due
    a.commit_poll(poll(now=at(40), url=url, next_poll=at(1000)))
    assert not b.claim_feed("f", url, "B", at(41), LEASE).granted
    assert b.claim_feed("f", "https://example.org/moved.xml", "B", at(41), LEASE).granted
    b.release_feed("f", "B")
    # Retry-After holds it back even past next_poll; 410 stops it for everyone
    a.record_failure("f", url, at(50), http_status=429, error="429", next_poll=at(60),
                     retry_after_until=at(90))  # fmt: skip
    assert not b.claim_feed("f", url, "B", at(70), LEASE).granted
    assert b.claim_feed("f", url, "B", at(90), LEASE).granted
    b.record_failure("f", url, at(91), http_status=410, error="gone", next_poll=None, gone=True)
    b.release_feed("f", "B")
    gone = a.claim_feed("f", url, "A", at(2000), LEASE)
    assert not gone.granted and gone.gone


def test_pg_drop_removed_feeds_leaves_a_feed_another_instance_is_polling(
    pg_pair: tuple[Store, Store],
) -> None:
    """An instance whose config lacks a feed another one polls (a rollout) leaves its
    row alone while the other holds its lease: created by the claim, not yet polled."""
    a, b = pg_pair
    assert a.claim_feed("f", "u", "A", T0, LEASE).granted
    assert _dropped(b, [], at(LEASE - 1)) == []
    assert _dropped(b, [], at(LEASE + 1)) == ["f"]  # a dead instance's lease


def test_pg_only_one_of_many_racing_instances_gets_a_feed(pg_url: str) -> None:
    import threading

    stores = [open_store(pg_url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    wins: list[str] = []

    def race(i: int, s: Store, feed: str) -> None:
        barrier.wait()
        if s.claim_feed(feed, "u", f"i{i}", T0, LEASE).granted:
            wins.append(feed)

    try:
        for feed in ("brand-new", "existing"):
            if feed == "existing":
                stores[0].set_next_poll(feed, T0)
            threads = [
                threading.Thread(target=race, args=(i, s, feed))
                for i, s in enumerate(stores)
                if s is not None
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert sorted(wins) == ["brand-new", "existing"]
    finally:
        for s in stores:
            if s is not None:
                s.close()


def test_pg_delivery_claims(pg_pair: tuple[Store, Store]) -> None:
    a, b = pg_pair
    a.commit_poll(poll(alerts=(alert("x1", sinks=("hook", "mail")), alert("x2", sinks=("hook",)))))
    assert a.claim_deliveries("hook", ["x1", "x2"], "A", T0, LEASE) == ["x1", "x2"]
    assert b.claim_deliveries("hook", ["x1", "x2"], "B", at(1), LEASE) == []
    assert b.claim_deliveries("mail", ["x1"], "B", at(1), LEASE) == ["x1"]  # per sink
    a.mark_delivered("hook", ["x1"], at(2))
    a.release_deliveries("hook", ["x2"], "A")  # a send interrupted
    # delivered: never claimable again, whoever asks and however late
    assert b.claim_deliveries("hook", ["x1", "x2"], "B", at(3), LEASE) == ["x2"]
    assert a.claim_deliveries("hook", ["x1"], "A", at(10_000), LEASE) == []
    # B dies holding x2: A gets it once the claim expired (renewal pushes that back)
    b.renew_leases("B", at(10), LEASE)
    assert a.claim_deliveries("hook", ["x2"], "A", at(10 + LEASE - 1), LEASE) == []
    assert a.claim_deliveries("hook", ["x2"], "A", at(10 + LEASE), LEASE) == ["x2"]
    a.mark_retry("hook", ["x2"], at(31), error="503", next_attempt=at(60))  # ends the claim
    assert b.claim_deliveries("hook", ["x2"], "B", at(32), LEASE) == ["x2"]
    b.mark_dead("hook", ["x2"], at(33), error="404")
    assert a.claim_deliveries("hook", ["x2"], "A", at(34), LEASE) == []
    assert b.claim_deliveries("mail", ["x1"], "B", at(34), LEASE) == ["x1"]  # still B's
    b.release_leases("B")
    assert a.claim_deliveries("mail", ["x1"], "A", at(35), LEASE) == ["x1"]


def test_pg_racing_delivery_claims_are_disjoint(pg_url: str) -> None:
    import threading

    stores = [open_store(pg_url) for _ in range(4)]
    ids = [f"x{i}" for i in range(40)]
    assert stores[0] is not None
    stores[0].commit_poll(poll(alerts=tuple(alert(i, sinks=("hook",)) for i in ids)))
    barrier = threading.Barrier(len(stores))
    got: list[list[str]] = []

    def race(i: int, s: Store) -> None:
        barrier.wait()
        mine = []
        for start in range(0, len(ids), 5):
            mine += s.claim_deliveries("hook", ids[start : start + 5], f"i{i}", T0, LEASE)
        got.append(mine)

    try:
        threads = [threading.Thread(target=race, args=(i, s)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        every = [x for g in got for x in g]
        assert sorted(every) == sorted(ids)  # each claimed, by exactly one instance
    finally:
        for s in stores:
            if s is not None:
                s.close()


# ---------------------------------------------------------------------------
# Group commit (feedwatch.store.group): polls finishing together share a COMMIT
# ---------------------------------------------------------------------------


def _gather(*coros: Any) -> list[Any]:
    import asyncio

    async def main() -> list[Any]:
        return list(await asyncio.gather(*coros, return_exceptions=True))

    return asyncio.run(main())


def test_group_commit_each_write_is_its_own_all_or_nothing(store: Store) -> None:
    from feedwatch.store.group import GroupCommit

    writes = GroupCommit(store)
    # fails half-way: its feed and entry rows are written before its alert cannot be
    # encoded (NaN is not JSON), and must be undone with it
    bad = poll("g", upserts=(entry("a"),), alerts=(alert("x2", "g", payload={"v": float("nan")}),))

    ok1 = writes.run(lambda: store.commit_poll(poll("f", alerts=(alert("x1"),))))
    fail = writes.run(lambda: store.commit_poll(bad))
    ok2 = writes.run(lambda: store.commit_poll(poll("h", upserts=(entry("b"),))))
    got = _gather(ok1, fail, ok2)
    assert got[0] == ["x1"] and got[2] == []
    assert isinstance(got[1], ValueError)
    assert store.feed("g") is None and store.entries("g") == {}
    assert set(store.entries("h")) == {"b"}
    assert [d.alert_id for d in store.pending()] == ["x1"]


def test_group_commit_shares_one_transaction_and_resumes_after_it(tmp_path: Path) -> None:
    from feedwatch.store.group import GroupCommit

    store = SqliteStore(tmp_path / "state.db")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    seen_before_commit: list[list[tuple[object, ...]]] = []

    def second() -> list[str]:
        # the first write of the batch is not visible to another connection yet
        seen_before_commit.append(sqlite_rows(tmp_path / "state.db", "SELECT name FROM feeds"))
        return store.commit_poll(poll("b"))

    async def main() -> list[Any]:
        import asyncio

        writes = GroupCommit(store)
        done = await asyncio.gather(
            writes.run(lambda: store.commit_poll(poll("a"))), writes.run(second)
        )
        # resumed: both are durable, seen from another connection
        visible = sqlite_rows(tmp_path / "state.db", "SELECT name FROM feeds ORDER BY name")
        return [done, visible]

    try:
        done, visible = asyncio_run(main())
    finally:
        store.close()
    assert done == [[], []]
    assert seen_before_commit == [[]]
    assert visible == [("a",), ("b",)]
    begins = [s for s in statements if s.startswith("BEGIN IMMEDIATE")]
    assert len(begins) == 1 and statements.count("SAVEPOINT w") == 2
    assert statements.count("COMMIT") == 1


def test_group_commit_whose_transaction_cannot_begin_fails_every_write(tmp_path: Path) -> None:
    """Another process held SQLite's write lock past the busy timeout (an admin's open
    `sqlite3` session, a long VACUUM): the batch's BEGIN IMMEDIATE failed, and the writes
    queued for it were never answered, so their polls (and `check`) waited for ever,
    silently. Each now fails with the error, and the next batch works."""
    import asyncio
    import sqlite3

    from feedwatch.store.group import GroupCommit

    store = SqliteStore(tmp_path / "state.db")
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def main() -> list[Any]:
        writes = GroupCommit(store, busy_limit=0.3)  # (the busy timeout: 10 s)
        first = await asyncio.wait_for(
            asyncio.gather(
                writes.run(lambda: store.commit_poll(poll("a"))),
                writes.run(lambda: store.commit_poll(poll("b"))),
                return_exceptions=True,
            ),
            timeout=10,
        )
        other.execute("ROLLBACK")
        second = await asyncio.wait_for(writes.run(lambda: store.commit_poll(poll("c"))), 10)
        return [first, second]

    try:
        first, second = asyncio_run(main())
        assert [type(e) for e in first] == [StateBusy] * 2, first
        assert isinstance(first[0], StateError)
        assert f"state file {tmp_path / 'state.db'} is busy (database is locked)" in str(first[0])
        assert second == []
        assert store.feed("a") is None and store.feed("c") is not None
    finally:
        other.close()
        store.close()


def test_group_commit_keeps_the_event_loop_running_while_the_state_is_locked(
    tmp_path: Path,
) -> None:
    """Another process held SQLite's write lock (an admin's `sqlite3` shell in a
    transaction, a long VACUUM): the batch's BEGIN IMMEDIATE slept in SQLite's busy
    handler on the event loop's thread, so the daemon fetched nothing, handled no signal
    and sent no watchdog ping until the lock was let go (up to 10 s a batch). Now the
    loop runs while the write waits, and the write is done once the lock is free."""
    import asyncio

    from feedwatch.store.group import GroupCommit

    path = tmp_path / "state.db"
    store = SqliteStore(path)
    lock = HeldWriteLock(path)

    async def main() -> tuple[list[str], LoopLateness, float]:
        async with LoopLateness() as loop:
            lock.start()
            got = await asyncio.wait_for(
                GroupCommit(store).run(lambda: store.commit_poll(poll("a"))), 20
            )
            done = time.monotonic()
        return got, loop, done

    try:
        got, loop, done = asyncio_run(main())
        assert got == []
        assert loop.late < 0.5, f"the event loop stood still for {loop.late:.2f} s"
        assert loop.ticks >= 20  # it ticked through the hold (3 s: ~60 ticks)
        assert lock.released is not None and done >= lock.released
        assert sqlite_rows(path, "SELECT name FROM feeds") == [("a",)]
    finally:
        lock.close()
        store.close()


def test_group_commit_writes_asked_for_while_the_state_is_locked_go_in_order(
    tmp_path: Path,
) -> None:
    """While a batch waits for a lock held elsewhere, writes asked for meanwhile go with
    it, in the order they were asked for, in one COMMIT; one whose caller was cancelled
    meanwhile (a stop) is not done at all; past ``busy_limit`` a write fails with the
    busy error naming the file, and one asked for later still has its own wait."""
    import asyncio

    from feedwatch.store.group import GroupCommit

    path = tmp_path / "state.db"
    store = SqliteStore(path)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    other = sqlite3.connect(path, isolation_level=None)
    order: list[str] = []

    def write(name: str) -> Callable[[], list[str]]:
        def call() -> list[str]:
            order.append(name)
            return store.commit_poll(poll(name))

        return call

    async def main() -> dict[str, Any]:
        writes = GroupCommit(store, busy_limit=1.0)
        other.execute("BEGIN IMMEDIATE")
        a = asyncio.ensure_future(writes.run(write("a")))
        deadline = time.monotonic() + 5
        while writes._retry is None:  # till its batch found the lock taken and waits
            assert time.monotonic() < deadline, "the batch never tried"
            await asyncio.sleep(0.005)
        b = asyncio.ensure_future(writes.run(write("b")))
        gone = asyncio.ensure_future(writes.run(write("gone")))
        c = asyncio.ensure_future(writes.run(write("c")))
        await asyncio.sleep(0)  # the three are queued
        gone.cancel()
        await asyncio.sleep(0.2)
        assert not (a.done() or b.done() or c.done())
        del statements[:]
        other.execute("ROLLBACK")  # the lock is free: the waiting batch goes
        got = {"ab c": await asyncio.wait_for(asyncio.gather(a, b, c), 10)}
        commits = statements.count("COMMIT")

        # past the limit: the first write fails at 1 s, the one asked for 0.6 s later
        # at its own 1 s; the loop keeps running all along
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        first = asyncio.ensure_future(writes.run(write("x")))
        await asyncio.sleep(0.6)
        second = asyncio.ensure_future(writes.run(write("y")))
        errors = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
        got.update(commits=commits, errors=errors, seconds=time.monotonic() - started)
        other.execute("ROLLBACK")
        got["after"] = await asyncio.wait_for(writes.run(write("z")), 10)
        return got

    try:
        got = asyncio_run(main())
        assert got["ab c"] == [[], [], []]
        assert got["commits"] == 1  # one batch, the three together
        assert order == ["a", "b", "c", "z"]  # "gone" was never run, "x" and "y" neither
        assert [type(e) for e in got["errors"]] == [StateBusy] * 2, got["errors"]
        assert f"state file {path} is busy (database is locked)" in str(got["errors"][0])
        assert 1.5 <= got["seconds"] < 4.0  # "y" waited its own second
        assert got["after"] == []
        assert sqlite_rows(path, "SELECT name FROM feeds ORDER BY name") == [
            ("a",),
            ("b",),
            ("c",),
            ("z",),
        ]
    finally:
        other.close()
        store.close()


def test_group_commit_failed_commit_fails_every_write_and_keeps_none(tmp_path: Path) -> None:
    from feedwatch.store.group import GroupCommit

    store = SqliteStore(tmp_path / "state.db")

    def breaks_the_commit() -> None:
        # a deferred foreign-key violation: every statement succeeds, the COMMIT fails
        store._conn.execute("PRAGMA defer_foreign_keys = ON")
        store._conn.execute(
            "INSERT INTO entries (feed, identity, title, summary, content,"
            " fingerprint, first_seen, last_seen, new_alert_id)"
            " VALUES ('no such feed', 'i', '', '', '', '', 0, 0, '')"
        )

    try:
        writes = GroupCommit(store)
        got = _gather(
            writes.run(lambda: store.commit_poll(poll("a"))), writes.run(breaks_the_commit)
        )
        assert all(isinstance(g, Exception) for g in got), got
        assert "FOREIGN KEY" in str(got[0]) and got[0] is got[1]
        assert store.feeds() == {}
        store.commit_poll(poll("c"))  # the store is usable afterwards
        assert set(store.feeds()) == {"c"}
    finally:
        store.close()


def asyncio_run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def test_group_commit_window_gathers_writes_asked_for_apart(tmp_path: Path) -> None:
    """With a window, writes asked for in different turns of the loop (responses
    arriving one by one) still share a COMMIT; ``most`` writes flush at once."""
    import asyncio

    from feedwatch.store.group import GroupCommit

    store = SqliteStore(tmp_path / "state.db")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)

    async def later(writes: GroupCommit, name: str, turns: int) -> list[str]:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await writes.run(lambda: store.commit_poll(poll(name)))

    async def main() -> None:
        windowed = GroupCommit(store, window=60.0, most=3)
        # three writes, each in a later turn: the third fills the batch, which
        # commits then (not after the 60 s window)
        await asyncio.wait_for(
            asyncio.gather(*(later(windowed, f"w{i}", i * 3) for i in range(3))), 30
        )
        await asyncio.gather(*(later(GroupCommit(store), f"s{i}", i * 3) for i in range(3)))

    try:
        asyncio.run(main())
        assert set(store.feeds()) == {"w0", "w1", "w2", "s0", "s1", "s2"}
    finally:
        store.close()
    begins = [s for s in statements if s.startswith("BEGIN IMMEDIATE")]
    # one COMMIT for the windowed three; without a window, one per turn
    assert len(begins) == 1 + 3


def test_group_commit_goes_at_once_when_no_other_write_can_join(tmp_path: Path) -> None:
    """``pending`` counts the writers in progress: once each has asked, the batch
    commits at the end of the turn instead of after the window; while one has not,
    the window holds the batch open for it."""
    import asyncio

    from feedwatch.store.group import GroupCommit

    store = SqliteStore(tmp_path / "state.db")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    in_progress = 0

    async def writer(writes: GroupCommit, name: str, turns: int) -> list[str]:
        nonlocal in_progress
        try:
            for _ in range(turns):
                await asyncio.sleep(0)
            return await writes.run(lambda: store.commit_poll(poll(name)))
        finally:
            in_progress -= 1

    async def main() -> None:
        nonlocal in_progress
        writes = GroupCommit(store, window=60.0, pending=lambda: in_progress)
        # alone: committed without the 60 s wait (wait_for fails the test otherwise)
        in_progress = 1
        await asyncio.wait_for(writer(writes, "alone", 0), 30)
        # two in progress, the second asks 5 turns later: the first waits for it,
        # then both go in one transaction, without waiting out the window
        in_progress = 2
        await asyncio.wait_for(asyncio.gather(writer(writes, "a", 0), writer(writes, "b", 5)), 30)

    try:
        asyncio.run(main())
        assert set(store.feeds()) == {"alone", "a", "b"}
    finally:
        store.close()
    begins = [s for s in statements if s.startswith("BEGIN IMMEDIATE")]
    assert len(begins) == 2  # "alone", then "a" and "b" together


def test_sqlite_checkpoint_moves_the_log_into_the_file(tmp_path: Path) -> None:
    """What a body worker does as it ends: the database file alone (no -wal beside it)
    then holds its commits."""
    s = SqliteStore(tmp_path / "state.db")
    other = SqliteStore(tmp_path / "state.db")  # open: no close-time checkpoint
    try:
        s.checkpoint()  # the schema
        s.commit_poll(poll(upserts=(entry("a"),)))

        def alone() -> list[tuple[object, ...]]:
            copy = tmp_path / "copy.db"
            copy.write_bytes((tmp_path / "state.db").read_bytes())
            return sqlite_rows(copy, "SELECT identity FROM entries")

        assert alone() == []  # still in the log only
        s.checkpoint()
        assert alone() == [("a",)]
    finally:
        s.close()
        other.close()


def test_a_feed_that_never_succeeded_keeps_its_first_polls_time(store: Store) -> None:
    """What staleness counts from for a feed added broken (store.base.QUIET_SINCE_FAILED):
    its first failed poll's time, kept by later failures; a feed that had a success
    keeps its own times."""

    def fail(feed: str, when: datetime) -> None:
        store.record_failure(feed, f"https://example.org/{feed}", when, http_status=404,
                             error="HTTP 404", next_poll=None)  # fmt: skip

    fail("broken", at(10))
    fail("broken", at(500))
    rec = store.feed("broken")
    assert rec is not None and rec.errors == 2
    assert (rec.last_success, rec.last_new_entry) == (None, at(10))
    store.commit_poll(poll(upserts=(entry("a"),), now=at(20)))
    fail("f", at(600))
    rec = store.feed("f")
    assert rec is not None and (rec.last_success, rec.last_new_entry) == (at(20), None)


def test_pg_a_connection_the_server_ended_is_not_used_for_a_call(pg_url: str) -> None:
    """A database restart ends every connection ("terminating connection due to
    administrator command"). A busy instance, whose pooled connections are never idle
    long, used one anyway for its next call, which failed: a delivery sent but not
    marked was sent again, a poll job died. The pool now finds it ended first."""
    s = open_store(pg_url)
    assert s is not None
    try:
        s.record_failure("f", "https://example.org/f", at(0), http_status=500,
                         error="HTTP 500", next_poll=None)  # fmt: skip
        _pg_exec(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'feedwatch' AND pid <> pg_backend_pid()",
        )

        def ended() -> bool:
            import psycopg

            with psycopg.connect(pg_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'feedwatch'"
                ).fetchone()
            return row is not None and row[0] == 0

        wait_for(ended, what="the store's connections ended")
        rec = s.feed("f")  # within IDLE_CHECK of the last call: no time-based check
        assert rec is not None and rec.errors == 1
    finally:
        s.close()


def test_a_send_a_stop_cut_keeps_the_error_before_it(store: Store) -> None:
    """A stop that cancels a send notes it on the delivery's last error (a jsonl sink
    on a pipe then starts its next send with a newline), after the error before it,
    which stays to be read (it was replaced, and a delivery given up then showed only
    "interrupted"); a second stop notes nothing more."""
    from feedwatch.store.base import INTERRUPTED, interrupted

    store.commit_poll(poll(alerts=(alert("x1", sinks=("hook",)), alert("x2", sinks=("hook",)))))
    store.mark_retry("hook", ["x1"], at(1), error="HTTP 503", next_attempt=at(2))
    for _ in range(2):
        store.claim_deliveries("hook", ["x1", "x2"], "A", at(3), LEASE)
        store.release_deliveries("hook", ["x1", "x2"], "A", interrupted=True)
    errors = {d.alert_id: d.last_error for d in store.pending()}
    assert errors == {"x1": f"HTTP 503; then {INTERRUPTED}", "x2": INTERRUPTED}
    assert all(interrupted(e) for e in errors.values()) and not interrupted("HTTP 503")
    store.mark_retry("hook", ["x1"], at(4), error="HTTP 502", next_attempt=at(5))
    assert {d.alert_id: d.last_error for d in store.pending()}["x1"] == "HTTP 502"
