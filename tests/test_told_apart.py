"""Entries that differ only by their enclosures (a feed of recordings with neither id,
link, title, date nor text; items all titled "Morning briefing"): told apart by their
enclosure URLs (identity.told_apart), and a relative enclosure URL resolved against the
xml:base in effect at its item whatever the item holds (parse._item_bases)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from feedwatch import identity
from feedwatch.diff import diff, stored_needed
from feedwatch.identity import content_identity, entry_keys, key_for
from feedwatch.model import FeedSettings, IdentityState
from feedwatch.parse import parse_body
from feedwatch.partial import parse_incremental
from feedwatch.testing import T0, entry
from tests.feedserver import FeedServer, feed_server  # noqa: F401
from tests.test_check import alerts, fw, jsonl_config
from tests.test_diff import apply

S = FeedSettings()
FEED_URL = "http://feeds.example.net/podcast/feed.xml"


def recordings(numbers, token: str = "", title: str = "") -> bytes:
    """The recordings feed: items with only an enclosure (and ``title``, when given),
    the newest first; ``token`` a CDN query on every URL; a number None: an item
    without an enclosure."""
    items = "".join(
        f"<item>{f'<title>{title}</title>' if title else ''}"
        + (
            ""
            if n is None
            else f'<enclosure url="https://cdn.example.org/rec-{n}.mp3{token}"'
            f' type="audio/mpeg" length="{1000 + n}"/>'
        )
        + "</item>"
        for n in numbers
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Recordings</title>'
        f"<link>https://rec.example.org/</link>{items}</channel></rss>"
    ).encode()


def entries_of(body: bytes):
    return parse_body(body, {}, url=FEED_URL, max_entries=100).entries


def poll(stored, body, *, baselined=True, ident=None, now=T0):
    r = diff(
        "rec",
        stored,
        entries_of(body),
        settings=S,
        identity=ident or IdentityState(),
        baselined=baselined,
        now=now,
    )
    return apply(stored, r), r


# ---------------------------------------------------------------- unit: the diff


def test_a_new_recording_at_the_top_alerts_as_new_and_only_it():
    stored, r = poll({}, recordings([2, 1]), baselined=False)
    assert r.duplicates == 0 and len(stored) == 2
    stored, r = poll(stored, recordings([3, 2, 1]), ident=r.identity, now=T0 + timedelta(hours=1))
    assert [(c.kind, c.entry.enclosures[0].url) for c in r.changes] == [
        ("new", "https://cdn.example.org/rec-3.mp3")
    ]
    assert r.duplicates == 0


def test_a_cdn_token_changing_on_every_url_alerts_only_the_new_recording():
    stored, r = poll({}, recordings([2, 1], "?token=a1"), baselined=False)
    stored, r = poll(
        stored, recordings([2, 1], "?token=b2#t=0"), ident=r.identity, now=T0 + timedelta(hours=1)
    )
    assert r.changes == () and r.new == 0
    stored, r = poll(
        stored, recordings([3, 2, 1], "?token=c3"), ident=r.identity, now=T0 + timedelta(hours=2)
    )
    assert [c.entry.enclosures[0].url for c in r.changes] == [
        "https://cdn.example.org/rec-3.mp3?token=c3"
    ]


def test_all_titled_morning_briefing_are_told_apart_too():
    stored, r = poll({}, recordings([2, 1], title="Morning briefing"), baselined=False)
    body = recordings([3, 2, 1], title="Morning briefing")
    stored, r = poll(stored, body, ident=r.identity, now=T0 + timedelta(hours=1))
    assert [c.entry.enclosures[0].url for c in r.changes] == ["https://cdn.example.org/rec-3.mp3"]


def test_only_an_entry_keyed_by_its_content_is_keyed_by_its_enclosures():
    # an entry keyed by its id or link keeps its key; one keyed by its content with an
    # enclosure is told apart by it whatever its neighbours, alone in its body too
    one = [
        entry(None, title="A", link=None, published=None, summary="a"),
        entry(None, title="B", link=None, published=None, summary="b"),
    ]
    one = [
        replace(e, entry_id=f"id-{n}", enclosures=entries_of(recordings([n]))[0].enclosures)
        for n, e in enumerate(one)
    ]
    keys = [entry_keys(e) for e in one]
    assert identity.told_apart(keys, "guid") is keys
    told = identity.told_apart(keys, "content")
    assert [key_for(k, "content") for k in told] == [k.told for k in keys]
    assert [k.plain for k in told] == [content_identity(e) for e in one]
    (e,) = entries_of(recordings([1]))
    stored, _ = poll({}, recordings([1]), baselined=False)
    assert list(stored) == [entry_keys(e).told]


def test_entries_nothing_tells_apart_stay_one_identity():
    body = recordings([1, 1])
    keys = identity.told_apart([entry_keys(e) for e in entries_of(body)], "guid")
    assert keys[0] == keys[1]
    _, r = poll({}, body, baselined=False)
    assert r.duplicates == 1 and r.repeated_new == 1
    stored, r = poll({}, body, baselined=False)
    _, r = poll(stored, body, ident=r.identity)
    assert r.duplicates == 1 and r.repeated_new == 0  # met before: no warning again


def test_upgrade_stores_the_group_silently_once_then_alerts_new_ones():
    # a state of a release before: the group's one row, under the plain content key
    # (its first changed body is stored silently: a recording new in it does not alert)
    plain = content_identity(entries_of(recordings([1]))[0])
    old = _as_before(poll({}, recordings([1]), baselined=False)[0], recordings([1]))
    assert list(old) == [plain]
    stored, r = poll(old, recordings([2, 1]), now=T0 + timedelta(hours=1))
    assert r.changes == () and r.quiet == 2 and r.new == 0
    assert plain not in stored and len(stored) == 2  # the row went to the oldest
    stored, r = poll(stored, recordings([3, 2, 1]), now=T0 + timedelta(hours=2))
    assert [c.entry.enclosures[0].url for c in r.changes] == ["https://cdn.example.org/rec-3.mp3"]
    # what the poll reads of the state: the old row too
    keys = [entry_keys(e) for e in entries_of(recordings([2, 1]))]
    need = stored_needed(S, IdentityState(), keys, baselined=True, has_rows=True)
    assert need is not None and plain in need.identities


def test_a_group_that_shrinks_to_one_and_grows_keeps_its_rows():
    stored, r = poll({}, recordings([2, 1]), baselined=False)
    stored, r = poll(stored, recordings([2]), now=T0 + timedelta(hours=1))
    assert r.changes == () and r.new == 0
    stored, r = poll(stored, recordings([3, 2]), now=T0 + timedelta(hours=2))
    assert [c.entry.enclosures[0].url for c in r.changes] == ["https://cdn.example.org/rec-3.mp3"]


def _alerted(r) -> list[tuple[str, str | None]]:
    """A diff's changes: each one's kind and its entry's first enclosure URL (None: none)."""
    return [(c.kind, c.entry.enclosures[0].url if c.entry.enclosures else None) for c in r.changes]


def _rec(n: int) -> str:
    return f"https://cdn.example.org/rec-{n}.mp3"


def test_a_fixed_size_window_alerts_each_new_recording():
    # the window drops the oldest as it takes the newest: the new one is not the
    # dropped one re-keyed (link churn), whatever its text
    for title in ("", "Morning briefing"):
        stored, r = poll({}, recordings([5, 4, 3, 2, 1], title=title), baselined=False)
        for step, top in enumerate((6, 7), 1):
            body = recordings(range(top, top - 5, -1), title=title)
            stored, r = poll(stored, body, ident=r.identity, now=T0 + timedelta(hours=step))
            assert _alerted(r) == [("new", _rec(top))], (title, top)


def test_a_new_item_without_an_enclosure_alerts_and_takes_no_row():
    for title in ("", "Morning briefing"):
        stored, r = poll({}, recordings([1], title=title), baselined=False)
        before = dict(stored)
        stored, r = poll(stored, recordings([None, 1], title=title), now=T0 + timedelta(hours=1))
        assert _alerted(r) == [("new", None)], title
        assert all(stored[k] == v for k, v in before.items())  # rec-1's row kept as it was


def test_a_group_that_grows_from_one_alerts_the_new_recording():
    for title in ("", "Morning briefing"):
        stored, r = poll({}, recordings([3], title=title), baselined=False)
        stored, r = poll(stored, recordings([4, 3], title=title), now=T0 + timedelta(hours=1))
        assert _alerted(r) == [("new", _rec(4))], title

        stored, r = poll({}, recordings([3, 2, 1], title=title), baselined=False)
        got = []
        for step, numbers in enumerate(([3], [4], [5, 4]), 1):
            stored, r = poll(
                stored, recordings(numbers, title=title), now=T0 + timedelta(hours=step)
            )
            got.append(_alerted(r))
        assert got == [[], [("new", _rec(4))], [("new", _rec(5))]], title


def _episodes(numbers, prefix: str = "https://cdn.example.org/") -> bytes:
    """A podcast without ids or links whose episodes' titles tell them apart."""
    items = "".join(
        f"<item><title>Episode {n}</title><description>Show notes {n}</description>"
        f'<enclosure url="{prefix}ep-{n}.mp3" type="audio/mpeg" length="{n}"/></item>'
        for n in numbers
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Show</title>'
        f"<link>https://show.example.org/</link>{items}</channel></rss>"
    ).encode()


def test_an_episodes_enclosure_moving_behind_a_prefix_alerts_nothing():
    podtrac = "https://dts.podtrac.com/redirect.mp3/cdn.example.org/"
    stored, r = poll({}, _episodes([2, 1]), baselined=False)
    stored, r = poll(stored, _episodes([2, 1], podtrac), now=T0 + timedelta(hours=1))
    assert r.changes == () and len(stored) == 2
    stored, r = poll(stored, _episodes([3, 2, 1], podtrac), now=T0 + timedelta(hours=2))
    assert _alerted(r) == [("new", podtrac + "ep-3.mp3")]
    assert len(stored) == 3


def _as_before(stored, body):
    """``stored`` as a release before keyed it: each row of an entry of ``body`` under
    the entry's plain content key."""
    out = dict(stored)
    for e in entries_of(body):
        k = entry_keys(e)
        if k.told in out:
            out[k.content] = replace(out.pop(k.told), identity=k.content)
    return out


def test_upgrade_of_an_entry_unique_in_its_body_is_silent():
    body = _episodes([2, 1])
    stored, r = poll({}, body, baselined=False)
    old = _as_before(stored, body)
    assert set(old) == {content_identity(e) for e in entries_of(body)}
    keys = [entry_keys(e) for e in entries_of(body)]
    need = stored_needed(S, IdentityState(), keys, baselined=True, has_rows=True)
    assert need is not None and set(old) <= set(need.identities)
    again, r = poll(old, body, now=T0 + timedelta(hours=1))
    assert r.changes == () and r.quiet == 0
    assert again.keys() == stored.keys()  # each row under its new key
    again, r = poll(old, _episodes([3, 2, 1]), now=T0 + timedelta(hours=1))
    assert _alerted(r) == [("new", "https://cdn.example.org/ep-3.mp3")]
    # an untitled recording alone in its feed too
    stored, r = poll({}, recordings([1]), baselined=False)
    again, r = poll(
        _as_before(stored, recordings([1])), recordings([1]), now=T0 + timedelta(hours=1)
    )
    assert r.changes == () and again.keys() == stored.keys()


def test_a_recordings_feeds_unchanged_items_are_settled_under_their_own_keys():
    # an entry's key is its own, whatever its neighbours: the parse cache's settled
    # entries are those the state holds (``diff._settled_keys``)
    _, cache = parse_incremental(
        recordings([2, 1]), {}, url=FEED_URL, max_entries=100, cache=None, digest="d0"
    )
    stored, r = poll({}, recordings([2, 1]), baselined=False)
    got, _ = parse_incremental(
        recordings([3, 2, 1]),
        {},
        url=FEED_URL,
        max_entries=100,
        cache=cache,
        digest="d1",
        basis="d0",
    )
    assert got.settled is not None and got.settled.indexes == {1, 2}
    assert "content" in got.settled.unique_under
    r = diff(
        "rec",
        stored,
        got.entries,
        settings=S,
        identity=r.identity,
        baselined=True,
        now=T0 + timedelta(hours=1),
        keys=got.keys,
        settled=got.settled,
    )
    assert _alerted(r) == [("new", _rec(3))]
    assert set(r.touched) == set(stored)  # taken as seen, without their rows


# ---------------------------------------------------------------- unit: xml:base

RSS_BASE = b"""<?xml version="1.0"?>
<rss version="2.0" xml:base="https://cdn.example.org/media/"><channel><title>T</title>
<link>https://www.example.org/</link>
<item><guid isPermaLink="false">g2</guid><enclosure url="ep2.mp3" type="audio/mpeg" length="2"/></item>
<item xml:base="https://other.example.org/m/"><guid isPermaLink="false">g3</guid>
<enclosure url="ep3.mp3" type="audio/mpeg" length="3"/></item>
<item><guid isPermaLink="false">g1</guid><title>One</title>
<enclosure url="ep1.mp3" type="audio/mpeg" length="1"/></item>
</channel></rss>"""

ATOM_BASE = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"
 xml:base="https://cdn.example.org/media/"><title>A</title><id>urn:a</id>
<updated>2024-01-01T00:00:00Z</updated>
<entry><id>urn:e2</id><updated>2024-01-01T00:00:00Z</updated>
<media:content url="vid2.mp4" type="video/mp4"/></entry>
<entry><id>urn:e3</id><updated>2024-01-01T00:00:00Z</updated>
<link rel="enclosure" href="vid3.mp4" type="video/mp4"/></entry>
</feed>"""


def test_an_untitled_items_enclosure_resolves_against_the_channels_xml_base():
    got = [e.enclosures[0].url for e in entries_of(RSS_BASE)]
    assert got == [
        "https://cdn.example.org/media/ep2.mp3",
        "https://other.example.org/m/ep3.mp3",
        "https://cdn.example.org/media/ep1.mp3",
    ]


def test_an_untitled_atom_entrys_media_resolves_against_the_feeds_xml_base():
    got = [e.enclosures[0].url for e in entries_of(ATOM_BASE)]
    assert got == [
        "https://cdn.example.org/media/vid2.mp4",
        "https://cdn.example.org/media/vid3.mp4",
    ]


def test_the_partial_parse_resolves_as_the_full_one():
    for body, new in (
        (RSS_BASE, (b"<item>", b'<item><guid>g9</guid><enclosure url="e9.mp3"/></item><item>')),
        (
            ATOM_BASE,
            (
                b"<entry>",
                b'<entry><id>urn:e9</id><link rel="enclosure" href="e9.mp3"/></entry><entry>',
            ),
        ),
    ):
        first, cache = parse_incremental(body, {}, url=FEED_URL, max_entries=100, cache=None)
        assert cache is not None
        assert list(first.entries) == list(entries_of(body))
        more = body.replace(*new, 1)
        again, _ = parse_incremental(more, {}, url=FEED_URL, max_entries=100, cache=cache)
        assert list(again.entries) == list(entries_of(more))
        # the new item, parsed apart from the cached ones, has the channel's base too
        assert again.entries[0].enclosures[0].url == "https://cdn.example.org/media/e9.mp3"


# ---------------------------------------------------------------- `check`, end to end


def _config(tmp: Path, server: FeedServer) -> Path:
    cfg = tmp / "feedwatch.toml"
    cfg.write_text(
        jsonl_config(
            tmp,
            f'[[feeds]]\nname = "rec"\nurl = "{server.url("/rec.xml")}"\n\n'
            f'[[feeds]]\nname = "news"\nurl = "{server.url("/news.xml")}"\n\n'
            f'[[feeds]]\nname = "media"\nurl = "{server.url("/media.xml")}"\n',
            'jitter = "0s"',
        )
    )
    return cfg


def _keys(tmp: Path, feed: str) -> set[str]:
    with sqlite3.connect(tmp / "state.db") as db:
        return {r[0] for r in db.execute("SELECT identity FROM entries WHERE feed = ?", (feed,))}


NEWS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>
<link>https://news.example.org/</link>
<item><title>Two</title><enclosure url="https://cdn.example.org/two.mp3"/></item>
<item><title>One</title><enclosure url="https://cdn.example.org/one.mp3"/></item>
</channel></rss>"""


def _first_check(tmp: Path, srv: FeedServer) -> Path:
    """The config of the three feeds, after a first ``check`` of two recordings."""
    srv.set("/rec.xml", recordings([2, 1]))
    srv.set("/news.xml", NEWS)
    srv.set("/media.xml", RSS_BASE)
    cfg = _config(tmp, srv)
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    return cfg


def test_check_alerts_a_new_recording_once_and_a_token_change_never(tmp_path, feed_server):  # noqa: F811
    srv = feed_server
    cfg = _first_check(tmp_path, srv)
    assert alerts(tmp_path) == []
    news_keys = _keys(tmp_path, "news")
    # the feed of titled episodes: each entry's content key told apart by its enclosure
    assert news_keys == {entry_keys(e).told for e in entries_of(NEWS)}

    srv.set("/rec.xml", recordings([3, 2, 1]))
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["entry"]["enclosures"][0]["url"]) for a in alerts(tmp_path)]
    assert got == [("new", "https://cdn.example.org/rec-3.mp3")]

    srv.set("/rec.xml", recordings([4, 3, 2, 1], "?token=x7"))
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0, r.stderr
    got = [a["entry"]["enclosures"][0]["url"] for a in alerts(tmp_path)][1:]
    assert got == ["https://cdn.example.org/rec-4.mp3?token=x7"]

    srv.set("/rec.xml", recordings([4, 3, 2, 1], "?token=y8"))
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0, r.stderr
    assert len(alerts(tmp_path)) == 2  # a token change alerts nothing
    assert _keys(tmp_path, "news") == news_keys
    assert "repeated_identity" not in r.stderr

    srv.set("/rec.xml", recordings([5, 4, 3, 2], "?token=y8"))  # a window: rec-1 dropped
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0, r.stderr
    got = [a["entry"]["enclosures"][0]["url"] for a in alerts(tmp_path)][2:]
    assert got == ["https://cdn.example.org/rec-5.mp3?token=y8"]

    r = fw(cfg, "explain", "rec")
    assert r.returncode == 0, r.stderr
    assert "repeated:" not in r.stdout and "duplicate" not in r.stdout
    # found by its enclosure (its token aside), and what keys it said: the same title,
    # link and text as the others, and its own enclosure
    r = fw(cfg, "explain", "rec", "https://cdn.example.org/rec-3.mp3?token=z9")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("identity: c:") == r.stdout.count("and its enclosures' URLs") == 1


def test_check_after_an_upgrade_stores_the_group_silently_once(tmp_path, feed_server):  # noqa: F811
    srv = feed_server
    cfg = _first_check(tmp_path, srv)
    # the state as a release before left it: the group's one row, under its content key
    plain = content_identity(entries_of(recordings([1]))[0])
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(
            "DELETE FROM entries WHERE feed = 'rec' AND identity NOT IN (SELECT MIN(identity) FROM entries WHERE feed = 'rec')"
        )
        db.execute("UPDATE entries SET identity = ? WHERE feed = 'rec'", (plain,))
    srv.set("/rec.xml", recordings([3, 2, 1]))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []  # the group's baseline: its body was otherwise known
    (line,) = [json.loads(x) for x in r.stderr.splitlines() if "feed.told_apart" in x]
    assert line.get("level") == "warning" and line.get("feed") == "rec"
    assert plain not in _keys(tmp_path, "rec") and len(_keys(tmp_path, "rec")) == 3
    srv.set("/rec.xml", recordings([4, 3, 2, 1]))
    assert fw(cfg, "check").returncode == 0
    got = [a["entry"]["enclosures"][0]["url"] for a in alerts(tmp_path)]
    assert got == ["https://cdn.example.org/rec-4.mp3"]


def test_check_warns_once_of_entries_nothing_tells_apart(tmp_path, feed_server):  # noqa: F811
    srv = feed_server
    srv.set("/rec.xml", recordings([1, 1]))
    srv.set("/news.xml", NEWS)
    srv.set("/media.xml", RSS_BASE)
    cfg = _config(tmp_path, srv)
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stderr.splitlines() if "repeated_identity" in x]
    assert [x.get("level") for x in lines] == ["warning"]
    srv.set("/rec.xml", recordings([1, 1]).replace(b"Recordings", b"Recordings!"))
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0, r.stderr
    assert "repeated_identity" not in r.stderr  # met before: not mailed again


def test_check_alerts_an_untitled_items_enclosure_resolved_against_xml_base(tmp_path, feed_server):  # noqa: F811
    srv = feed_server
    srv.set("/rec.xml", recordings([1]))
    srv.set("/news.xml", NEWS)
    srv.set("/media.xml", ATOM_BASE.replace(b"<entry>", b"", 0))
    cfg = _config(tmp_path, srv)
    assert fw(cfg, "check").returncode == 0
    new = ATOM_BASE.replace(
        b"<entry>",
        b"<entry><id>urn:e4</id><updated>2024-01-02T00:00:00Z</updated>"
        b'<media:content url="vid4.mp4" type="video/mp4"/></entry><entry>',
        1,
    )
    srv.set("/media.xml", new)
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    (a,) = alerts(tmp_path)
    assert a["entry"]["enclosures"][0]["url"] == "https://cdn.example.org/media/vid4.mp4"
