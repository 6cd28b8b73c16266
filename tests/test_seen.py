"""record_unchanged keeps last_seen to within SEEN_STEP, on both backends.

A 304 poll used to rewrite every entry's last_seen; now the entries of the feed's
last body move (all together) on the feed's first success in each SEEN_STEP-long
period of the clock, retention never drops an entry that is still in the feed, and
an entry that left it ages until retention forgets it.
"""

from __future__ import annotations

from datetime import timedelta

from feedwatch.store import Store
from feedwatch.store.seen import SEEN_STEP, may_prune, seen_step, touch_cut
from tests.pg import pg_cluster
from tests.test_store import T0, at, backend, entry, poll, reopen, store

__all__ = ["backend", "pg_cluster", "reopen", "store"]  # fixtures, imported for pytest


def unchanged(store: Store, when: object, **kw: object) -> None:
    store.record_unchanged(
        "f", "https://example.org/f.xml", when, http_status=304, etag=None,  # type: ignore[arg-type]
        last_modified=None, next_poll=None, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def seen(store: Store) -> dict[str, object]:
    return {k: e.last_seen for k, e in store.entries("f").items()}


def test_within_the_step_nothing_moves_past_it_everything_does(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    unchanged(store, T0 + SEEN_STEP - timedelta(seconds=1))
    assert seen(store) == {"a": T0, "b": T0}
    rec = store.feed("f")
    assert rec is not None and rec.last_poll == T0 + SEEN_STEP - timedelta(seconds=1)
    unchanged(store, T0 + SEEN_STEP + timedelta(seconds=1))
    assert seen(store) == {"a": T0 + SEEN_STEP + timedelta(seconds=1)} | {
        "b": T0 + SEEN_STEP + timedelta(seconds=1)
    }


def test_the_period_of_the_clock_decides_not_the_age(store: Store) -> None:
    assert touch_cut(T0, SEEN_STEP) == T0  # T0 is on the hour
    store.commit_poll(poll(now=at(3000), upserts=(entry("a", seen=at(3000)),)))
    unchanged(store, at(3500))  # same hour as the last success: nothing moves
    assert seen(store) == {"a": at(3000)}
    unchanged(store, at(3700))  # the first success of the next hour moves them
    assert seen(store) == {"a": at(3700)}


def test_the_entries_of_the_body_move_together_so_their_order_is_kept(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("here1"), entry("here2", seen=at(600)))))
    unchanged(store, at(3700))  # the first success of the next hour: both move, to one time
    assert seen(store) == {"here1": at(3700), "here2": at(3700)}


def test_an_entry_that_left_the_feed_is_not_seen_by_a_304(store: Store) -> None:
    # "gone" was in the first body, not in the second: a 304 sees the second again
    store.commit_poll(poll(upserts=(entry("gone", seen=T0),)))
    store.commit_poll(poll(now=at(3000), upserts=(entry("here", seen=at(3000)),)))
    unchanged(store, at(3700))
    assert seen(store) == {"gone": T0, "here": at(3700)}


def test_an_entry_that_left_is_forgotten_after_retention_though_the_feed_answers_304s(
    store: Store,
) -> None:
    """SPEC: new is "an identity not seen in this feed within retention". A 304 used to
    move every stored entry, those that had left the feed too, so they never aged."""
    retention = timedelta(days=1)
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    store.commit_poll(
        poll(now=at(60), touched=("b",), prune_before=at(60) - retention)
    )  # "a" left the feed
    for hours in range(1, 30):
        now = T0 + timedelta(hours=hours)
        unchanged(store, now, prune_before=now - retention)
        if hours <= 24:
            assert "a" in seen(store), hours
    assert set(seen(store)) == {"b"}
    assert T0 + timedelta(hours=29) - seen(store)["b"] <= SEEN_STEP  # type: ignore[operator]


def test_an_entry_that_comes_back_is_seen_by_304s_again(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    store.commit_poll(poll(now=at(60), touched=("b",)))  # "a" left
    store.commit_poll(poll(now=at(120), touched=("a", "b")))  # back, unchanged
    unchanged(store, at(3700))
    assert seen(store) == {"a": at(3700), "b": at(3700)}
    store.commit_poll(poll(now=at(3800), upserts=(entry("c", seen=at(3800)),), touched=("b",)))
    unchanged(store, at(7300))  # "a" left again: it stays where it was
    assert seen(store) == {"a": at(3700), "b": at(7300), "c": at(7300)}


def test_retention_never_drops_an_entry_of_an_unchanged_feed(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"),)))
    retention = timedelta(minutes=30)  # shorter than SEEN_STEP: the step shrinks to fit
    for minutes in range(5, 300, 5):
        now = T0 + timedelta(minutes=minutes)
        unchanged(store, now, prune_before=now - retention)
        assert set(seen(store)) == {"a"}, minutes
        assert now - seen(store)["a"] < retention  # type: ignore[operator]


def test_prune_still_runs_when_something_is_old_enough(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"),)))
    unchanged(store, at(100), prune_before=at(200))  # a cut after now: all are older
    assert seen(store) == {}


def test_seen_step_is_under_half_the_retention() -> None:
    assert seen_step(T0, None) == SEEN_STEP
    assert seen_step(T0, T0 - timedelta(days=90)) == SEEN_STEP
    assert seen_step(T0, T0 - timedelta(minutes=30)) == timedelta(minutes=15)
    assert seen_step(T0, T0 + timedelta(minutes=1)) == timedelta(0)
    assert touch_cut(at(5399), SEEN_STEP) == at(3600)
    assert touch_cut(at(5399), timedelta(minutes=15)) == at(4500)
    assert touch_cut(at(5399), timedelta(0)) == at(5399)
    assert not may_prune(T0, SEEN_STEP, None)
    assert not may_prune(T0, SEEN_STEP, T0 - timedelta(days=90))
    assert may_prune(T0, timedelta(0), T0 + timedelta(seconds=1))
