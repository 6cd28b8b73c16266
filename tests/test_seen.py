"""record_unchanged keeps last_seen to within SEEN_STEP, on both backends.

A 304 poll used to rewrite every entry's last_seen; now the entries of the feed's
last body move (all together) on the feed's first success in each SEEN_STEP-long
period of the clock, retention never drops an entry that is still in the feed, and
an entry that left it ages until retention forgets it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from feedwatch.store import Store
from feedwatch.store.seen import SEEN_STEP, seen_step, touch_cut
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


def test_prune_drops_what_left_and_never_what_is_in_the_body(store: Store) -> None:
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    store.commit_poll(poll(now=at(60), touched=("b",)))  # "a" left
    unchanged(store, at(100), prune_before=at(200))  # a cut after now: all are older
    assert set(seen(store)) == {"b"}
    store.commit_poll(poll(now=at(300), upserts=(entry("c", seen=at(300)),), prune_before=at(400)))
    assert set(seen(store)) == {"c"}  # "b" left here: it was last in the body of at(100)


def test_seen_step_is_under_half_the_retention() -> None:
    assert seen_step(T0, None) == SEEN_STEP
    assert seen_step(T0, T0 - timedelta(days=90)) == SEEN_STEP
    assert seen_step(T0, T0 - timedelta(minutes=30)) == timedelta(minutes=15)
    assert seen_step(T0, T0 + timedelta(minutes=1)) == timedelta(0)
    assert touch_cut(at(5399), SEEN_STEP) == at(3600)
    assert touch_cut(at(5399), timedelta(minutes=15)) == at(4500)
    assert touch_cut(at(5399), timedelta(0)) == at(5399)


def test_lowering_the_retention_never_drops_an_entry_still_in_the_feed(store: Store) -> None:
    """An entry of the body was seen up to one *old* step (the hour) ago: when the
    retention is lowered to 30 minutes, the first polls after it (the step now 15
    minutes; one in the same quarter hour as the last success touches nothing) cut at
    now - 30m, past that last_seen. The entry went, and the next changed body alerted it
    as new again. A poll now prunes only entries that left the body."""
    store.commit_poll(poll(now=at(300), upserts=(entry("a", seen=at(300)),)))  # 10:05
    unchanged(store, at(3900), prune_before=at(3900) - timedelta(days=90))  # 11:05: a touch
    unchanged(store, at(6360), prune_before=at(6360) - timedelta(days=90))  # 11:46: none
    assert seen(store) == {"a": at(3900)}
    short = timedelta(minutes=30)  # the retention lowered: the step is 15 minutes
    unchanged(store, at(7080), prune_before=at(7080) - short)  # 11:58: none, a cut at 11:28
    assert set(seen(store)) == {"a"}
    # a changed body that sees "a" again, in the same quarter hour: no touch either
    store.commit_poll(
        poll(
            now=at(7140),
            upserts=(entry("b", seen=at(7140)),),
            touched=("a",),
            prune_before=at(7140) - short,
        )
    )
    assert set(seen(store)) == {"a", "b"}
    # the next touch brings it back within the retention
    unchanged(store, at(7300), prune_before=at(7300) - short)  # 12:01:40
    assert seen(store) == {"a": at(7300), "b": at(7300)}


def test_an_entry_that_left_is_kept_retention_after_the_last_body_it_was_in(
    store: Store,
) -> None:
    """docs/change-detection.md: an entry that left is forgotten `retention` after it
    was last in a body. Its last_seen was the last touch, up to a step before the body
    it was last in (the poll before the one that saw it gone), so it went up to a step
    early, and alerted as new if it came back within the retention."""
    retention = timedelta(minutes=30)  # a step of 15 minutes

    def cut(t: float) -> datetime:
        return at(t) - retention

    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))  # 10:00
    unchanged(store, at(930), prune_before=cut(930))  # 10:15:30: touched
    unchanged(store, at(1700), prune_before=cut(1700))  # 10:28:20: same quarter, not
    assert seen(store) == {"a": at(930), "b": at(930)}
    # 10:40: "a" has left; it was last in the body of 10:28:20
    store.commit_poll(poll(now=at(2400), touched=("b",), prune_before=cut(2400)))
    assert seen(store)["a"] == at(1700)
    unchanged(store, at(3300), prune_before=cut(3300))  # 10:55: 26m40s after
    assert "a" in seen(store)
    unchanged(store, at(3540), prune_before=cut(3540))  # 10:59: 30m40s after
    assert set(seen(store)) == {"b"}


def test_the_rows_leaving_the_body_are_the_only_ones_moved_and_never_back(
    store: Store,
) -> None:
    """An entry that leaves takes the time of the feed's last success if that is later
    than its own; one upserted or touched is as the poll wrote it, and an entry long
    gone keeps its time."""
    store.commit_poll(poll(upserts=(entry("a"), entry("b"), entry("c"))))
    store.commit_poll(poll(now=at(60), touched=("b", "c")))  # "a" leaves: T0 was its body
    assert seen(store) == {"a": T0, "b": T0, "c": T0}
    later = entry("c", seen=at(200), title="edited")
    store.commit_poll(poll(now=at(200), upserts=(later,)))  # "b" leaves; "a" long gone
    assert seen(store) == {"a": T0, "b": at(60), "c": at(200)}


def test_an_entry_that_comes_back_is_seen_at_the_poll_that_finds_it(store: Store) -> None:
    """An entry back in the feed kept the last_seen of when it left until the step's
    next touch: `explain` showed it "last seen" days ago, in the body just fetched. Only
    the rows coming back are written: the others wait for the touch as before."""
    store.commit_poll(poll(upserts=(entry("a"), entry("b"))))
    store.commit_poll(poll(now=at(60), touched=("b",)))  # "a" left; T0 was its last body
    store.commit_poll(poll(now=at(120), touched=("a", "b")))  # back, unchanged: no touch due
    assert seen(store) == {"a": at(120), "b": T0}
    store.commit_poll(poll(now=at(180), touched=("b",)))  # "a" leaves again
    assert seen(store) == {"a": at(120), "b": T0}


def test_a_re_key_onto_a_forgotten_row_takes_the_entry_seen_within_the_retention(
    store: Store,
) -> None:
    """A poll compares only the rows within the retention (feedwatch.diff.
    within_retention): a re-key (GUID churn) may move an entry onto the identity of a
    row that left the body longer ago. That row decided which one was kept (the one seen
    last; here they tie), and its text long gone stayed the entry's, under which the
    next poll compared it. It goes first: the entry's row is moved."""
    store.commit_poll(poll(upserts=(entry("old", title="gone long ago"), entry("now"))))
    store.commit_poll(poll(now=at(60), touched=("now",)))  # "old" leaves, seen at T0
    retention = timedelta(hours=1)
    later = at(3 * 3600)  # no successful poll meanwhile: "old" is still stored
    store.commit_poll(
        poll(now=later, rekeys=(("now", "old"),), touched=("old",), prune_before=later - retention)
    )
    rows = store.entries("f")
    assert set(rows) == {"old"}
    assert rows["old"].title == "title now" and rows["old"].in_body
