"""The poll orchestration in-process: real server, real SQLite file, a fake clock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta

import pytest

from feedwatch.explain import analyse
from feedwatch.fetch import Fetcher
from feedwatch.model import FeedSettings, Jitter
from feedwatch.poll import Poller
from feedwatch.staleness import AHEAD_TOLERANCE, ahead_of_clock, as_of, stale_notice
from feedwatch.store.base import FeedRecord
from feedwatch.testing import T0, FakeClock, entry, rss
from tests.feedserver import feed_server_fixture  # noqa: F401
from tests.helpers import HeldWriteLock, LoopLateness, poll_setup, run_feedwatch

SETTINGS = FeedSettings(interval=60, jitter=Jitter(), stale_after=3600)


def make(tmp_path, url, settings=SETTINGS):
    return poll_setup(tmp_path, url, settings)


async def poll(config, store, clock, feed):
    async with Fetcher() as fetcher:
        return await Poller(config, store, fetcher, clock=clock).poll(feed)


def test_stale_then_recovered_once_each(tmp_path, feed_server):
    feed_server.set("/f", rss([entry(1)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"))
    clock = FakeClock(T0)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.result == "ok" and r.alerts == []
    # two hours without a new entry: one stale notice, not one per poll
    clock.advance(hours=2)
    r = asyncio.run(poll(config, store, clock, feed))
    assert [a.kind for a in r.alerts] == ["stale"]
    assert "no new entry" in r.alerts[0].payload["message"]
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.alerts == []
    # a new entry: recovered, once
    feed_server.set("/f", rss([entry(1), entry(2)]))
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert sorted(a.kind for a in r.alerts) == ["new", "recovered"]
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.alerts == []
    pending = store.pending()
    assert sorted(d.kind for d in pending) == ["new", "recovered", "stale"]
    store.close()


def _state_rows(path: str) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


async def dry_then_real(config, store, clock, feed):
    """The notices a dry run prints, the state rows before and after it, then the
    notices the real poll at the same moment queues."""
    before = _state_rows(config.state)
    async with Fetcher() as fetcher:
        dry = await Poller(config, store, fetcher, clock=clock, dry_run=True).poll(feed)
    after = _state_rows(config.state)
    real = await poll(config, store, clock, feed)
    assert before == after, "the dry run changed the state"

    def seen(r):
        return [(a.kind, a.id, a.payload["message"], a.payload["feed"]) for a in r.alerts]

    return seen(dry), seen(real)


def test_a_dry_run_shows_the_stale_and_recovered_notices_a_real_run_sends(tmp_path, feed_server):
    feed_server.set("/f", rss([entry(1)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"))
    clock = FakeClock(T0)
    asyncio.run(poll(config, store, clock, feed))
    # quiet for two hours: the same stale notice, with the same id
    clock.advance(hours=2)
    dry, real = asyncio.run(dry_then_real(config, store, clock, feed))
    assert [k for k, *_ in real] == ["stale"] and dry == real
    # once sent, a dry run does not show it again
    clock.advance(minutes=5)
    assert asyncio.run(dry_then_real(config, store, clock, feed)) == ([], [])
    # a new entry: the new alert and the recovered notice
    feed_server.set("/f", rss([entry(1), entry(2)]))
    clock.advance(minutes=5)
    dry, real = asyncio.run(dry_then_real(config, store, clock, feed))
    assert sorted(k for k, *_ in real) == ["new", "recovered"] and dry == real
    # broken for two hours: stale, quoting the error of this very poll
    feed_server.set("/f", "down", status=500)
    clock.advance(hours=2)
    dry, real = asyncio.run(dry_then_real(config, store, clock, feed))
    assert [k for k, *_ in real] == ["stale"] and dry == real
    assert "no successful poll" in real[0][2] and "500" in real[0][2]
    store.close()


def test_a_feed_added_broken_is_stale_stale_after_its_first_poll(tmp_path, feed_server):
    """A feed that never had a successful poll (a wrong URL or token from the start)
    got no stale notice at all: staleness counted from the last success only. Its
    first poll's time counts now; a dry run shows the notice the real run sends, and
    its first success brings the recovered notice."""
    feed_server.set("/f", "no such feed", status=404)
    feed, config, store = make(tmp_path, feed_server.url("/f"))
    clock = FakeClock(T0)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.result == "error" and r.alerts == []
    clock.advance(minutes=30)
    assert asyncio.run(poll(config, store, clock, feed)).alerts == []
    clock.advance(minutes=31)
    dry, real = asyncio.run(dry_then_real(config, store, clock, feed))
    assert [k for k, *_ in real] == ["stale"] and dry == real
    assert "no successful poll since its first, 1 hour 1 minute ago" in real[0][2]
    assert "404" in real[0][2]
    clock.advance(minutes=5)
    assert asyncio.run(poll(config, store, clock, feed)).alerts == []  # once
    feed_server.set("/f", rss([entry(1)]))
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert [a.kind for a in r.alerts] == ["recovered"]
    store.close()


def test_an_id_that_is_no_url_harms_no_poll(tmp_path, feed_server):
    """An id like ``http://example.c[o.test/`` (feedparser's corpus,
    item_guid_isPermaLink_ValueError.xml) made every changed poll of its feed crash
    ("Invalid IPv6 URL", from the look-up of ids an older release resolved): nothing
    of the feed was stored or alerted again. It is an id as any other."""
    settings = replace(SETTINGS, stale_after=0)

    def body(*extra: str) -> bytes:
        items = "".join(
            f"<item><guid>{g}</guid><title>{t}</title></item>"
            for g, t in [
                ("http://example.c[o.test/", "one"),
                ("http://example.org/2", "two"),
                *extra,
            ]
        )
        return f'<rss version="2.0"><channel><title>t</title>{items}</channel></rss>'.encode()

    feed_server.set("/f", body())
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)
    assert asyncio.run(poll(config, store, clock, feed)).result == "ok"
    feed_server.set("/f", body(("urn:3", "three")))
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.result == "ok", r.error
    assert [a.payload["entry"]["title"] for a in r.alerts] == ["three"]
    store.close()


def test_ids_stored_escaped_by_an_earlier_version_alert_nothing(tmp_path, feed_server, monkeypatch):
    """A version that read a body that was not well-formed XML (one ``&nbsp;``) left its
    ids escaped and stored them so (``id=1&amp;cat=2``); read decoded now, each entry is
    the row it was, re-keyed silently, and an edit of it alerts as updated. The feed
    keeps more rows than its body, so the rows are searched by identity, not all read."""
    settings = replace(SETTINGS, stale_after=0)
    ids = ["http://example.com/item?id=1&amp;cat=2", "tag:x,2024:a&amp;b&lt;c&gt;"]

    def body(n_more: int, edited: str = "") -> bytes:
        items = "".join(
            f'<item><guid isPermaLink="false">{g}</guid><title>Entry {i}&nbsp;!</title>'
            f"<description>Text {i}{edited if i == 0 else ''}</description></item>"
            for i, g in enumerate([*ids, *(f"urn:more:{k}" for k in range(n_more))])
        )
        return f'<rss version="2.0"><channel><title>t</title>{items}</channel></rss>'.encode()

    from feedparser.parsers.loose import _LooseFeedParser

    import feedwatch.parse  # noqa: F401  (wraps the lenient parser's decoding)

    as_before = _LooseFeedParser.decode_entities.__wrapped__  # type: ignore[attr-defined]
    feed_server.set("/f", body(40))
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)
    with monkeypatch.context() as m:  # the earlier version's parse
        m.setattr(_LooseFeedParser, "decode_entities", as_before)
        assert asyncio.run(poll(config, store, clock, feed)).result == "ok"
    assert {"g:" + i for i in ids} <= set(store.entries("f"))
    feed_server.set("/f", body(0))
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert (r.result, r.alerts) == ("ok", [])
    keys = set(store.entries("f"))
    assert {"g:http://example.com/item?id=1&cat=2", "g:tag:x,2024:a&b<c>"} <= keys
    assert not {"g:" + i for i in ids} & keys
    feed_server.set("/f", body(0, edited=", corrected"))
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    got = [(a.kind, a.payload["entry"]["id"]) for a in r.alerts]
    assert got == [("updated", "http://example.com/item?id=1&cat=2")]
    store.close()


def test_links_stored_undecoded_by_an_earlier_version_alert_nothing(
    tmp_path, feed_server, monkeypatch
):
    """A version that read a body that was not well-formed XML (one ``&nbsp;``) kept an
    Atom ``<link href>``'s ``&#38;`` as written and stored the entries without ids under
    those links (``?p=0&#38;x=1``, whose ``#`` began a fragment); read decoded now, each
    is the row it was, re-keyed silently (entries of one title too, which link churn
    cannot tell apart), and an edit of one alerts as updated."""
    settings = replace(SETTINGS, stale_after=0)

    def body(edited: str = "") -> bytes:
        entries = "".join(
            f'<entry><title>{t}&nbsp;!</title><link href="http://e.org/?p={i}&#38;x=1"/>'
            f"<summary>{t}{edited if i == 2 else ''}</summary></entry>"
            for i, t in enumerate(["Same", "Same", "Other", "More"])
        )
        return (
            f'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>{entries}</feed>'.encode()
        )

    from feedparser.parsers.loose import _LooseFeedParser

    import feedwatch.parse  # noqa: F401  (wraps the lenient parser's attributes)

    as_before = _LooseFeedParser._normalize_attributes.__wrapped__  # type: ignore[attr-defined]
    feed_server.set("/f", body())
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)
    with monkeypatch.context() as m:  # the earlier version's parse
        m.setattr(_LooseFeedParser, "_normalize_attributes", staticmethod(as_before))
        assert asyncio.run(poll(config, store, clock, feed)).result == "ok"
    assert "l:http://e.org/?p=0&#38;x=1" in store.entries("f")
    feed_server.set("/f", body() + b"\n")  # (the same entries: not a 304)
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert (r.result, r.alerts) == ("ok", [])
    keys = set(store.entries("f"))
    assert keys == {f"l:http://e.org/?p={i}&x=1" for i in range(4)}
    feed_server.set("/f", body(edited=", corrected"))
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    got = [(a.kind, a.payload["entry"]["link"]) for a in r.alerts]
    assert got == [("updated", "http://e.org/?p=2&x=1")]
    store.close()


# A French site's UTF-8 feed whose XML declaration names a single-byte encoding, its
# ids and links written raw beyond ASCII; and the keys the release before stored its
# entries under (checked against a run of it: feedparser read the body as labelled and
# put back each element's text that read as UTF-8 once encoded as ISO-8859-1 again, never
# an attribute's).
def _french(kind: str, label: str, slug: str, edited: str = "") -> bytes:
    decl = f'<?xml version="1.0" encoding="{label}"?>'
    texts = [(n, f"Résumé {n} de l’été{edited if n == 1 else ''}") for n in (1, 2)]
    if kind == "guid":  # RSS, keyed by its guid (element text)
        items = "".join(
            f'<item><guid isPermaLink="false">tag:ex.fr,2024:{slug}-{n}</guid>'
            f"<title>Titre {n}</title><description>{text}</description></item>"
            for n, text in texts
        )
        return (
            f'{decl}<rss version="2.0"><channel><title>Actu</title>{items}</channel></rss>'.encode()
        )
    if kind == "href":  # Atom without ids, keyed by its link (an attribute)
        items = "".join(
            f'<entry><link href="https://ex.fr/actualités/{slug}-{n}"/><title>Titre {n}</title>'
            f"<summary>{text}</summary></entry>"
            for n, text in texts
        )
        return f'{decl}<feed xmlns="http://www.w3.org/2005/Atom"><title>Actu</title>{items}</feed>'.encode()
    items = "".join(  # RSS 1.0, keyed by its rdf:about (an attribute)
        f'<item rdf:about="tag:ex.fr,2024:{slug}-{n}"><title>Titre {n}</title>'
        f"<link>https://ex.fr/</link><description>{text}</description></item>"
        for n, text in texts
    )
    return (
        f'{decl}<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns="http://purl.org/rss/1.0/"><channel rdf:about="https://ex.fr/"><title>Actu'
        f"</title></channel>{items}</rdf:RDF>"
    ).encode()


@pytest.mark.parametrize(
    ("kind", "label", "slug", "was"),
    [
        ("guid", "windows-1252", "l’été", "g:tag:ex.fr,2024:lâ€™Ã©tÃ©-{n}"),
        ("guid", "ISO-8859-15", "crème", "g:tag:ex.fr,2024:crÃšme-{n}"),
        ("href", "windows-1252", "été", "l:https://ex.fr/actualitÃ©s/Ã©tÃ©-{n}"),
        ("href", "ISO-8859-1", "l’été", "l:https://ex.fr/actualitÃ©s/lâ\x80\x99Ã©tÃ©-{n}"),
        ("about", "ISO-8859-15", "Über", "g:tag:ex.fr,2024:Ã\x9cber-{n}"),
    ],
)
def test_ids_and_links_an_earlier_version_read_in_mojibake_alert_nothing(
    tmp_path, feed_server, monkeypatch, kind, label, slug, was
):
    """Every release before parse version 20 read a UTF-8 body labelled windows-1252,
    ISO-8859-1 or -15 as labelled, and keyed its entries by ids and links in mojibake
    ("tag:ex.fr,2024:lâ€™Ã©tÃ©-1" for "…l’été-1"); read as UTF-8 now, each entry alerted
    as new at the first changed body after the upgrade. Each is the row it was now,
    re-keyed silently, and an edit of it afterwards alerts once as updated."""
    settings = replace(SETTINGS, stale_after=0)
    feed_server.set("/f", _french(kind, label, slug))
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)
    import feedwatch.parse as parse

    with monkeypatch.context() as m:  # the earlier version's parse: as labelled
        m.setattr(parse, "_decide", lambda body, headers: parse._AS_LABELLED)
        assert asyncio.run(poll(config, store, clock, feed)).result == "ok"
    olds = {was.format(n=n) for n in (1, 2)}
    assert set(store.entries("f")) == olds
    body = _french(kind, label, slug) + b"\n"  # the same entries: not a 304
    parsed = parse.parse_body(body, {"content-type": "application/xml"}, url=feed.url)
    why = analyse("f", feed, store.feed("f"), store.entries("f"), parsed, "", [], T0)
    assert [i.status for i in why.items] == ["silent", "silent"]
    assert all("stored in mojibake" in (i.silent_reason or "") for i in why.items), why.items
    feed_server.set("/f", body)
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    assert (r.result, r.alerts) == ("ok", [])
    rows = store.entries("f")
    assert not olds & set(rows)
    assert all(slug in (row.link if kind == "href" else row.entry_id) for row in rows.values())
    assert {key[key.index(slug) :] for key in rows} == {f"{slug}-1", f"{slug}-2"}
    feed_server.set("/f", _french(kind, label, slug, edited=", corrigé"))
    clock.advance(minutes=5)
    r = asyncio.run(poll(config, store, clock, feed))
    got = [(a.kind, a.payload["entry"]["title"], a.payload["changes"]) for a in r.alerts]
    assert got == [
        (
            "updated",
            "Titre 1",
            {"summary": {"old": "Résumé 1 de l’été", "new": "Résumé 1 de l’été, corrigé"}},
        )
    ]
    store.close()


def test_a_poll_under_way_at_a_reload_leaves_the_new_rules_to_later_polls(tmp_path, feed_server):
    """A reload cleared the compiled rules, but a poll still under way compiled the old
    ones again and kept them under the feed's name: every later poll matched with
    those until the next reload (alpha alerted, beta was lost)."""
    from feedwatch.model import Rule

    feed_server.set("/f", rss([entry(1, title="alpha news")]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), replace(SETTINGS, stale_after=0))
    old = replace(feed, rules=(Rule(name="r", any=("alpha",)),))
    new = replace(feed, rules=(Rule(name="r", any=("beta",)),))
    clock = FakeClock(T0)

    async def go():
        async with Fetcher() as fetcher:
            poller = Poller(replace(config, feeds=(old,)), store, fetcher, clock=clock)
            assert (await poller.poll(old)).result == "ok"  # the baseline
            poller.reconfigure(replace(config, feeds=(new,)))
            poller.rules_for(old)  # the poll under way at the reload ends with its rules
            feed_server.set(
                "/f", rss([entry(1, title="alpha news"), entry(2), entry(3, title="beta news")])
            )
            clock.advance(minutes=5)
            return await poller.poll(new)

    r = asyncio.run(go())
    assert [a.payload["entry"]["title"] for a in r.alerts] == ["beta news"]
    store.close()


def test_entries_kept_after_they_dropped_out_still_count(tmp_path, feed_server):
    """A changed poll reads the stored entries its body can match (feedwatch.diff.
    stored_needed), not all the feed has kept: what it decides is as before. Entries
    that dropped out come back unchanged (silent), changed (updated) or under a new id
    (the same entry), and an id-policy switch re-keys the kept ones too."""
    settings = replace(SETTINGS, stale_after=0, first_poll="baseline")
    feed_server.set("/f", rss([entry(i) for i in range(1, 61)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)

    def step(entries, title="Test Feed"):
        feed_server.set("/f", rss(entries, title=title))
        clock.advance(minutes=15)
        r = asyncio.run(poll(config, store, clock, feed))
        assert r.result == "ok", r.error
        return sorted((a.kind, a.payload["entry"]["title"]) for a in r.alerts)

    assert step([entry(i) for i in range(1, 61)]) == []
    assert step([entry(i) for i in range(56, 66)]) == [("new", f"Entry {i}") for i in range(61, 66)]
    assert len(store.entries("f")) == 65  # 55 kept though not in the body: not read
    back = [
        replace(entry(3), entry_id="urn:moved:3"),  # same link and text, new id
        entry(2),  # back as it was
        entry(1, title="Entry 1, revised"),
        *(entry(i) for i in range(56, 66)),
    ]
    assert step(back) == [("updated", "Entry 1, revised")]
    assert "g:urn:moved:3" in store.entries("f") and "g:urn:entry:3" not in store.entries("f")
    # every entry now shares one guid: after two polls the policy is link, and every
    # stored entry (kept ones too) is re-keyed rather than made new
    same = [replace(e, entry_id="urn:same") for e in back]
    assert step(same) == []
    assert step(same, title="Test Feed, renamed") == []  # a body that differs
    rows = store.entries("f")
    assert store.feed("f").identity.policy == "link" and len(rows) == 65
    assert all(k.startswith("l:") for k in rows)
    returning = replace(entry(20), entry_id="urn:same")  # dropped out two polls ago
    assert step([returning, *same]) == []
    store.close()


def test_a_re_key_collision_stores_the_row_the_comparison_used(tmp_path, feed_server):
    """Posts 9 and 8 (in that order) share a link; id_policy is edited from guid to link.
    Both rows take the link's key, seen at the same time: the comparison keeps one, and
    the store must keep that one too. Before, the store kept the other (its re-key
    keeps the row already renamed on equal times), and the next poll alerted post 9 as
    updated with post 8's text as its old version."""

    def body(pad: str = "") -> list:
        es = [entry(n, summary=f"Text of post {n}.{pad}") for n in range(1, 8)]
        shared = "https://example.org/8"
        return [*es, *(entry(n, link=shared, summary=f"Text of post {n}.{pad}") for n in (9, 8))]

    settings = replace(SETTINGS, stale_after=0, id_policy="guid")
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)

    def step(feed, pad):
        feed_server.set("/f", rss(body(pad)))  # white space only: the text stays
        clock.advance(minutes=15)
        r = asyncio.run(poll(replace(config, feeds=(feed,)), store, clock, feed))
        assert r.result == "ok", r.error
        return [(a.kind, a.payload["entry"]["title"]) for a in r.alerts]

    assert step(feed, "") == []
    by_link = replace(feed, settings=replace(settings, id_policy="link"))
    assert step(by_link, " ") == []
    assert store.feed("f").identity.policy == "link"
    assert store.entries("f")["l:https://example.org/8"].title == "Entry 9"
    assert step(by_link, "  ") == []


def test_an_entry_without_a_link_keeps_its_row_when_ids_come_and_go(tmp_path, feed_server):
    """A feed without ids (the link policy) starts giving them: an entry without a
    link, stored under its content key, is read among the rows the poll names though
    the feed keeps many more, and is that entry under its id, not new; losing the id
    again, it is still the same entry."""
    settings = replace(SETTINGS, stale_after=0, first_poll="baseline")
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)

    def notice(entry_id):
        return entry("n", title="Maintenance notice", link=None, entry_id=entry_id)

    def step(entries):
        feed_server.set("/f", rss(entries))
        clock.advance(minutes=15)
        r = asyncio.run(poll(config, store, clock, feed))
        assert r.result == "ok", r.error
        return sorted((a.kind, a.payload["entry"]["title"]) for a in r.alerts)

    assert step([*(entry(i, entry_id=None) for i in range(60)), notice(None)]) == []
    posts = [entry(i, entry_id=None) for i in range(50, 60)]
    assert step([*posts, notice(None)]) == []
    assert store.feed("f").identity.policy == "link" and len(store.entries("f")) == 61
    with_ids = [entry(i, entry_id=f"post-{i}") for i in range(50, 60)]
    assert step([*with_ids, notice("notice-1")]) == []  # (guid is the candidate)
    assert step([*with_ids, notice("notice-1"), entry(99, entry_id="post-99")]) == [
        ("new", "Entry 99")
    ]
    assert store.feed("f").identity.policy == "guid"
    assert "g:notice-1" in store.entries("f")
    assert step([*with_ids, notice(None)]) == []
    store.close()


def test_unchanged_items_are_settled_and_the_state_vouches_for_them(tmp_path, feed_server):
    """An item byte for byte as in the body the state last committed is taken as seen
    without its row (model.Settled), but only while the state holds that row in its
    last body: a row lost behind feedwatch's back makes the entry compared, so new."""
    import sqlite3

    from structlog.testing import capture_logs

    import feedwatch.diff

    settings = replace(SETTINGS, stale_after=0, first_poll="baseline")
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)
    skipped: list[int] = []
    settled_keys = feedwatch.diff._settled_keys

    def counting(*args):
        got = settled_keys(*args)
        skipped.append(len(got))
        return got

    def step(entries):
        feed_server.set("/f", rss(entries))
        clock.advance(minutes=15)
        skipped.clear()
        with capture_logs() as logs:
            r = asyncio.run(poll(config, store, clock, feed))
        assert r.result == "ok", r.error
        events = [e["event"] for e in logs if e["log_level"] == "warning"]
        return sorted((a.kind, a.payload["entry"]["title"]) for a in r.alerts), events

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(feedwatch.diff, "_settled_keys", counting)
        assert step([entry(i) for i in range(1, 6)]) == ([], [])
        assert step([entry(i) for i in range(1, 7)]) == ([("new", "Entry 6")], [])
        assert skipped[-1] == 5  # entries 1-5 were not compared
        with sqlite3.connect(config.state) as conn:
            conn.execute("DELETE FROM entries WHERE identity = 'g:urn:entry:2'")
        conn.close()
        alerts, events = step([entry(i) for i in range(1, 8)])
        assert alerts == [("new", "Entry 2"), ("new", "Entry 7")]
        assert events == ["feed.state_incoherent"]
        assert step([entry(i) for i in range(1, 9)]) == ([("new", "Entry 8")], [])
        assert skipped[-1] == 7
    store.close()


def test_a_body_repeating_an_identity_is_logged_once_per_feed(tmp_path, feed_server):
    """Entries beside the first of one identity are neither compared nor alerted: a
    poller says so in its log once per feed (not at every poll of a daemon)."""
    from structlog.testing import capture_logs

    settings = replace(SETTINGS, stale_after=0, id_policy="guid")
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)
    twice = [entry(1), entry(2, entry_id="urn:entry:1")]

    async def polls():
        async with Fetcher() as fetcher:
            poller = Poller(config, store, fetcher, clock=clock)
            for n in range(3):
                feed_server.set("/f", rss([*twice, entry(3 + n)]))
                clock.advance(minutes=15)
                r = await poller.poll(feed)
                assert r.result == "ok", r.error

    with capture_logs() as logs:
        asyncio.run(polls())
    said = [e for e in logs if e["event"] == "feed.repeated_identity"]
    assert [(e["feed"], e["entries"], e["policy"]) for e in said] == [("f", 1, "guid")]
    store.close()


def test_failed_poll_prunes_nothing_and_backs_off(tmp_path, feed_server):
    feed_server.set("/f", rss([entry(1), entry(2)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), replace(SETTINGS, retention=60))
    clock = FakeClock(T0)
    asyncio.run(poll(config, store, clock, feed))
    feed_server.set("/f", b"down", status=503)
    for n in range(1, 4):
        clock.advance(hours=1)
        r = asyncio.run(poll(config, store, clock, feed))
        assert r.result == "error"
        rec = store.feed("f")
        assert rec.errors == n
        # interval x 2^n (SPEC section 6), capped; no jitter configured
        assert rec.next_poll == clock.now + timedelta(seconds=60 * 2**n)
    assert len(store.entries("f")) == 2  # retention passed, but a failing feed prunes nothing
    feed_server.set("/f", rss([entry(1), entry(2)]))
    clock.advance(hours=1)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.result in ("ok", "not_modified", "unchanged") and r.alerts == []
    assert store.feed("f").errors == 0
    assert store.feed("f").next_poll == clock.now + timedelta(seconds=60)
    store.close()


def _with_retention(feed, config, retention):
    feed = replace(feed, settings=replace(feed.settings, retention=retention))
    return feed, replace(config, feeds=(feed,))


def test_lowering_the_retention_alerts_no_entry_still_in_the_feed_again(tmp_path, feed_server):
    """The retention lowered from 90 days to 30 minutes: an entry of the feed had been
    seen (to the hour: feedwatch.store.seen) 52 minutes before the first poll after the
    change, which came 12 minutes after the one before (the default interval is 15
    minutes): it pruned the entry, and the next changed body alerted it as new again."""
    settings = replace(SETTINGS, stale_after=0)
    feed_server.set("/f", rss([entry(1), entry(2)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)  # 10:40:17

    def step(minutes):
        clock.advance(minutes=minutes)
        r = asyncio.run(poll(config, store, clock, feed))
        assert r.result in ("ok", "unchanged", "not_modified"), r.error
        return [a.payload["entry"]["title"] for a in r.alerts]

    assert step(0) == []  # the baseline
    assert step(25) == []  # 11:05:17, the hour's first success: seen
    assert step(40) == []  # 11:45:17, seen again, not written
    feed, config = _with_retention(feed, config, 30 * 60)
    assert step(12) == []  # 11:57:17, the same quarter hour: cut at 11:27:17
    feed_server.set("/f", rss([entry(1), entry(2), entry(3)]))
    assert step(20) == ["Entry 3"]  # 12:17:17
    first = {k: e.first_seen for k, e in store.entries("f").items()}
    assert first == {"g:urn:entry:1": T0, "g:urn:entry:2": T0, "g:urn:entry:3": clock.now}
    store.close()


def test_an_entry_back_within_the_retention_after_it_left_is_not_new(tmp_path, feed_server):
    """An entry is forgotten `retention` after it was last in a body. One that left kept
    the time of the last touch (up to a step before the body it was last in), so it
    went early and, back within the retention, alerted as new."""
    settings = replace(SETTINGS, stale_after=0, retention=30 * 60)  # a step of 15 minutes
    feed_server.set("/f", rss([entry(1), entry(2)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)  # 10:40:17

    def step(minutes, body=None):
        if body is not None:
            feed_server.set("/f", rss(body))
        clock.advance(minutes=minutes)
        r = asyncio.run(poll(config, store, clock, feed))
        assert r.result in ("ok", "unchanged", "not_modified"), r.error
        return [a.payload["entry"]["title"] for a in r.alerts]

    assert step(0) == []  # the baseline
    assert step(5) == []  # 10:45:17: seen
    assert step(13) == []  # 10:58:17: seen again in the same quarter, not written
    assert step(12, [entry(2)]) == []  # 11:10:17: entry 1 has left
    assert step(10) == []  # 11:20:17
    assert step(7, [entry(1), entry(2)]) == []  # 11:27:17: back 29 minutes after 10:58:17
    store.close()


@pytest.mark.parametrize("edited", [False, True], ids=["unchanged", "edited"])
@pytest.mark.parametrize("meanwhile", ["nothing", "a failed poll", "an unchanged poll"])
def test_an_entry_back_after_the_retention_is_new_whether_or_not_a_poll_forgot_it(
    tmp_path, feed_server, edited, meanwhile
):
    """SPEC: new is "an identity not seen in this feed within retention". An entry back
    3 hours after it left, with a retention of 2 hours, was new only if a successful
    poll had pruned its row meanwhile; with none (the feed failing, or not polled), the
    comparison found the expired row: back unchanged it alerted nothing, edited it was
    `updated` with the 3-hour-old text as the old one. The comparison takes only rows
    within the retention; a dry run says the same, and the row is written as new."""
    settings = replace(SETTINGS, stale_after=0, retention=2 * 3600)
    feed_server.set("/f", rss([entry(1), entry(2), entry(3)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)
    assert asyncio.run(poll(config, store, clock, feed)).result == "ok"  # the baseline
    feed_server.set("/f", rss([entry(1), entry(2)]))  # entry 3 leaves
    clock.advance(minutes=5)
    assert asyncio.run(poll(config, store, clock, feed)).alerts == []
    clock.advance(hours=3)
    if meanwhile == "a failed poll":
        feed_server.set("/f", b"down", status=503)
        assert asyncio.run(poll(config, store, clock, feed)).result == "error"
    elif meanwhile == "an unchanged poll":  # it prunes the row
        assert asyncio.run(poll(config, store, clock, feed)).result in ("unchanged", "not_modified")
    back = entry(3, summary="Entry 3, corrected.") if edited else entry(3)
    feed_server.set("/f", rss([entry(1), entry(2), back]))
    clock.advance(minutes=1)

    async def dry():
        async with Fetcher() as fetcher:
            return await Poller(config, store, fetcher, clock=clock, dry_run=True).poll(feed)

    def seen(r):
        return [(a.kind, a.payload["entry"]["title"], a.payload["changes"]) for a in r.alerts]

    predicted = asyncio.run(dry())
    r = asyncio.run(poll(config, store, clock, feed))
    assert (r.new, r.updated) == (1, 0)
    assert seen(r) == [("new", "Entry 3", {})]
    assert seen(predicted) == seen(r) and [a.id for a in predicted.alerts] == [
        a.id for a in r.alerts
    ]
    row = store.entries("f")["g:urn:entry:3"]
    assert (row.first_seen, row.last_seen) == (clock.now, clock.now)
    assert row.new_alert_id == r.alerts[0].id
    # in the body again: a later poll keeps it, and it alerts no more
    clock.advance(hours=3)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.alerts == [] and "g:urn:entry:3" in store.entries("f")
    store.close()


def test_an_entry_back_in_the_feed_is_seen_at_the_poll_that_saw_it(tmp_path, feed_server):
    """An entry back in the feed kept the last_seen of when it left until the next hourly
    touch (feedwatch.store.seen): `explain` showed it "last seen" two days ago, in the
    body just fetched. The poll that finds it back records its time."""
    settings = replace(SETTINGS, stale_after=0)
    feed_server.set("/f", rss([entry(1), entry(2), entry(3)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), settings)
    clock = FakeClock(T0)  # 10:40:17
    asyncio.run(poll(config, store, clock, feed))
    feed_server.set("/f", rss([entry(1), entry(2)]))  # entry 3 leaves
    clock.advance(minutes=5)
    asyncio.run(poll(config, store, clock, feed))
    left = store.entries("f")["g:urn:entry:3"].last_seen
    clock.advance(days=2)  # 10:45:17, two days on: the hour's first success touches
    asyncio.run(poll(config, store, clock, feed))
    touched = store.entries("f")["g:urn:entry:1"].last_seen
    assert touched == clock.now
    feed_server.set("/f", rss([entry(1), entry(2), entry(3)]))  # back, unchanged
    clock.advance(minutes=5)  # the same hour: no touch
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.result == "ok" and r.alerts == []
    rows = store.entries("f")
    assert rows["g:urn:entry:3"].last_seen == clock.now != left
    assert rows["g:urn:entry:1"].last_seen == touched  # the others as before: not rewritten
    assert rows["g:urn:entry:3"].first_seen == T0
    store.close()


def test_stale_notice_pure():
    rec = FeedRecord(name="f", last_success=T0, last_new_entry=T0)
    assert stale_notice(rec, T0 + timedelta(minutes=30), 3600) is None
    polled = replace(rec, last_success=T0 + timedelta(hours=2))
    kind, msg, key = stale_notice(polled, T0 + timedelta(hours=2), 3600)
    assert kind == "stale" and "no new entry" in msg
    assert stale_notice(replace(polled, stale_notified=True), T0 + timedelta(hours=2), 3600) is None
    broken = replace(rec, last_error="HTTP 500", errors=5)
    kind, msg, _ = stale_notice(broken, T0 + timedelta(hours=2), 3600)
    assert "no successful poll" in msg and "HTTP 500" in msg
    back = replace(
        rec,
        stale_notified=True,
        last_success=T0 + timedelta(hours=2),
        last_new_entry=T0 + timedelta(hours=2),
    )
    assert stale_notice(back, T0 + timedelta(hours=2), 3600)[0] == "recovered"
    assert stale_notice(rec, T0 + timedelta(days=9), 0) is None


def test_a_time_stored_by_a_clock_ahead_reads_as_now():
    """A `check` run with the clock a year ahead stored its times a year ahead: read as
    they are, the feed could not look stale for a year once the clock was right. A time
    later than now (beyond ``AHEAD_TOLERANCE``) reads as now; one within it as it is."""
    ahead = FeedRecord(
        name="f", last_success=T0 + timedelta(days=365), last_new_entry=T0 + timedelta(days=365)
    )
    assert ahead_of_clock(ahead, T0) == ("last_success", "last_new_entry")
    assert as_of(ahead, T0) == replace(ahead, last_success=T0, last_new_entry=T0)
    assert stale_notice(ahead, T0, 3600) is None  # as if polled, with a new entry, now
    # the clamp kept (poll.Poller._staleness stores it): stale `stale_after` on
    later = replace(as_of(ahead, T0), last_success=T0 + timedelta(hours=2))
    kind, msg, _ = stale_notice(later, T0 + timedelta(hours=2), 3600)
    assert kind == "stale" and msg == "feed 'f' looks stale: no new entry for 2 hours"
    # failing since: its last success, a year ahead, read as now too
    broken = replace(ahead, last_error="HTTP 500")
    assert stale_notice(broken, T0, 3600) is None
    kind, msg, _ = stale_notice(as_of(broken, T0), T0 + timedelta(hours=2), 3600)
    assert msg.startswith("feed 'f' looks stale: no successful poll for 2 hours")
    # within the tolerance (another host's clock a little ahead): as stored, untouched
    near = T0 + AHEAD_TOLERANCE
    close = FeedRecord(name="f", last_success=near, last_new_entry=near)
    assert ahead_of_clock(close, T0) == () and as_of(close, T0) is close
    assert ahead_of_clock(FeedRecord(name="f"), T0) == ()


def test_a_new_entry_stored_a_year_ahead_does_not_silence_stale_for_a_year(tmp_path, feed_server):
    """`check` ran once with the clock a year ahead, then the clock was put right: the
    feed's last new entry stayed stored a year ahead, and no `stale` notice came for a
    year. It is pulled back to the first poll after the correction (logged once, naming
    the feed), and the notice comes `stale_after` later."""
    from structlog.testing import capture_logs

    feed_server.set("/f", rss([entry(1)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"))
    clock = FakeClock(T0 + timedelta(days=365))
    asyncio.run(poll(config, store, clock, feed))  # the baseline, a year ahead
    clock = FakeClock(T0)  # put right
    with capture_logs() as logs:
        r = asyncio.run(poll(config, store, clock, feed))
        assert r.alerts == []
        clock.advance(minutes=5)
        assert asyncio.run(poll(config, store, clock, feed)).alerts == []
    ahead = [e for e in logs if e["event"] == "feed.clock_was_ahead"]
    assert len(ahead) == 1 and ahead[0]["feed"] == "f"
    record = store.feed("f")
    assert record is not None and record.last_new_entry == T0
    clock.advance(hours=2)
    r = asyncio.run(poll(config, store, clock, feed))
    assert [a.kind for a in r.alerts] == ["stale"]
    assert (
        r.alerts[0].payload["message"] == "feed 'f' looks stale: no new entry for 2 hours 5 minutes"
    )
    store.close()


@pytest.mark.parametrize(
    ("quiet", "reads"),
    [
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(seconds=61), "1 minute"),
        (timedelta(minutes=59, seconds=59), "59 minutes"),
        (timedelta(hours=1), "1 hour"),
        (timedelta(hours=1, minutes=30), "1 hour 30 minutes"),
        (timedelta(hours=2, seconds=20), "2 hours"),
        (timedelta(days=1), "1 day"),
        (timedelta(days=1, hours=12, minutes=5), "1 day 12 hours"),
        (timedelta(days=9), "9 days"),
    ],
)
def test_stale_notice_says_how_long_as_a_person_would(quiet, reads):
    """It read "no new entry for 0 minutes", "1 minutes", "1.0 days"."""
    rec = FeedRecord(name="f", last_success=T0 + quiet, last_new_entry=T0)
    _, msg, _ = stale_notice(rec, T0 + quiet, 30)
    assert msg == f"feed 'f' looks stale: no new entry for {reads}"
    broken = FeedRecord(name="f", last_success=T0, last_new_entry=T0, last_error="HTTP 500")
    _, msg, _ = stale_notice(broken, T0 + quiet, 30)
    assert msg == f"feed 'f' looks stale: no successful poll for {reads} (last error: HTTP 500)"


@pytest.mark.timeout(60)
def test_permanent_redirect_followed_and_reported(tmp_path, feed_server):
    feed_server.set("/new", rss([entry(1)]))
    feed_server.redirect("/old", feed_server.url("/new"), status=301)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\n[sinks.out]\ntype = "jsonl"\npath = "{tmp_path}/a.jsonl"\n'
        f'[[feeds]]\nname = "moved"\nurl = "{feed_server.url("/old")}"\n'
    )
    r = run_feedwatch("-c", str(cfg), "check", timeout=30)
    assert r.returncode == 0, r.stderr
    assert "feed.redirected" in r.stderr
    st = subprocess.run(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    (feed,) = json.loads(st.stdout)["feeds"]
    assert feed["redirected_to"] == feed_server.url("/new")
    assert feed["state"] == "ok" and feed["entries"] == 1
    table = subprocess.run(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "permanently redirected to " + feed_server.url("/new") in table.stdout
    assert table.stdout.splitlines()[0].split()[:3] == ["FEED", "STATE", "HTTP"]


def test_status_without_state_creates_nothing(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/sub/s.db"\n[[feeds]]\nname = "a"\nurl = "https://example.org/f"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0
    assert json.loads(r.stdout) == {
        "feeds": [
            {
                "name": "a",
                "url": "https://example.org/f",
                "state": "new",
                "http_status": None,
                "last_poll": None,
                "last_success": None,
                "errors": 0,
                "last_error": None,
                "entries": 0,
                "next_poll": None,
                "redirected_to": None,
            }
        ],
        "sinks": [],
    }
    assert not (tmp_path / "sub").exists()


def test_a_body_that_waits_for_its_parse_is_compared_at_the_time_it_was_fetched(
    tmp_path, feed_server
):
    """A big check's bodies can wait seconds for a body worker. The poll's time is when
    its response arrived, not when its parse ended: a one-entry feed stamped with the
    time of each request (diff.stamped_at_fetch) stays quiet even when each body waits
    30 s, and the state records the fetch's time."""
    from feedwatch.parse import parse_body

    feed, config, store = make(
        tmp_path, feed_server.url("/status"), replace(SETTINGS, stale_after=0)
    )
    clock = FakeClock(T0)

    def slow_parse(*args, **kwargs):
        clock.advance(seconds=30)  # the body waited for a worker
        return parse_body(*args, **kwargs)

    kinds = []
    for _ in range(4):
        clock.advance(minutes=15)
        fetched_at = clock()
        feed_server.set("/status", rss([entry(1, title="Service status", updated=fetched_at)]))

        async def one():
            async with Fetcher() as fetcher:
                return await Poller(config, store, fetcher, clock=clock, parse=slow_parse).poll(
                    feed
                )

        r = asyncio.run(one())
        assert r.result == "ok", r.error
        kinds += [a.kind for a in r.alerts]
        record = store.feed(feed.name)
        assert record is not None and record.last_poll == fetched_at
    assert kinds == ["updated"]  # the baseline, the first re-stamp, then silence
    store.close()


def test_status_shows_no_next_poll_for_a_feed_that_will_not_be_polled(tmp_path, feed_server):
    """A feed polled once and then disabled, or removed from the config, kept the time
    its next poll would have had: status showed a poll that never comes."""
    feed_server.set("/f.xml", rss([entry(1)]))

    def config(*feeds: str) -> str:
        url = feed_server.url("/f.xml")
        blocks = "".join(f'[[feeds]]\nname = "{n}"\nurl = "{url}"\n{extra}' for n, extra in feeds)
        return f'[feedwatch]\nstate = "{tmp_path}/s.db"\n{blocks}'

    cfg = tmp_path / "c.toml"
    cfg.write_text(config(("a", ""), ("b", ""), ("c", "")))

    def fw(*args: str) -> subprocess.CompletedProcess[str]:
        return run_feedwatch("-c", str(cfg), *args, timeout=30)

    assert fw("check").returncode == 0
    cfg.write_text(config(("a", ""), ("b", "enabled = false\n")))  # c removed
    rows = {f["name"]: f for f in json.loads(fw("status", "--json").stdout)["feeds"]}
    assert {n: (f["state"], f["next_poll"] is None) for n, f in rows.items()} == {
        "a": ("ok", False),
        "b": ("disabled", True),
        "c": ("removed", True),
    }


def test_a_poll_that_crashes_backs_off_like_any_failure(tmp_path, feed_server):
    """A feed whose every poll crashed (bytes that could not be stored, a parser bug)
    was polled again after one interval, for ever, where a failing fetch backs off."""
    feed_server.set("/f", rss([entry(1)]))
    feed, config, store = make(tmp_path, feed_server.url("/f"), replace(SETTINGS, stale_after=0))
    clock = FakeClock(T0)

    def broken_parse(*args, **kwargs):
        raise RuntimeError("a parser bug")

    delays = []
    for _ in range(3):

        async def one():
            async with Fetcher() as fetcher:
                return await Poller(config, store, fetcher, clock=clock, parse=broken_parse).poll(
                    feed
                )

        r = asyncio.run(one())
        assert r.result == "error" and "internal error" in (r.error or "")
        record = store.feed(feed.name)
        assert record is not None and record.next_poll is not None
        delays.append((record.next_poll - clock()).total_seconds())
        clock.advance(seconds=delays[-1])
    assert delays == [120.0, 240.0, 480.0]  # the interval (60 s) x 2^errors
    store.close()


def _channel(*videos: str, version: int = 3) -> bytes:
    """A YouTube channel's Atom feed (``/feeds/videos.xml``): each video's media in a
    <media:group>, as Media RSS <media:content> and <media:thumbnail>."""
    entries = "".join(
        f"<entry><id>yt:video:{v}</id><yt:videoId>{v}</yt:videoId><title>Video {v}</title>"
        f'<link rel="alternate" href="https://www.youtube.com/watch?v={v}"/>'
        "<published>2024-11-22T10:40:17+00:00</published>"
        f"<media:group><media:title>Video {v}</media:title>"
        f'<media:content url="https://www.youtube.com/v/{v}?version={version}"'
        ' type="application/x-shockwave-flash" width="640" height="390"/>'
        f'<media:thumbnail url="https://i1.ytimg.com/vi/{v}/hqdefault.jpg" width="480"/>'
        f"<media:description>About {v}</media:description></media:group></entry>"
        for v in videos
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015"'
        ' xmlns:media="http://search.yahoo.com/mrss/" xmlns="http://www.w3.org/2005/Atom">'
        f"<title>A channel</title>{entries}</feed>"
    ).encode()


def test_a_youtube_videos_media_content_is_in_its_alerts_enclosures(tmp_path, feed_server):
    """SPEC 5: a YouTube channel's (or a photo or podcast feed's) Media RSS
    <media:content> is in the alert's `enclosures` (it alerted with none); its
    thumbnail is not an enclosure, and a change of the media alone is no update."""
    feed_server.set("/videos.xml", _channel("a1"))
    feed, config, store = make(tmp_path, feed_server.url("/videos.xml"))
    clock = FakeClock(T0)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.result == "ok" and r.baseline
    feed_server.set("/videos.xml", _channel("b2", "a1"))
    clock.advance(hours=1)
    r = asyncio.run(poll(config, store, clock, feed))
    assert [(a.kind, a.payload["entry"]["enclosures"]) for a in r.alerts] == [
        (
            "new",
            [
                {
                    "url": "https://www.youtube.com/v/b2?version=3",
                    "type": "application/x-shockwave-flash",
                    "length": None,
                }
            ],
        )
    ]
    # the media's URL changed, nothing else: not an update (SPEC 4)
    feed_server.set("/videos.xml", _channel("b2", "a1", version=4))
    clock.advance(hours=1)
    r = asyncio.run(poll(config, store, clock, feed))
    assert r.result == "ok" and r.alerts == []
    store.close()


def test_failed_poll_and_delivery_marks_keep_the_event_loop_running_while_the_state_is_locked(
    tmp_path, feed_server
):
    """Another process held SQLite's write lock (an admin's `sqlite3` shell in a
    transaction): a failed poll's record_failure and the dispatcher's marks
    (mark_delivered, mark_retry) waited out SQLite's busy timeout on the event loop's
    thread, so the daemon fetched nothing, handled no signal and sent no watchdog
    ping until the lock was let go. Now they wait with the loop running, and are
    stored once the lock is free: the failure recorded, the sent alert delivered (not
    sent again), the failed one pending for its retry."""
    import time

    from feedwatch.deliver import Dispatcher
    from feedwatch.model import Alert
    from feedwatch.sinks.base import SendResult
    from feedwatch.testing import RecordingSink
    from tests.receivers import make_payload

    feed_server.set("/f", "down for maintenance", status=500)
    feed, config, store = make(tmp_path, feed_server.url("/f"))
    ids = []
    for n, sink in enumerate(("ok", "bad")):
        aid = f"{n + 1:032x}"
        alert = Alert(
            id=aid,
            kind="new",
            feed="f",
            payload=make_payload(alert_id=aid, feed="f"),
            sinks=(sink,),
            identity=f"urn:{n}",
        )
        assert store.queue_notices([alert]) == [aid]
        ids.append(aid)
    ok = RecordingSink(name="ok")
    bad = RecordingSink(name="bad", fail_with=SendResult.transient("503 Service Unavailable"))

    lock = HeldWriteLock(config.state)

    async def main():
        async with LoopLateness() as loop:
            lock.start()
            async with Fetcher() as fetcher:
                poller = Poller(config, store, fetcher)
                dispatcher = Dispatcher(config, store, {"ok": ok, "bad": bad})
                report, sent = await asyncio.wait_for(
                    asyncio.gather(poller.poll(feed), dispatcher.run_once()), 20
                )
            done = time.monotonic()
        return report, sent, loop, done

    try:
        report, sent, loop, done = asyncio.run(main())
        assert loop.late < 0.5, f"the event loop stood still for {loop.late:.2f} s"
        assert loop.ticks >= 20  # it ticked through the hold (3 s: ~60 ticks)
        assert lock.released is not None and done >= lock.released
        assert report.result == "error" and report.http_status == 500
        assert (sent.delivered, sent.retried, sent.dead) == (1, 1, 0)
        assert ok.alert_ids == [ids[0]] and bad.alert_ids == [ids[1]]
        rec = store.feed("f")
        assert rec is not None and rec.errors_at(feed.url) == 1 and rec.http_status == 500
        assert store.pending(sink="ok") == []
        [retry] = store.pending(sink="bad")
        assert retry.attempts == 1 and "503" in (retry.last_error or "")
    finally:
        lock.close()
        store.close()
