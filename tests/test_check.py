"""`feedwatch check` end to end: a real subprocess, a real feed server, a real state file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from feedwatch import parsecache
from feedwatch.bodyworkers import MIN_FEEDS
from feedwatch.identity import alert_id, content_identity_at, fingerprint
from feedwatch.model import EntrySnapshot
from feedwatch.testing import T0, entry, rss
from tests.feedserver import FeedServer, feed_server  # noqa: F401
from tests.helpers import age_state, run_feedwatch, wait_for
from tests.receivers import webhook_receiver  # noqa: F401


def fw(
    cfg: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_feedwatch("-c", str(cfg), *args, env={**os.environ, **(env or {})})


def write_config(
    tmp: Path, server: FeedServer, extra_feeds: str = "", feed_extra: str = ""
) -> Path:
    cfg = tmp / "feedwatch.toml"
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp}/state.db"
log_format = "json"
jitter = "0s"

[rules.missiles]
any = ["hypersonic", "missile*"]

[sinks.log]
type = "jsonl"
path = "{tmp}/alerts.jsonl"

[[feeds]]
name = "news"
url = "{server.url("/news.xml")}"
match = ["missiles"]
{feed_extra}

[[feeds]]
name = "everything"
url = "{server.url("/all.xml")}"
{extra_feeds}
"""
    )
    return cfg


def jsonl_config(tmp: Path, feeds: str, settings: str = "") -> str:
    """A config's text: the state and a jsonl sink in ``tmp``, ``settings`` in
    [feedwatch], then ``feeds`` ([[feeds]] blocks)."""
    return (
        f'[feedwatch]\nstate = "{tmp}/state.db"\nlog_format = "json"\n{settings}\n'
        f'[sinks.log]\ntype = "jsonl"\npath = "{tmp}/alerts.jsonl"\n\n{feeds}'
    )


def alerts(tmp: Path) -> list[dict]:
    path = tmp / "alerts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def setup(tmp_path, feed_server):  # noqa: F811
    news = [entry(1, title="Markets open"), entry(2, title="Hypersonic test reported")]
    feed_server.set("/news.xml", rss(news))
    feed_server.set("/all.xml", rss([entry("a1", title="Anything at all")]))
    cfg = write_config(tmp_path, feed_server)
    return tmp_path, feed_server, cfg, news


def test_baseline_then_new_then_updated(setup):
    tmp, srv, cfg, news = setup
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp) == []  # first poll is a baseline

    news2 = [*news, entry(3, title="Hypersonic missile strike on Dnipro")]
    srv.set("/news.xml", rss(news2))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    (a,) = alerts(tmp)
    assert a["kind"] == "new"
    assert a["feed"]["name"] == "news"
    assert a["entry"]["title"] == "Hypersonic missile strike on Dnipro"
    assert a["matched"] == [{"rule": "missiles", "terms": ["hypersonic", "missile*"]}]
    assert a["changes"] == {}

    # updated by timestamp and content
    later = T0 + timedelta(hours=5, minutes=16, seconds=28)
    news3 = [
        *news,
        entry(
            3,
            title="Hypersonic missile strike on Dnipro",
            updated=later,
            summary="Casualties reported.",
        ),
    ]
    srv.set("/news.xml", rss(news3))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    a1, a2 = alerts(tmp)
    assert a2["kind"] == "updated"
    assert a2["changes"]["updated"] == {"old": None, "new": "2024-11-22T15:56:45Z"}
    assert a2["changes"]["summary"] == {"old": "Summary of entry 3.", "new": "Casualties reported."}
    assert a2["id"] != a1["id"]

    # nothing changed: 304, no alert, no repeat
    before = srv.count("/news.xml")
    r = fw(cfg, "check")
    assert r.returncode == 0
    assert len(alerts(tmp)) == 2
    assert srv.count("/news.xml") == before + 1
    last = [h for (m, p, h) in srv.requests if p == "/news.xml"][-1]
    assert "if-none-match" in last


def test_forget_during_a_poll_makes_the_next_poll_the_baseline(tmp_path, feed_server):  # noqa: F811
    cfg = tmp_path / "feedwatch.toml"
    feed_url = feed_server.url("/f.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "f"\nurl = "{feed_url}"\n'))
    stories = [entry(i, title=f"Story {i}") for i in range(3)]
    feed_server.set("/f.xml", rss(stories))
    assert fw(cfg, "check").returncode == 0
    # the next poll is under way (a slow answer with one more entry) when forget runs
    feed_server.set("/f.xml", rss([*stories, entry(3, title="Story 3")]), delay=1.5)
    before = feed_server.count("/f.xml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: feed_server.count("/f.xml") > before, what="the poll's request")
    r = fw(cfg, "forget", "f")
    assert r.returncode == 0, r.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert alerts(tmp_path) == []  # not its 4 entries as new
    assert "feed.forgotten_during_poll" in err
    # the next poll is the baseline; after it, news alerts again
    feed_server.set("/f.xml", rss([*stories, entry(3, title="Story 3")]))
    assert fw(cfg, "check").returncode == 0
    assert alerts(tmp_path) == []
    feed_server.set("/f.xml", rss([*stories, entry(3, title="Story 3"), entry(4, title="Story 4")]))
    assert fw(cfg, "check").returncode == 0
    assert [a["entry"]["title"] for a in alerts(tmp_path)] == ["Story 4"]


def test_unmatched_entries_do_not_alert_but_feed_without_rules_alerts_all(setup):
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    srv.set("/news.xml", rss([*news, entry(4, title="Weather is nice")]))
    srv.set("/all.xml", rss([entry("a1", title="Anything at all"), entry("a2", title="Cats")]))
    assert fw(cfg, "check").returncode == 0
    got = alerts(tmp)
    assert [(a["feed"]["name"], a["entry"]["title"]) for a in got] == [("everything", "Cats")]
    assert got[0]["matched"] == []


def test_content_update_without_timestamp(setup):
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    srv.set("/news.xml", rss([news[0], replace(news[1], summary="Now confirmed: hypersonic.")]))
    assert fw(cfg, "check").returncode == 0
    (a,) = alerts(tmp)
    assert a["kind"] == "updated" and set(a["changes"]) == {"summary"}


def test_a_feed_flipping_between_two_servers_alerts_the_correction_once(setup):
    """One server of the site still has the first version: every other fetch shows it.
    Before, going back to it alerted an "updated" whose times ran backwards."""
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0  # baseline
    first = [entry("a1", title="Anything at all")]
    fixed = [
        entry("a1", title="Anything at all", summary="Corrected.", updated=T0 + timedelta(hours=5))
    ]
    for body in (fixed, first, fixed, first, fixed, first):
        srv.set("/all.xml", rss(body))
        if body is first:  # what the next poll will make of it
            explained = fw(cfg, "explain", "everything", "Anything").stdout
            assert "back to the version it was first seen as" in explained, explained
        r = fw(cfg, "check", "--feed", "everything")
        assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["changes"]["summary"]["new"]) for a in alerts(tmp)]
    assert got == [("updated", "Corrected.")]


def test_counters_named_in_ignore_text_alert_nothing_and_real_edits_still_do(
    tmp_path,
    feed_server,  # noqa: F811
):
    """hnrss.org's items carry "Points: N" and "# Comments: N", which change at every
    poll: each was an update. With ignore_text they are stored silently, explain says
    why, and a real edit still alerts, carrying the counters as they are."""

    def story(points: int, comments: int, lead: str = "Article URL: https://x.example/1"):
        html = f"<p>{lead}</p><p>Points: {points}</p><p># Comments: {comments}</p>"
        return entry("hn1", title="Show HN: a feed monitor", summary=html)

    feed_server.set("/news.xml", rss([entry("n1")]))
    feed_server.set("/all.xml", rss([story(3, 0)]))
    cfg = write_config(
        tmp_path, feed_server, extra_feeds="ignore_text = ['/Points: \\d+/', '/# Comments: \\d+/']"
    )
    assert fw(cfg, "validate").returncode == 0
    assert fw(cfg, "check").returncode == 0  # baseline
    for points, comments in ((12, 4), (57, 31)):
        feed_server.set("/all.xml", rss([story(points, comments)]))
        if points == 57:
            explained = fw(cfg, "explain", "everything", "Show HN").stdout
            assert "only in what ignore_text cuts out" in explained, explained
            assert "ignore_text = ['/Points: \\d+/', '/# Comments: \\d+/']" in explained
        assert fw(cfg, "check").returncode == 0
    assert alerts(tmp_path) == []
    feed_server.set("/all.xml", rss([story(60, 33, lead="Article URL: https://x.example/2")]))
    assert fw(cfg, "check").returncode == 0
    (a,) = alerts(tmp_path)
    assert a["kind"] == "updated" and set(a["changes"]) == {"summary"}
    old, new = (" ".join(a["changes"]["summary"][k].split()) for k in ("old", "new"))
    assert old == "Article URL: https://x.example/1 Points: 57 # Comments: 31"
    assert new == "Article URL: https://x.example/2 Points: 60 # Comments: 33"


def test_ignore_text_cuts_the_typographic_variants_a_rule_term_hits(
    tmp_path,
    feed_server,  # noqa: F811
):
    """ignore_text cuts what a rule's term written the same way hits, whichever
    apostrophe, hyphen or emoji presentation the feed or the user typed. Before, its
    terms met the text as the feed wrote it: "COVID‑19 update" pasted with its
    non-breaking hyphen (U+2011) never cut the same "COVID‑19 update" (the term was read
    through NFKC, the text was not), "O'Brien's" missed "O’Brien’s", "❤ trending" missed
    "❤️ Trending", '/COVID-19 cases: \\d+/' missed "COVID‑19 cases: 120" and
    '/Visited \\d+ times/' a WordPress "Vis&shy;ited": each poll alerted every entry as
    updated. The text stored and sent stays as the feed wrote it."""
    terms = (
        '"COVID\\u201119 update"',  # pasted from a web page: its non-breaking hyphen
        "\"Sponsored by O'Brien's\"",
        '"\\u2764 trending"',
        '"/COVID-19 cases: \\\\d+/"',
        '"/Visited \\\\d+ times/"',
    )
    lines = (
        ("COVID\u201119 update", ""),
        ("Sponsored by O\u2019Brien\u2019s", ""),
        ("\u2764\ufe0f Trending", ""),
        ("COVID\u201119 cases: 120", "COVID\u201119 cases: 135"),
        ("(Vis&shy;ited 222 times)", "(Vis&shy;ited 230 times)"),
    )

    def body(edited: int = -1, poll: int = 0):  # entries 0..edited edited
        return rss(
            [
                entry(
                    i,
                    title=f"Story {i}",
                    summary=("Edited story." if i <= edited else "A story.") + " " + line[poll % 2],
                )
                for i, line in enumerate(lines)
            ]
        )

    feed_server.set("/news.xml", rss([entry("n1")]))
    feed_server.set("/all.xml", body())
    cfg = write_config(tmp_path, feed_server, extra_feeds=f"ignore_text = [{', '.join(terms)}]")
    assert fw(cfg, "validate").returncode == 0
    assert fw(cfg, "check").returncode == 0  # baseline
    for poll in (1, 2, 3):
        feed_server.set("/all.xml", body(poll=poll))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        assert [a["entry"]["title"] for a in alerts(tmp_path)] == [], poll
    for i, (first, _) in enumerate(lines):
        feed_server.set("/all.xml", body(edited=i, poll=4))
        assert fw(cfg, "check").returncode == 0
        (a,) = alerts(tmp_path)[i:]
        assert a["kind"] == "updated" and a["entry"]["title"] == f"Story {i}"
        # sent as the feed wrote it: its apostrophes, hyphens and selectors kept
        shown = first.replace("&shy;", "\u00ad")
        assert a["changes"]["summary"]["new"] == f"Edited story. {shown}", a


def test_a_site_moving_to_https_with_permalink_ids_alerts_nothing(
    tmp_path,
    feed_server,  # noqa: F811
):
    """Hugo's RSS uses each post's permalink as its guid: when the site moved to https
    (and www.), every id and link changed at once, and every post alerted again."""

    def posts(site: str, n: int = 8) -> list:
        return [entry(i, entry_id=f"{site}/p/{i}/", link=f"{site}/p/{i}/") for i in range(n)]

    feed_server.set("/news.xml", rss([entry("n1")]))
    # 40 stored, 8 in the body after the move: the state is searched by id and by each
    # form of each link, not read whole (feedwatch.store.rows)
    feed_server.set("/all.xml", rss(posts("http://blog.example.org", 40)))
    cfg = write_config(tmp_path, feed_server)
    assert fw(cfg, "check").returncode == 0  # baseline
    feed_server.set("/all.xml", rss(posts("https://www.blog.example.org")))
    explained = fw(cfg, "explain", "everything", "https://www.blog.example.org/p/2/").stdout
    assert (
        "the same entry under a new id: its id and its link changed"
        " (it was http://blog.example.org/p/2/), its text did not"
    ) in explained, explained
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    feed_server.set("/all.xml", rss([*posts("https://www.blog.example.org"), entry("new")]))
    assert fw(cfg, "check").returncode == 0
    assert [a["entry"]["title"] for a in alerts(tmp_path)] == ["Entry new"]


def test_a_body_cut_short_mid_entry_alerts_neither_half_nor_whole_twice(
    tmp_path,
    feed_server,  # noqa: F811
):
    """A feed script that died half-way through an item (PHP's memory limit), status
    200: the half item alerted as new (or as an update that lost its text), and the
    whole one, next poll, as an update. It is left for the next poll now."""
    php = b"<br />\n<b>Fatal error</b>:  Allowed memory size exhausted in <b>feed.php</b><br />\n"
    old = [entry(i, summary=f"The whole text of story {i}, in several words.") for i in (1, 2)]
    story = entry(3, summary="A new story, told in full, in several words.")
    feed_server.set("/news.xml", rss([entry("n1")]))
    feed_server.set("/all.xml", rss(old))
    cfg = write_config(tmp_path, feed_server)
    assert fw(cfg, "check").returncode == 0  # baseline
    for body in ([*old, story], [story, *old]):  # the new one cut, then a known one
        whole = rss(body)
        feed_server.set("/all.xml", whole[: whole.rindex(b"in several")] + php)
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        assert "cut short" in r.stderr
        feed_server.set("/all.xml", whole)
        assert fw(cfg, "check").returncode == 0
    got = [(a["kind"], a["entry"]["summary"]) for a in alerts(tmp_path)]
    assert got == [("new", "A new story, told in full, in several words.")]


@pytest.mark.parametrize("feeds", [2, MIN_FEEDS], ids=["in-process", "body-workers"])
def test_a_body_cut_short_keeps_no_validators_so_what_it_left_out_alerts(
    tmp_path,
    feed_server,  # noqa: F811
    feeds,
):
    """A WordPress-like server sets its ETag before rendering and answers If-None-Match
    with 304. A render that died inside (or just before) the new last item came with the
    whole feed's ETag, which was stored: every later poll got 304, and the new entry,
    "left for the next poll", never alerted. A cut body keeps no validators and no
    digest now (the same cut bytes again are read again, not taken as unchanged)."""
    old = [entry(i, summary=f"The whole text of story {i}.") for i in (1, 2, 3)]
    whole = rss([*old, entry(4, title="Late story", summary="The late story, in full.")])
    cuts = {
        "inside": whole[: whole.index(b"The late story")],
        "before": whole[: whole.rindex(b"<item>")],
    }
    blocks = [f'[[feeds]]\nname = "{w}"\nurl = "{feed_server.url(f"/{w}.xml")}"\n' for w in cuts]
    for i in range(feeds - len(cuts)):  # enough feeds for a check with body workers
        feed_server.set(f"/x{i}.xml", rss([entry(f"x{i}")]))
        blocks.append(f'[[feeds]]\nname = "x{i}"\nurl = "{feed_server.url(f"/x{i}.xml")}"\n')
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, "\n".join(blocks), 'parse_workers = 1\njitter = "0s"'))
    modified = "Fri, 22 Nov 2024 10:40:17 GMT"
    for w in cuts:
        feed_server.set(f"/{w}.xml", rss(old), etag='"v1"', last_modified=modified)
    assert fw(cfg, "check").returncode == 0  # baseline
    modified = "Fri, 29 Nov 2024 10:40:17 GMT"
    for _ in range(2):  # the same cut bytes twice
        for w, cut in cuts.items():
            feed_server.set(f"/{w}.xml", cut, etag='"v2"', last_modified=modified)
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        assert ("check.body_workers" in r.stderr) == (feeds >= MIN_FEEDS)
    assert alerts(tmp_path) == []
    for w in cuts:
        feed_server.set(f"/{w}.xml", whole, etag='"v2"', last_modified=modified)
    assert fw(cfg, "check").returncode == 0
    got = sorted((a["feed"]["name"], a["kind"], a["entry"]["title"]) for a in alerts(tmp_path))
    assert got == [("before", "new", "Late story"), ("inside", "new", "Late story")]


def test_stray_bytes_from_one_feeds_server_fail_no_other_feed(tmp_path, feed_server):  # noqa: F811
    """A server that sends a 304 with a body, or a 200 with more bytes than its
    Content-Length, a moment late: the next feed polled on that kept-alive connection
    (the same host, per_host = 1) read them as its response and failed ("invalid HTTP
    response") in every check, while the bad feed was ok. Each feed is ok now; the log
    names the feed whose response left the bytes."""
    body = rss([entry(1), entry(2)])
    feed_server.set("/bad.xml", body, trailing=body)
    blocks = [f'[[feeds]]\nname = "bad"\nurl = "{feed_server.url("/bad.xml")}"\n']
    for i in range(4):
        feed_server.set(f"/good{i}.xml", rss([entry(f"g{i}")]))
        blocks.append(f'[[feeds]]\nname = "good{i}"\nurl = "{feed_server.url(f"/good{i}.xml")}"\n')
    cfg = tmp_path / "feedwatch.toml"
    settings = 'per_host = 1\nconcurrency = 1\njitter = "0s"'
    cfg.write_text(jsonl_config(tmp_path, "\n".join(blocks), settings))
    for _ in range(2):  # the bad feed's 200, then its 304, each with stray bytes after it
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        assert [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error ")] == []
        assert '"fetch.connection_garbled"' in r.stderr and "/bad.xml" in r.stderr
    assert any(p == "/bad.xml" and h.get("if-none-match") for _, p, h in feed_server.requests)


def test_a_rule_on_tags_hits_in_a_feed_that_is_not_well_formed(tmp_path, feed_server):  # noqa: F811
    """One ``&nbsp;`` makes a body not well-formed XML: its tags were read with their
    entities left ("R&amp;D") and a rule on tags for "R&D" missed. Tags are in no
    fingerprint: the feed turning not well-formed alerts nothing for the entries it had."""
    old = [entry(1, tags=["R&D"]), entry(2, tags=["Sport"])]
    feed_server.set("/t.xml", rss(old))
    cfg = tmp_path / "feedwatch.toml"
    feeds = f'[[feeds]]\nname = "t"\nurl = "{feed_server.url("/t.xml")}"\nmatch = ["rd"]\n'
    rules = '[rules.rd]\nany = ["R&D", "Science & Tech"]\nfields = ["tags"]\n'
    cfg.write_text(jsonl_config(tmp_path, rules + feeds))
    assert fw(cfg, "check").returncode == 0
    new = [*old, entry(3, tags=["Science & Tech"]), entry(4, tags=["Sport"])]
    feed_server.set("/t.xml", rss(new).replace(b"Summary of entry 4.", b"Summary&nbsp;4."))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    (a,) = alerts(tmp_path)
    assert a["entry"]["title"] == "Entry 3"
    assert a["entry"]["tags"] == ["Science & Tech"]
    assert a["matched"] == [{"rule": "rd", "terms": ["Science & Tech"]}]


def test_check_prints_no_c1_control_of_a_feed_to_the_terminal(tmp_path, feed_server):  # noqa: F811
    """C1 controls (CSI U+009B, OSC U+009D, ST U+009C) are escape sequences to a terminal:
    `check`'s alert lines show them escaped (\\x9b), as `alerts` and `preview` do; the
    JSON payload keeps the feed's text."""
    title = "Title \u009b2J\u009d0;PWNED\u009c end"
    body = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "F",
            "items": [{"id": "1", "title": title, "url": "https://example.org/1"}],
        }
    )
    feed_server.set("/j", body, content_type="application/feed+json")
    cfg = tmp_path / "feedwatch.toml"
    feeds = f'[[feeds]]\nname = "j\u009b31m"\nurl = "{feed_server.url("/j")}"\n'
    cfg.write_text(jsonl_config(tmp_path, feeds, 'first_poll = "alert"'))
    for args in (["check", "--dry-run"], ["check", "--dry-run", "--json"], ["check"]):
        r = fw(cfg, *args)
        assert r.returncode == 0, r.stderr
        if "--json" in args:
            assert json.loads(r.stdout)["entry"]["title"] == title
            continue
        (line,) = r.stdout.splitlines()
        assert "Title \\x9b2J\\x9d0;PWNED\\x9c end" in line and "j\\x9b31m:" in line, line
        assert not any("\x80" <= ch <= "\x9f" for ch in r.stdout), line


def test_ids_with_an_ampersand_alert_nothing_when_the_feed_stops_being_well_formed(
    tmp_path,
    feed_server,  # noqa: F811
):
    """One ``&nbsp;`` makes a body not well-formed XML: its ids were read with their
    entities left in (``id=1&amp;cat=2``), another entry's id than the well-formed
    body's, so each such entry alerted as new whenever the feed went from one to the
    other. Entries without a link: nothing else tells them for the same."""
    ids = ["http://example.com/item?id=1&cat=2", "tag:x,2024:a&b<c>"]
    old = [entry(n, entry_id=i, link=None) for n, i in enumerate(ids)]
    well = rss(old)
    lenient = well.replace(b"Summary of entry 1.", b"Summary of&nbsp;entry 1.")
    feed_server.set("/amp.xml", well)
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        jsonl_config(tmp_path, f'[[feeds]]\nname = "t"\nurl = "{feed_server.url("/amp.xml")}"\n')
    )
    for body in (well, lenient, well):
        feed_server.set("/amp.xml", body)
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        assert alerts(tmp_path) == []
    more = rss([*old, entry(2, entry_id="a&b", link=None)])
    feed_server.set("/amp.xml", more.replace(b"Summary of entry 1.", b"Summary of&nbsp;entry 1."))
    assert fw(cfg, "check").returncode == 0
    assert [(a["kind"], a["entry"]["id"]) for a in alerts(tmp_path)] == [("new", "a&b")]


def test_guid_churn_and_returning_entry_do_not_alert(setup):
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    # the entry vanishes...
    srv.set("/news.xml", rss([news[0]]))
    assert fw(cfg, "check").returncode == 0
    # ...and comes back under a new guid, same link and text
    srv.set("/news.xml", rss([news[0], replace(news[1], entry_id="tag:new-guid")]))
    assert fw(cfg, "check").returncode == 0
    assert alerts(tmp) == []


def test_entries_without_guid_or_link(tmp_path, feed_server):  # noqa: F811
    es = [entry(i, entry_id=None, link=None, title=f"Hypersonic {i}") for i in range(3)]
    feed_server.set("/news.xml", rss(es))
    feed_server.set("/all.xml", rss([entry("x")]))
    cfg = write_config(tmp_path, feed_server)
    assert fw(cfg, "check").returncode == 0
    feed_server.set(
        "/news.xml", rss([*es, entry(9, entry_id=None, link=None, title="Hypersonic 9")])
    )
    assert fw(cfg, "check").returncode == 0
    assert [a["entry"]["title"] for a in alerts(tmp_path)] == ["Hypersonic 9"]
    assert alerts(tmp_path)[0]["entry"]["id"] is None


def test_broken_feed_beside_a_good_one(setup):
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    srv.set("/news.xml", b"<html><body>We moved!</body></html>", content_type="text/html")
    srv.set(
        "/all.xml", rss([entry("a1", title="Anything at all"), entry("a2", title="Still here")])
    )
    r = fw(cfg, "check")
    assert r.returncode == 1
    assert "news" in r.stderr and "not a feed" in r.stderr
    assert [a["entry"]["title"] for a in alerts(tmp)] == ["Still here"]
    # the broken poll removed nothing: when the feed is back, nothing is new
    srv.set("/news.xml", rss(news))
    assert fw(cfg, "check").returncode == 0
    assert len(alerts(tmp)) == 1


def test_a_home_page_for_a_feed_url_names_the_feeds_it_advertises(setup):
    """The commonest first mistake: the site's address instead of its feed's."""
    tmp, srv, cfg, news = setup
    page = (
        '<!DOCTYPE html><html><head><title>News</title><link rel="alternate"'
        ' type="application/rss+xml" title="All \x1b[31mnews" href="/news.xml">'
        '<link rel="alternate" type="application/atom+xml" href="atom.xml"></head>'
        "<body>Welcome</body></html>"
    )
    srv.set("/home/", page, content_type="text/html; charset=utf-8")
    srv.set("/login", "<html><body><form>Password</form></body></html>", content_type=None)
    home = srv.url("/home/").replace("http://", "http://me:s3cret@")
    text = cfg.read_text()
    cfg.write_text(
        text.replace(srv.url("/news.xml"), home).replace(srv.url("/all.xml"), srv.url("/login"))
    )
    r = fw(cfg, "check")
    assert r.returncode == 1
    status = json.loads(fw(cfg, "status", "--json").stdout)
    errors = {f["name"]: f["last_error"] for f in status["feeds"]}
    host = srv.url("/").removeprefix("http://").rstrip("/")
    assert errors["news"] == (
        "not a feed but an HTML page (text/html); it advertises 2 feeds:"
        f' http://***@{host}/news.xml ("All  [31mnews"), http://***@{host}/home/atom.xml:'
        " set the feed's url to one of them"
    )
    assert errors["everything"].startswith(
        "not a feed but an HTML page (no content type) that advertises no feed: a login"
    )
    assert "s3cret" not in r.stderr + r.stdout and "\x1b" not in r.stderr


def test_duplicates_skip_sends_a_story_in_two_feeds_once_per_sink(tmp_path, feed_server):  # noqa: F811
    """Section feeds of one site carry the same article (its link, tracking apart): with
    duplicates = "skip" each sink gets it once, new and updated alike; a sink only the
    second feed goes to still gets it; without the setting both feeds alert."""
    story = dict(title="Shared story", summary="Same text.", entry_id=None)

    def section(name: str, *, edited: bool = False) -> bytes:
        extra = {"summary": "Same text, corrected.", "updated": T0 + timedelta(hours=5)}
        shared = entry(
            f"{name}-1",
            link=f"https://news.example/2026/shared?utm_source={name}",
            **{**story, **(extra if edited else {})},  # type: ignore[arg-type]
        )
        return rss([shared, entry(f"{name}-only", title=f"Only in {name}")], title=name)

    for name in ("world", "europe", "asia"):
        feed_server.set(f"/{name}.xml", section(name))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp_path}/s.db"
first_poll = "alert"
duplicates = "skip"
log_format = "json"
[sinks.mail]
type = "jsonl"
path = "{tmp_path}/mail.jsonl"
[sinks.chat]
type = "jsonl"
path = "{tmp_path}/chat.jsonl"
"""
        + "".join(
            f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(f"/{name}.xml")}"\n{more}\n'
            for name, more in (
                ("world", 'sinks = ["mail"]'),
                ("europe", 'sinks = ["mail", "chat"]'),
                ("asia", 'sinks = ["mail"]\nduplicates = "alert"'),
            )
        )
    )

    def got(sink: str) -> list[tuple[str, str, str]]:
        path = tmp_path / f"{sink}.jsonl"
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        return sorted((a["feed"]["name"], a["kind"], a["entry"]["title"]) for a in lines)

    r = fw(cfg, "check", "--feed", "world")
    assert r.returncode == 0, r.stderr
    predicted = fw(cfg, "explain", "europe", "Shared").stdout  # before europe's poll
    assert "the next poll alerts it as 'new' (id " in predicted and ") to: chat\n" in predicted
    assert 'already went to mail (duplicates = "skip"): not sent there again' in predicted
    r = fw(cfg, "check", "--feed", "europe", "--feed", "asia")
    assert r.returncode == 0, r.stderr
    assert got("mail") == [
        ("asia", "new", "Only in asia"),
        ("asia", "new", "Shared story"),  # asia keeps duplicates = "alert"
        ("europe", "new", "Only in europe"),
        ("world", "new", "Only in world"),
        ("world", "new", "Shared story"),
    ]
    assert got("chat") == [("europe", "new", "Only in europe"), ("europe", "new", "Shared story")]
    lines = r.stdout.splitlines()
    assert any(x.endswith("new europe: Shared story -> chat") for x in lines), r.stdout
    assert any(x.endswith("new europe: Only in europe -> mail, chat") for x in lines)
    explained = fw(cfg, "explain", "europe", "Shared").stdout
    assert "mail: not sent, a duplicate: world's alert " in explained
    assert 'went there first (duplicates = "skip")' in explained

    # the story is corrected in every section: one update per sink again
    for name in ("world", "europe", "asia"):
        feed_server.set(f"/{name}.xml", section(name, edited=True))
    dry = fw(cfg, "check", "--dry-run", "--feed", "europe")
    assert dry.stdout.splitlines()[0].endswith("updated europe: Shared story -> mail, chat")
    assert fw(cfg, "check", "--feed", "europe").returncode == 0
    dry = fw(cfg, "check", "--dry-run", "--feed", "world")
    assert dry.stdout == "", dry.stdout  # mail has it already: nothing would be sent
    predicted = fw(cfg, "explain", "world", "Shared").stdout
    assert "and sends it nowhere" in predicted and "already went to mail" in predicted
    assert fw(cfg, "check").returncode == 0
    updates = [x for x in got("mail") + got("chat") if x[1] == "updated"]
    assert updates == [("asia", "updated", "Shared story"), ("europe", "updated", "Shared story"),
                       ("europe", "updated", "Shared story")]  # fmt: skip
    # world removed from the config: its name, as the state keys it, is no longer known
    # to hold no ${VAR} value, so the alert that went first is no longer named by it
    text = cfg.read_text()
    start = text.index('[[feeds]]\nname = "world"')
    cfg.write_text(text[:start] + text[text.index("[[feeds]]", start + 1) :])
    explained = fw(cfg, "explain", "europe", "Shared").stdout
    assert "mail: not sent, a duplicate: a removed feed's alert " in explained, explained


def test_duplicates_skip_sends_a_story_with_soft_hyphens_in_one_feed_once(
    tmp_path,
    feed_server,  # noqa: F811
):
    """Two feeds carry one story; one of them runs a hyphenation pass that writes soft
    hyphens into its text, its link's too (``Hyper&shy;schall``), which no reader sees.
    With duplicates = "skip" the sink gets it once, new and corrected alike. Before,
    the hyphenated copy's link and text made other keys: two alerts each time."""
    shy = "\u00ad"
    link = "https://news.example/2026/hyperschall-rakete?utm_source={}"

    def story(name: str, hyphens: str, *, corrected: bool = False) -> bytes:
        text = "Die Bundeswehr hat eine Hyperschallrakete getestet."
        if corrected:
            text = text.replace("getestet", "erfolgreich getestet")
        shared = entry(
            f"{name}-1",
            title="Neue Hyperschallrakete getestet".replace("schall", hyphens + "schall"),
            summary=text.replace("Bundes", "Bundes" + hyphens),
            link=link.format(name).replace("schall", hyphens + "schall"),
            updated=T0 + timedelta(hours=5) if corrected else None,
        )
        return rss([shared], title=name)

    feed_server.set("/plain.xml", story("plain", ""))
    feed_server.set("/german.xml", story("german", shy))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        jsonl_config(
            tmp_path,
            "".join(
                f'[[feeds]]\nname = "{n}"\nurl = "{feed_server.url(f"/{n}.xml")}"\n'
                for n in ("plain", "german")
            ),
            'first_poll = "alert"\nduplicates = "skip"',
        )
    )

    def sent() -> list[tuple[str, str]]:
        return [(a["feed"]["name"], a["kind"]) for a in alerts(tmp_path)]

    r = fw(cfg, "check", "--feed", "plain")
    assert r.returncode == 0, r.stderr
    r = fw(cfg, "check", "--feed", "german")
    assert r.returncode == 0, r.stderr
    assert sent() == [("plain", "new")]
    explained = fw(cfg, "explain", "german", "Hyper").stdout
    assert "log: not sent, a duplicate: plain's alert " in explained, explained

    # the story is corrected in both: one update
    feed_server.set("/plain.xml", story("plain", "", corrected=True))
    feed_server.set("/german.xml", story("german", shy, corrected=True))
    r = fw(cfg, "check", "--feed", "german")
    assert r.returncode == 0, r.stderr
    r = fw(cfg, "check", "--feed", "plain")
    assert r.returncode == 0, r.stderr
    assert sent() == [("plain", "new"), ("german", "updated")]
    (update,) = alerts(tmp_path)[1:]
    assert shy in update["entry"]["title"]  # sent as the feed wrote it


def test_http_errors_and_empty_body_are_errors(setup):
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    srv.set("/news.xml", b"", status=200)
    r = fw(cfg, "check", "--feed", "news")
    assert r.returncode == 1 and "empty body" in r.stderr
    srv.set("/news.xml", b"oops", status=500)
    r = fw(cfg, "check", "--feed", "news")
    assert r.returncode == 1 and "500" in r.stderr


def test_dry_run_json_prints_and_changes_nothing(setup):
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    db = tmp / "state.db"
    srv.set("/news.xml", rss([*news, entry(5, title="Missiles over Kyiv")]))
    before = sqlite3.connect(db).execute("select count(*) from entries").fetchone()
    r = fw(cfg, "check", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    dry = json.loads(line)
    assert dry["entry"]["title"] == "Missiles over Kyiv"
    after = sqlite3.connect(db).execute("select count(*) from entries").fetchone()
    assert before == after
    assert alerts(tmp) == []
    # a real run gives the alert the same id
    r = fw(cfg, "check", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout.splitlines()[0])["id"] == dry["id"]
    assert alerts(tmp)[0]["id"] == dry["id"]


def test_dry_run_leaves_out_the_alerts_a_real_run_would_not_send_again(setup):
    """`forget` makes the next poll see every entry afresh under `first_poll =
    "alert"`, with the same ids as before: recorded, so a real run sends none of them,
    and the dry run must not promise them."""
    tmp, srv, cfg, news = setup
    cfg.write_text(cfg.read_text().replace('jitter = "0s"', 'jitter = "0s"\nfirst_poll = "alert"'))
    assert fw(cfg, "check").returncode == 0
    sent = len(alerts(tmp))
    assert sent == 2  # the missile story in "news", the one entry of "everything"
    assert fw(cfg, "forget", "everything").returncode == 0
    dry = fw(cfg, "check", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    real = fw(cfg, "check", "--json")
    assert real.returncode == 0, real.stderr
    assert dry.stdout == real.stdout == ""
    assert len(alerts(tmp)) == sent


def test_forget_says_what_comes_next_for_a_feed_in_or_out_of_the_config(setup):
    """`forget` of a feed removed from the config said "its next poll records a new
    baseline": it has no next poll."""
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    r = fw(cfg, "forget", "news")
    assert r.returncode == 0 and r.stdout == "forgot news: its next poll records a new baseline\n"
    text = cfg.read_text()
    cfg.write_text(text[: text.index('[[feeds]]\nname = "everything"')])  # removed
    r = fw(cfg, "forget", "everything")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "forgot everything: it is not in the config, so nothing polls it; added back, its"
        " first poll records a new baseline\n"
    )
    r = fw(cfg, "forget", "nosuch")
    assert r.returncode == 2 and "unknown feed 'nosuch'" in r.stderr


def test_dry_run_without_state_creates_nothing(setup):
    tmp, srv, cfg, news = setup
    r = fw(cfg, "check", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not (tmp / "state.db").exists()
    assert not (tmp / "state.db.parse-cache").exists()


def test_unknown_feed_is_usage_error_and_writes_nothing(setup):
    tmp, srv, cfg, news = setup
    r = fw(cfg, "check", "--feed", "nope")
    assert r.returncode == 2
    assert "nope" in r.stderr
    assert not (tmp / "state.db").exists()
    assert srv.count("/news.xml") == 0


def test_invalid_config_exit_2_names_key_and_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[feedwatch]\ninterval = "15 minutes"\n\n[[feeds]]\nurl = "https://example.org/feed"\nkeywrods = ["x"]\n'
    )
    r = fw(cfg, "validate")
    assert r.returncode == 2
    assert "interval" in r.stderr and ":2:" in r.stderr
    assert "keywrods" in r.stderr and "keywords" in r.stderr
    r = fw(cfg, "check")
    assert r.returncode == 2
    assert not (tmp_path / "state.db").exists()


def test_validate_ok(setup):
    tmp, srv, cfg, news = setup
    r = fw(cfg, "validate")
    assert r.returncode == 0
    assert r.stdout.strip() == "ok: 2 feeds, 1 sinks, 1 rules"


def test_validate_warns_of_sinks_that_cannot_work_on_this_machine(tmp_path):
    """Valid, so exit 0, but a command whose program is not there has its every alert
    dead at once: say so before the first alert."""
    script = tmp_path / "notify.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\n")
    script.chmod(0o644)  # not executable
    sinks = {  # name: (type, the key that may point nowhere, its value)
        "gone": ("command", "argv", ["/nonexistent/notify-send", "x"]),
        "nopath": ("command", "argv", ["no-such-notifier-here"]),
        "noexec": ("command", "argv", [str(script)]),
        "fine": ("command", "argv", ["cat"]),
        "log": ("jsonl", "path", f"{tmp_path}/missing/alerts.jsonl"),
        "out": ("jsonl", "path", f"{tmp_path}/alerts.jsonl"),
        "dir": ("jsonl", "path", str(tmp_path)),
    }
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\n'
        + "".join(
            f'[sinks.{name}]\ntype = "{kind}"\n{key} = {json.dumps(value)}\n'
            for name, (kind, key, value) in sinks.items()
        )
        + '[[feeds]]\nurl = "https://example.org/feed"\n'
    )
    r = fw(cfg, "validate")
    assert r.returncode == 0 and r.stdout.strip() == "ok: 1 feeds, 7 sinks, 0 rules"
    assert r.stderr.splitlines() == [
        "warning: sink gone: program /nonexistent/notify-send does not exist",
        f"warning: sink nopath: program 'no-such-notifier-here' is not on PATH ({os.environ['PATH']})",
        f"warning: sink noexec: program {script} is not executable",
        f"warning: sink log: directory {tmp_path}/missing of {tmp_path}/missing/alerts.jsonl"
        " does not exist",
        f"warning: sink dir: path {tmp_path} is a directory, not a file",
    ]


def test_validate_warns_of_feeds_that_poll_one_url(tmp_path):
    """An OPML import over a hand-written config: the same feed twice alerted every
    story twice. validate says so (a warning: two feeds of one URL may differ in rules
    or sinks on purpose, and duplicates = "skip" on both says that)."""
    cfg = tmp_path / "c.toml"
    feeds = [
        ("blog", "https://blog.example.org/feed.xml", ""),
        ("blog-opml", "http://Blog.example.org/feed.xml?utm_source=opml", ""),
        ("quiet", "https://blog.example.org/feed.xml", "enabled = false"),
        ("world", "https://news.example.org/world", 'duplicates = "skip"'),
        ("world-2", "https://news.example.org/world", 'duplicates = "skip"'),
        ("europe", "https://news.example.org/europe", ""),
    ]
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\n[sinks.log]\ntype = "jsonl"\n'
        f'path = "{tmp_path}/a.jsonl"\n'
        + "".join(f'[[feeds]]\nname = "{n}"\nurl = "{u}"\n{x}\n' for n, u, x in feeds)
    )
    r = fw(cfg, "validate")
    assert r.returncode == 0 and r.stdout.strip() == "ok: 6 feeds, 1 sinks, 0 rules"
    assert r.stderr.splitlines() == [
        'warning: feeds "blog" and "blog-opml" poll the same URL'
        " (http://Blog.example.org/feed.xml?utm_source=opml): each alerts every story it"
        ' carries; remove one, or set duplicates = "skip" on both if they differ on purpose'
    ]


def _validate_feeds(tmp_path: Path, extra: str, feeds: list[tuple[str, str]]):
    """`validate` on a config of ``feeds`` (name, extra lines), a jsonl sink and
    ``extra`` after the [feedwatch] table's state."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\n{extra}'
        f'[sinks.log]\ntype = "jsonl"\npath = "{tmp_path}/a.jsonl"\n'
        + "".join(
            f'[[feeds]]\nname = "{n}"\nurl = "https://example.org/{n}"\n{x}\n' for n, x in feeds
        )
    )
    return fw(cfg, "validate")


def test_validate_warns_of_a_jitter_longer_than_the_interval(tmp_path):
    """A global jitter = "5s" over a feed at interval = "2s" put half its polls 1 s
    apart, silently. It is cut to the interval, and validate names the feed (a warning:
    a global jitter the other feeds need is legitimate)."""
    feeds = [
        ("fast", 'interval = "2s"'),
        ("slow", 'interval = "1m"'),
        ("own", 'interval = "2s"\njitter = "50%"'),
        ("off", 'interval = "2s"\nenabled = false'),
    ]
    r = _validate_feeds(tmp_path, 'jitter = "5s"\n', feeds)
    assert r.returncode == 0 and r.stdout.strip() == "ok: 4 feeds, 1 sinks, 0 rules"
    # the feed's own interval made it: named at that key's line
    line = _line_of(tmp_path / "c.toml", 'interval = "2s"')
    assert r.stderr.splitlines() == [
        f'warning: {tmp_path / "c.toml"}:{line}: feeds[0].interval: feed "fast": its interval'
        " 2s is shorter than the jitter 5s it takes from [feedwatch]; the jitter is cut to"
        " the interval (set a shorter jitter, or a percentage, on the feed or in [feedwatch])"
    ]


def test_validate_shows_a_feed_name_s_control_characters_escaped(tmp_path):
    """A feed name holding a bidi override or a C1 control (an OPML title imported as a
    name) reached the terminal raw in `validate`'s warnings: "TXT.exe" shown backwards,
    a CSI read as the start of an escape sequence. They are written as `status` and
    `check` write them (\\u202e, \\x9b), the rest of the line as it was."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\njitter = "5s"\n'
        f'[sinks.log]\ntype = "jsonl"\npath = "{tmp_path}/a.jsonl"\n'
        '[[feeds]]\nname = "evil\\u202eTXT.exe"\nurl = "https://example.org/f"\n'
        'interval = "2s"\n'
        '[[feeds]]\nname = "bad\\u009b31m\\u2028x"\nurl = "https://example.org/f"\n',
        encoding="utf-8",
    )
    r = fw(cfg, "validate", env={"PYTHONIOENCODING": "utf-8"})
    assert r.returncode == 0, r.stderr
    acting = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")
    assert not acting.search(r.stderr), repr(r.stderr)
    warned = r.stderr.splitlines()
    assert len(warned) == 2, r.stderr
    assert warned[0].startswith('warning: feeds "evil\\u202eTXT.exe" and "bad\\x9b31m\\u2028x"')
    assert 'feed "evil\\u202eTXT.exe": its interval 2s is shorter than the jitter' in warned[1]


def _line_of(path: Path, text: str, after: str = "") -> int:
    """The 1-based number of the first line ``text`` after the line ``after``."""
    lines = path.read_text().splitlines()
    start = lines.index(after) if after else 0
    return lines.index(text, start) + 1


def test_a_global_jitter_over_the_global_interval_is_one_warning_at_its_line(tmp_path):
    """jitter = "2m" with interval = "1m" in [feedwatch] gave one warning per feed, each
    without FILE:LINE and telling to edit a feed the user never touched: one warning
    now, at [feedwatch]'s jitter, naming the first few feeds and the count. A feed that
    sets its own jitter is warned at that key."""
    feeds = [(f"f{i:02}", "") for i in range(50)] + [("own", 'jitter = "90s"')]
    r = _validate_feeds(tmp_path, 'interval = "1m"\njitter = "2m"\n', feeds)
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "c.toml"
    glob, own = _line_of(cfg, 'jitter = "2m"'), _line_of(cfg, 'jitter = "90s"')
    assert r.stderr.splitlines() == [
        f"warning: {cfg}:{glob}: feedwatch.jitter: jitter 2m is"
        ' longer than the interval 1m of 50 feeds ("f00", "f01", "f02" and 47 more); it is cut'
        ' to the interval for them (set a shorter jitter, or a percentage such as "10%", in'
        " [feedwatch], or one on those feeds)",
        f'warning: {cfg}:{own}: feeds[50].jitter: feed "own":'
        " its jitter 1m30s is longer than its interval 1m; it is cut to the interval (set a"
        " shorter jitter, or a percentage, on the feed)",
    ]
    few = _validate_feeds(tmp_path, 'interval = "1m"\njitter = "2m"\n', [("a", ""), ("b", "")])
    assert few.stderr.splitlines() == [
        f"warning: {cfg}:{glob}: feedwatch.jitter: jitter 2m is"
        ' longer than the interval 1m of feeds "a" and "b"; it is cut to the interval for them'
        ' (set a shorter jitter, or a percentage such as "10%", in [feedwatch], or one on'
        " those feeds)"
    ]


def test_validate_warns_of_feeds_whose_rules_do_not_do_what_was_meant(tmp_path):
    """Two configs validate accepted silently: `exclude` without `keywords` beside
    `match` rules (a rule with only `not`, which every entry without the word matches,
    so the feed alerts on nearly everything, the match rules aside), and notify_on = []
    (the feed never alerts a new or updated entry). validate names the feed and key."""
    feeds = [
        ("both", 'match = ["missiles"]\nexclude = ["sport"]'),
        ("whole", 'match = ["missiles"]\nkeywords = ["Dnipro"]\nexclude = ["sport"]'),
        ("no-ads", 'exclude = ["sponsored"]'),  # a feed of every entry but the ads: meant
        ("silent", "notify_on = []"),
        ("new-only", 'notify_on = ["new"]'),
    ]
    r = _validate_feeds(tmp_path, '[rules.missiles]\nany = ["missile*"]\n', feeds)
    assert r.returncode == 0 and r.stdout.strip() == "ok: 5 feeds, 1 sinks, 2 rules"
    assert r.stderr.splitlines() == [
        'warning: feed "both": exclude without keywords is a rule of its own with only'
        " `not` terms: every entry without those words matches it, whatever the match"
        " rules say (put the words in the match rules' `not`, or add keywords)",
        'warning: feed "silent": notify_on = [] alerts no new or updated entry (only'
        ' flood and stale notices): add "new", "updated" or both',
    ]


def test_an_emptied_keywords_list_is_warned_of_by_validate_and_check(tmp_path, feed_server):  # noqa: F811
    """`keywords = []` or `match = []`: validate said ok, and check alerted every entry
    without a word. Both still work (an upgrade stops no config that ran), and both say
    so, naming the feed, the file and line, and how to mean it; validate names
    [feedwatch], not the first feed, for an ignore_text term of [feedwatch]."""
    feed_server.set("/a", rss([entry(1), entry(2)]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\nfirst_poll = "alert"\nlog_format = "json"\n'
        'ignore_text = ["/Points:\\r[0-9]+/"]\n'
        f'[sinks.log]\ntype = "jsonl"\npath = "{tmp_path}/alerts.jsonl"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\nkeywords = []\n'
        f'[[feeds]]\nname = "b"\nurl = "{feed_server.url("/a")}?b"\nmatch = []\n'
    )
    fix = (
        "; to say that on purpose, remove the key (a feed without match, keywords or"
        " exclude alerts on every entry)"
    )
    warnings = [
        f'{cfg}:12: feeds[0].keywords: feed "a": keywords = [] is no rule, so it alerts on'
        f" every entry{fix}",
        f'{cfg}:16: feeds[1].match: feed "b": match = [] is no rule, so it alerts on every'
        f" entry{fix}",
    ]
    r = fw(cfg, "validate")
    assert r.returncode == 0 and r.stdout == "ok: 2 feeds, 1 sinks, 0 rules\n"
    assert r.stderr.splitlines() == [
        "warning: ignore_text of [feedwatch]: term '/Points:\\r[0-9]+/' holds U+000D (a"
        ' carriage return: in TOML "\\r" is one; write \\\\r for a regex\'s \\r, or use a'
        " literal string '/Points:\\r[0-9]+/')",
        *(f"warning: {w}" for w in warnings),
    ]
    r = fw(cfg, "-q", "check", "--feed", "a")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    rule = [e["problem"] for e in events if e["event"] == "config.rule_warning"]
    assert rule[1:] == warnings
    assert sorted(a["entry"]["title"] for a in alerts(tmp_path)) == ["Entry 1", "Entry 2"]


def test_check_logs_the_warnings_a_daemon_start_logs(tmp_path, feed_server):  # noqa: F811
    """`check` logged only two of the warnings `validate` prints and `run` logs: a sink
    that cannot work here (its alerts would fail at every run) and two feeds polling
    one URL went unsaid. A jitter cut to the interval is the schedule's: not check's."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\nlog_format = "json"\n'
        f'[sinks.log]\ntype = "jsonl"\npath = "{tmp_path}/alerts.jsonl"\n'
        '[sinks.notify]\ntype = "command"\nargv = ["/nonexistent/notify-send"]\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\njitter = "1h"\n'
        'interval = "10m"\n'
        f'[[feeds]]\nname = "a2"\nurl = "{feed_server.url("/a")}"\n'
    )
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    said = {e["event"]: e for e in events if e["level"] == "warning"}
    assert said["sink.will_fail"]["problem"] == (
        "sink notify: program /nonexistent/notify-send does not exist"
    )
    assert said["config.same_url"]["problem"].startswith('feeds "a" and "a2" poll the same URL')
    assert "config.jitter_cut" not in said


def test_jsonl_stdout_with_json_is_usage_error(tmp_path, feed_server):  # noqa: F811
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\n[sinks.out]\ntype = "jsonl"\npath = "-"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\n'
    )
    r = fw(cfg, "check", "--json")
    assert r.returncode == 2 and "--json" in r.stderr


def test_jsonl_stdout_sink_prints_alerts(tmp_path, feed_server):  # noqa: F811
    feed_server.set("/a", rss([entry(1)]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\nfirst_poll = "alert"\n[sinks.out]\ntype = "jsonl"\npath = "-"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\n'
    )
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]  # only JSON: `check | jq` works
    assert [x["entry"]["title"] for x in lines] == ["Entry 1"]
    assert f"alert {lines[0]['id']} new a: Entry 1 -> out" in r.stderr.splitlines()
    feed_server.set("/a", rss([entry(1), entry(2)]))
    r = fw(cfg, "check", "--dry-run")  # the sink sends nothing: the lines are the output
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("would alert ") and "new a: Entry 2 -> out" in r.stdout


def test_atom_and_json_feed(tmp_path, feed_server):  # noqa: F811
    atom = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><id>urn:a</id><updated>2024-11-22T10:40:17Z</updated>
<entry><id>urn:a:1</id><title>One</title><link href="/one"/><updated>2024-11-22T10:40:17Z</updated><summary>s</summary></entry>
</feed>"""
    jf = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "items": [{"id": "1", "title": "Uno", "content_text": "x"}],
    }
    feed_server.set("/news.xml", atom, content_type="application/atom+xml")
    feed_server.set("/all.xml", json.dumps(jf), content_type="application/feed+json")
    cfg = write_config(tmp_path, feed_server)
    cfg.write_text(
        cfg.read_text()
        .replace('jitter = "0s"', 'jitter = "0s"\nfirst_poll = "alert"')
        .replace('match = ["missiles"]', "")
    )
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = {a["entry"]["title"]: a for a in alerts(tmp_path)}
    assert set(got) == {"One", "Uno"}
    assert got["One"]["entry"]["link"] == feed_server.url("/one")
    # atom update
    feed_server.set(
        "/news.xml",
        atom.replace(
            "<updated>2024-11-22T10:40:17Z</updated><summary>",
            "<updated>2024-11-22T15:56:45Z</updated><summary>",
        ),
        content_type="application/atom+xml",
    )
    jf["items"][0]["content_text"] = "y"
    feed_server.set("/all.xml", json.dumps(jf), content_type="application/feed+json")
    assert fw(cfg, "check").returncode == 0
    updates = [a for a in alerts(tmp_path) if a["kind"] == "updated"]
    assert {a["entry"]["title"] for a in updates} == {"One", "Uno"}


def test_check_on_sqlite_never_imports_psycopg() -> None:
    """psycopg costs ~70 ms of every start; only a postgresql:// state needs it."""
    code = (
        "import sys\n"
        "from feedwatch import cli, daemon, poll, fetch, deliver\n"
        "from feedwatch.store import open_store, is_postgres_url\n"
        "assert not is_postgres_url('state.db') and is_postgres_url('postgres://h/db')\n"
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_parse_cache_files_sit_by_the_state_and_go_with_forget_and_the_feed(setup):
    """One cache file per feed beside the state (feedwatch.parsecache); `forget` drops a
    feed's, a feed no longer configured loses its at the next run; the state holds none."""
    tmp, srv, cfg, news = setup
    assert fw(cfg, "check").returncode == 0
    cache = tmp / "state.db.parse-cache"
    assert len(os.listdir(cache)) == 2 and (cache.stat().st_mode & 0o777) == 0o700
    conn = sqlite3.connect(tmp / "state.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM parse_cache").fetchone() == (0,)
    finally:
        conn.close()
    r = fw(cfg, "forget", "news")
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(cache)) == 1
    # the feed comes back and is parsed (in full, as its cache is gone): a baseline
    srv.set("/news.xml", rss([*news, entry(3, title="Missile launch")]))
    assert fw(cfg, "check").returncode == 0
    assert alerts(tmp) == [] and len(os.listdir(cache)) == 2
    cfg.write_text(cfg.read_text().replace('name = "everything"', 'name = "renamed"'))
    srv.set("/all.xml", rss([entry("a1", title="Anything at all"), entry("a2", title="More")]))
    assert fw(cfg, "check").returncode == 0
    from feedwatch.parsecache import file_for

    names = {os.path.basename(file_for(str(cache), f)) for f in ("news", "renamed")}
    assert set(os.listdir(cache)) == names  # "everything"'s file went


# -- stdout that is not UTF-8, or gone ---------------------------------------------------

WORLD = "Hypersonic: ракета → удар ✓ 😀"


@pytest.fixture
def world(tmp_path, feed_server):  # noqa: F811
    """One feed whose entry's title cannot be written in ASCII or Latin-1."""
    feed_server.set("/news.xml", rss([entry(1, title=WORLD)]))
    feed_server.set("/all.xml", rss([]))
    cfg = write_config(tmp_path, feed_server, feed_extra='first_poll = "alert"')
    return tmp_path, cfg


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_stdout_that_cannot_encode_the_title_still_delivers(world, encoding):
    """A legacy locale's stdout (a cron job's LANG=en_US.ISO-8859-1): the first
    Cyrillic title stopped the check before its delivery, at every run."""
    tmp, cfg = world
    r = fw(cfg, "check", env={"PYTHONIOENCODING": encoding})
    assert r.returncode == 0, r.stderr
    assert [a["entry"]["title"] for a in alerts(tmp)] == [WORLD]
    (line,) = r.stdout.splitlines()
    assert line.endswith(
        " new news: " + WORLD.encode(encoding, "backslashreplace").decode() + " -> log"
    )
    logged = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    assert any(e["event"] == "alert.delivered" for e in logged)  # every log line is JSON


def test_json_lines_to_an_ascii_stdout_read_back_as_they_were(world):
    tmp, cfg = world
    r = fw(cfg, "check", "--dry-run", "--json", env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert line.isascii() and json.loads(line)["entry"]["title"] == WORLD
    r = fw(cfg, "status", "--json", env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["feeds"][0]["name"] == "news"
    assert fw(cfg, "check").returncode == 0
    for encoding in ("ascii", "latin-1"):
        r = fw(cfg, "alerts", "--json", env={"PYTHONIOENCODING": encoding})
        assert r.returncode == 0, r.stderr
        (line,) = r.stdout.splitlines()
        assert line.isascii() and json.loads(line)["alert"]["entry"]["title"] == WORLD


def test_json_lines_escape_u2028_as_the_sinks_do(tmp_path, feed_server):  # noqa: F811
    """`check --json` and `alerts --json` wrote U+2028/U+2029 raw, where every sink escapes
    them: a reader splitting lines as JavaScript or str.splitlines does got broken JSON.
    A `check --json` line is now the jsonl sink's line, byte for byte."""
    body = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "J",
            "items": [
                {
                    "id": "urn:a\u2028b",
                    "title": "t",
                    "url": "https://example.org/1",
                    "attachments": [
                        {"url": "https://example.org/a.mp3", "mime_type": "audio/mpeg\u2029x"}
                    ],
                }
            ],
        }
    )
    feed_server.set("/j", body, content_type="application/feed+json")
    cfg = tmp_path / "feedwatch.toml"
    feeds = f'[[feeds]]\nname = "j"\nurl = "{feed_server.url("/j")}"\n'
    cfg.write_text(jsonl_config(tmp_path, feeds, 'first_poll = "alert"'))
    utf8 = {"PYTHONIOENCODING": "utf-8"}
    dry = fw(cfg, "check", "--dry-run", "--json", env=utf8)
    r = fw(cfg, "check", "--json", env=utf8)
    assert r.returncode == dry.returncode == 0, r.stderr + dry.stderr
    assert r.stdout == (tmp_path / "alerts.jsonl").read_text(encoding="utf-8")
    for out in (dry.stdout, r.stdout):
        (line,) = out.splitlines()
        assert json.loads(line)["entry"]["id"] == "urn:a\u2028b"
    r = fw(cfg, "alerts", "--json", env=utf8)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert json.loads(line)["alert"]["entry"]["enclosures"][0]["type"] == "audio/mpeg\u2029x"


def check_into_a_gone_reader(cfg: Path, stderr) -> int:
    """`feedwatch check` whose stdout is a pipe whose reader left before the first line
    (``stderr=subprocess.STDOUT``: its stderr too); its exit status."""
    p = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "check"],
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    assert p.stdout is not None
    p.stdout.close()
    return p.wait(timeout=60)


def test_a_jsonl_sink_on_an_ascii_stdout_writes_json(world):
    """`path = "-"` with a stdout that cannot encode UTF-8 wrote "\\U0001f680" for an
    emoji: not JSON, while the delivery counted as sent."""
    tmp, cfg = world
    cfg.write_text(cfg.read_text().replace(f'path = "{tmp}/alerts.jsonl"', 'path = "-"'))
    r = fw(cfg, "check", env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("{")]
    assert line.isascii() and json.loads(line)["entry"]["title"] == WORLD


def test_a_closed_stdout_does_not_stop_the_delivery(world):
    """`feedwatch check | head -0`: the lines cannot be printed, the alerts are stored
    and go to their sinks (they waited for a check whose stdout worked)."""
    tmp, cfg = world
    with (tmp / "stderr.txt").open("w") as err:
        assert check_into_a_gone_reader(cfg, err) == 0
    stderr = (tmp / "stderr.txt").read_text()
    assert [a["entry"]["title"] for a in alerts(tmp)] == [WORLD]
    events = [json.loads(x)["event"] for x in stderr.splitlines() if x.startswith("{")]
    assert "check.stdout_closed" in events
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


def test_a_closed_stderr_does_not_stop_the_work(world):
    """`feedwatch check 2>&1 | head -0`, or a daemon whose journal stream broke: a log
    line that could not be written stopped what logged it (here the state's creation,
    at the first line), and nothing was polled or delivered."""
    tmp, cfg = world
    assert check_into_a_gone_reader(cfg, subprocess.STDOUT) == 0
    assert [a["entry"]["title"] for a in alerts(tmp)] == [WORLD]


def test_a_feed_without_ids_whose_links_change_at_every_fetch_alerts_once(tmp_path, feed_server):  # noqa: F811
    """Bing News search feeds: no guid, and links that carry a fresh tracking value at
    every fetch. Every story alerted again at every check; now only a new one does."""

    def body(fetch: int, titles: list[str]) -> bytes:
        return rss(
            [
                entry(
                    i,
                    title=t,
                    entry_id=None,
                    link=f"https://www.bing.com/news/apiclick.aspx?tid={fetch:04d}{i}&url=https%3a%2f%2fnews.example%2f{i}",
                )
                for i, t in enumerate(titles)
            ]
        )

    stories = ["Hypersonic test reported", "Missile defence talks", "Markets open"]
    feed_server.set("/news.xml", body(0, stories))
    feed_server.set("/all.xml", rss([]))
    cfg = write_config(tmp_path, feed_server)
    assert fw(cfg, "check").returncode == 0  # the baseline
    for fetch in (1, 2):
        feed_server.set("/news.xml", body(fetch, stories))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    feed_server.set("/news.xml", body(3, [*stories, "Hypersonic glide vehicle shown"]))
    assert fw(cfg, "check").returncode == 0
    assert [a["entry"]["title"] for a in alerts(tmp_path)] == ["Hypersonic glide vehicle shown"]


def test_a_secret_in_a_feed_url_is_masked_in_its_error_everywhere(tmp_path):
    """The host a ${VAR} filled in comes back in the fetch's error ("DNS lookup failed
    for host ..."): masked in check's error line, in the state, and in status."""
    cfg = tmp_path / "feedwatch.toml"
    feed = '[[feeds]]\nname = "tenant"\nurl = "https://${TENANT}.invalid/feed.xml"\n'
    cfg.write_text(jsonl_config(tmp_path, feed, 'timeout = "5s"'))
    env = {"TENANT": "acme-secret-tenant"}
    res = fw(cfg, "check", env=env)
    assert res.returncode == 1
    assert "error tenant:" in res.stderr
    shown = [
        res.stdout + res.stderr,
        fw(cfg, "status", env=env).stdout,
        fw(cfg, "status", "--json", env=env).stdout,
    ]
    with sqlite3.connect(tmp_path / "state.db") as db:
        (stored,) = db.execute("SELECT last_error FROM feeds WHERE name = 'tenant'").fetchone()
    assert stored and "***" in stored
    for text in [*shown, stored]:
        assert "acme-secret-tenant" not in text
    assert json.loads(shown[2])["feeds"][0]["last_error"] == stored


def test_a_capitalised_secret_in_a_feed_host_is_masked_lower_cased_too(tmp_path, feed_server):  # noqa: F811
    """A host comes back lower-cased (httpx's in a DNS error, a default feed name): a
    ${TENANT} of "AcmeCorpSecret" showed as "acmecorpsecret" in check, status,
    explain and an alert's feed.name. A default name is not renamed (the state's key)."""
    feed_server.set("/ok.xml", rss([entry(1)]))
    port = feed_server.url("/").split(":")[2].split("/")[0]
    feeds = (
        '[[feeds]]\nname = "tenant"\nurl = "https://${TENANT}.invalid/feed.xml"\n'
        '[[feeds]]\nurl = "https://${TENANT}.invalid/other"\n'
        f'[[feeds]]\nurl = "http://${{LOCAL}}:{port}/ok.xml"\n'
    )
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, feeds, 'timeout = "5s"\nfirst_poll = "alert"'))
    env = {"TENANT": "AcmeCorpSecret", "LOCAL": "LocalHost"}
    res = fw(cfg, "check", env=env)
    assert res.returncode == 1 and "error tenant: DNS lookup failed for host ***" in res.stderr
    (alert,) = alerts(tmp_path)
    assert alert["feed"]["name"] == f"***:{port}/ok.xml"
    shown = [
        res.stdout + res.stderr,
        json.dumps(alert),
        fw(cfg, "status", env=env).stdout,
        fw(cfg, "status", "--json", env=env).stdout,
        fw(cfg, "explain", "tenant", env=env).stdout,
        fw(cfg, "explain", "acmecorpsecret.invalid/other", env=env).stdout,
    ]
    for text in shown:
        assert "acmecorpsecret" not in text.lower() and "localhost" not in text.lower(), text
    with sqlite3.connect(tmp_path / "state.db") as db:
        names = {n for (n,) in db.execute("SELECT name FROM feeds")}
    assert names == {"tenant", "acmecorpsecret.invalid/other", f"localhost:{port}/ok.xml"}


def test_a_secret_with_a_capital_dotted_i_is_masked_lower_cased_too(tmp_path):
    """str.lower() makes İ (U+0130) an i and a combining dot, which re.IGNORECASE
    does not take for İ: a ${TENANT} of "İzmirHaber" in a host showed as
    "i̇zmirhaber" in check, the logs and status."""
    feeds = '[[feeds]]\nurl = "http://${TENANT}.invalid/feed"\n'
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, feeds, 'timeout = "5s"'), encoding="utf-8")
    env = {"TENANT": "İzmirHaber"}
    res = fw(cfg, "check", env=env)
    assert res.returncode == 1 and "DNS lookup failed for host ***.invalid" in res.stderr
    shown = [
        res.stdout + res.stderr,
        fw(cfg, "status", env=env).stdout,
        fw(cfg, "status", "--json", env=env).stdout,
        fw(cfg, "explain", "i̇zmirhaber.invalid/feed", "--no-fetch", env=env).stdout,
    ]
    for text in shown:
        assert "***.invalid/feed" in text and "zmirhaber" not in text.lower(), text


@pytest.mark.parametrize("command", [["alerts"], ["explain", "news"], ["status"]])
def test_a_read_only_command_into_a_closed_pipe_ends_quietly(world, command):
    """`feedwatch alerts | head -1`: a traceback and exit 1 when the reader left."""
    tmp, cfg = world
    assert fw(cfg, "check").returncode == 0
    p = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_editing_the_url_of_a_feed_with_relative_guids_alerts_nothing(tmp_path, feed_server):  # noqa: F811
    """``<guid>1</guid>`` (a permalink by default) was resolved against the feed's URL,
    so moving the feed (a 301 followed, as `status` advises) made every entry new."""
    items = "".join(
        f"<item><guid>{i}</guid><title>Status {i}</title><link>http://e.com/status</link>"
        f"<description>Update {i}</description></item>"
        for i in range(1, 5)
    )
    body = f'<rss version="2.0"><channel><title>S</title>{items}</channel></rss>'.encode()
    feed_server.set("/urledit.xml", body)
    feed_server.set("/v2/urledit.xml", body)
    cfg = tmp_path / "feedwatch.toml"
    text = jsonl_config(
        tmp_path, f'[[feeds]]\nname = "status"\nurl = "{feed_server.url("/urledit.xml")}"\n'
    )
    cfg.write_text(text)
    assert fw(cfg, "check").returncode == 0  # the baseline
    cfg.write_text(text.replace("/urledit.xml", "/v2/urledit.xml"))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    feed_server.set("/v2/urledit.xml", body.replace(b"Update 3", b"Update 3, corrected"))
    assert fw(cfg, "check").returncode == 0
    (got,) = alerts(tmp_path)
    assert (got["kind"], got["entry"]["id"], got["entry"]["title"]) == ("updated", "3", "Status 3")


def test_a_removed_feeds_url_is_not_shown_with_its_secret(tmp_path, feed_server):  # noqa: F811
    """The state holds a feed's URL with its ${VAR}s expanded; once the feed left the
    config, nothing told status or explain to mask them."""
    feed_server.set("/t.xml", rss([entry(1)]))
    feed = f'[[feeds]]\nname = "tok"\nurl = "{feed_server.url("/t.xml")}?token=${{TOK}}"\n'
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, feed))
    env = {"TOK": "ENVTOKVAL42"}
    assert fw(cfg, "check", env=env).returncode == 0
    cfg.write_text(jsonl_config(tmp_path, ""))
    st = fw(cfg, "status", "--json", env=env)
    (row,) = json.loads(st.stdout)["feeds"]
    assert (row["name"], row["state"], row["url"]) == ("tok", "removed", None)
    ex = fw(cfg, "explain", "tok", env=env)
    assert ex.returncode == 0, ex.stderr
    for out in (st.stdout, fw(cfg, "status", env=env).stdout, ex.stdout):
        assert "ENVTOKVAL42" not in out
    # an error a version before masked nothing stored: not shown once the feed is gone
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE feeds SET errors = 1, last_error = 'host ENVTOKVAL42.invalid'")
    st = fw(cfg, "status", "--json", env=env)
    assert json.loads(st.stdout)["feeds"][0]["last_error"] is None
    for out in (st.stdout, fw(cfg, "explain", "tok", env=env).stdout):
        assert "ENVTOKVAL42" not in out


def test_the_feeds_credentials_and_secrets_never_reach_its_entries_links(tmp_path, feed_server):  # noqa: F811
    """Relative links resolve against the fetch URL: its user-info went into every
    entry.link of the alerts (and the state), and an expanded ${VAR} of its path too."""
    body = (
        b'<rss version="2.0"><channel><title>S</title>'
        b"<item><guid>1</guid><title>One</title><link>/post/1</link></item>"
        b"<item><guid>2</guid><title>Two</title><link>rel2</link></item></channel></rss>"
    )
    feed_server.set("/PathTok3n99/good", body)
    feed_server.set("/plain/good", body)
    port = feed_server.port
    cfg = tmp_path / "feedwatch.toml"
    feeds = (
        f'[[feeds]]\nname = "cred"\nurl = "http://alice:S3cretPw@127.0.0.1:{port}/plain/good"\n'
        f'[[feeds]]\nname = "tok"\nurl = "http://127.0.0.1:{port}/${{FEED_TOKEN}}/good"\n'
        '[[feeds]]\nname = "hostvar"\nurl = "http://${FEEDHOST}/plain/good?lang=${LANG2}"\n'
    )
    cfg.write_text(jsonl_config(tmp_path, feeds, 'first_poll = "alert"'))
    env = {"FEED_TOKEN": "PathTok3n99", "FEEDHOST": f"127.0.0.1:{port}", "LANG2": "en"}
    r = fw(cfg, "check", "--json", env=env)
    assert r.returncode == 0, r.stderr
    links = {(a["feed"]["name"], a["entry"]["link"]) for a in alerts(tmp_path)}
    # ${FEEDHOST} is 127.0.0.1:PORT, the host of every feed here: an expanded value is
    # masked wherever a feed's URL holds it (SPEC 2), in the links resolved against it
    assert links == {
        ("cred", "http://***/post/1"),
        ("cred", "http://***/plain/rel2"),
        ("tok", "http://***/post/1"),
        ("tok", "http://***/***/rel2"),
        ("hostvar", "http://***/post/1"),
        ("hostvar", "http://***/plain/rel2"),
    }
    env.pop("FEEDHOST")
    cfg.write_text(cfg.read_text().replace("${FEEDHOST}", f"127.0.0.1:{port}"))
    (tmp_path / "state.db").unlink()
    (tmp_path / "alerts.jsonl").unlink()
    r = fw(cfg, "check", "--json", env=env)
    assert r.returncode == 0, r.stderr
    links = {(a["feed"]["name"], a["entry"]["link"]) for a in alerts(tmp_path)}
    assert links == {
        ("cred", f"http://127.0.0.1:{port}/post/1"),
        ("cred", f"http://127.0.0.1:{port}/plain/rel2"),
        ("tok", f"http://127.0.0.1:{port}/post/1"),
        ("tok", f"http://127.0.0.1:{port}/***/rel2"),
        # a secret of one feed's URL is no part of another's: not masked there
        ("hostvar", f"http://127.0.0.1:{port}/post/1"),
        ("hostvar", f"http://127.0.0.1:{port}/plain/rel2"),
    }
    assert "S3cretPw" not in r.stdout + r.stderr
    with sqlite3.connect(tmp_path / "state.db") as db:
        stored = [link for (link,) in db.execute("SELECT link FROM entries")]
    assert stored and not any("S3cretPw" in link or "alice" in link for link in stored)


def test_a_removed_feeds_name_keeps_its_expanded_value_masked(tmp_path, feed_server):  # noqa: F811
    """SPEC 2: a name written with a ${VAR} shows as `tenant ***` while its feed is in
    the config. Once the feed left it, the state still held it (until `retention`) by
    its expanded name, no longer known to hold a secret: `status` (text and --json),
    `explain`, `alerts` (text, --json, --feed), `forget`, the log line and a command
    sink's FEEDWATCH_FEED of an alert still delivered for it showed the value in clear,
    also once `retention` dropped its row and only its alerts were left."""
    secret = "AcmeSecret42"
    feed_server.set("/t.xml", rss([entry(1)]))
    feed_server.set("/k.xml", rss([entry(1)]))
    ok = tmp_path / "sink-ok"  # the command sink fails (a retry) until this file is there
    cmd = (
        '[sinks.cmd]\ntype = "command"\nargv = ["sh", "-c", "test -e '
        + str(ok)
        + ' && echo \\"$FEEDWATCH_FEED\\" >> '
        + str(tmp_path / "env.txt")
        + '"]\n\n'
    )
    keep = f'[[feeds]]\nname = "keep"\nurl = "{feed_server.url("/k.xml")}"\nsinks = ["log"]\n'
    tenant = (
        '[[feeds]]\nname = "tenant ${TENANT_ID}"\n'
        f'url = "{feed_server.url("/t.xml")}"\nsinks = ["cmd"]\n'
    )
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, cmd + keep + tenant, 'first_poll = "alert"'))
    env = {"TENANT_ID": secret}  # still set: only the config no longer names it
    first = fw(cfg, "check", env=env)
    assert first.returncode == 1 and "tenant ***" in first.stdout, first.stderr
    name = f"tenant {secret}"  # what a user types to name it
    seen: list[str] = [first.stdout + first.stderr]

    def run(*args: str, code: int = 0) -> str:
        r = fw(cfg, *args, env=env)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        seen.append(r.stdout + r.stderr)
        return r.stdout

    # in the config: the names an unknown one lists, and `forget`'s word, were not masked
    run("explain", "nosuch", code=2)
    run("alerts", "--feed", "nosuch", code=2)
    assert "(configured: keep, tenant ***)" in seen[-1]
    assert run("forget", name) == "forgot tenant ***: its next poll records a new baseline\n"
    assert fw(cfg, "check", env=env).returncode == 1  # its baseline again (no alert)
    cfg.write_text(jsonl_config(tmp_path, cmd + keep, 'first_poll = "alert"'))  # removed

    rows = json.loads(run("status", "--json"))["feeds"]
    assert [(f["name"], f["state"]) for f in rows] == [("keep", "ok"), ("tenant ***", "removed")]
    assert "tenant ***  removed" in run("status")
    assert run("explain", name).startswith("Feed tenant ***\n")
    (listed,) = [json.loads(x) for x in run("alerts", "--json", "--feed", name).splitlines()]
    assert listed["feed"] == listed["alert"]["feed"]["name"] == "tenant ***"
    assert "tenant ***: " in run("alerts", "--feed", name)
    assert "tenant ***: " in run("alerts")
    run("redeliver", "--feed", name)
    assert run("forget", name).startswith("forgot tenant ***: it is not in the config")
    # `retention` later its row goes; its alert, still pending, stays and still shows it
    cfg.write_text(jsonl_config(tmp_path, cmd + keep, 'retention = "1h"'))
    age_state(tmp_path / "state.db", 7200)
    run("check", code=1)  # (the command sink fails again)
    assert "state.removed_feeds_dropped" in seen[-1]
    assert [f["name"] for f in json.loads(run("status", "--json"))["feeds"]] == ["keep"]
    assert run("explain", name).startswith("Feed tenant ***\n  state: dropped")
    (listed,) = [json.loads(x) for x in run("alerts", "--json", "--feed", name).splitlines()]
    assert listed["feed"] == "tenant ***"
    # and goes out: its log line, the program's environment
    ok.touch()
    age_state(tmp_path / "state.db", 3600)  # its retry is due
    run("check")
    assert (tmp_path / "env.txt").read_text() == "tenant ***\n"
    assert '"feed": "tenant ***", "kind": "new", "event": "alert.delivered"' in seen[-1]
    for text in seen:
        assert secret not in text and secret.lower() not in text, text


def test_a_feed_removed_with_no_name_as_shown_stored_shows_masked(tmp_path, feed_server):  # noqa: F811
    """A feed last polled before the state kept the name as shown (schema 6), then
    removed: what in its stored name was a ${VAR} value is not known, so `status` and
    `explain` show none of it (docs/configuration.md)."""
    feed_server.set("/n.xml", rss([entry(1)]))
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        jsonl_config(tmp_path, f'[[feeds]]\nname = "news"\nurl = "{feed_server.url("/n.xml")}"\n')
    )
    assert fw(cfg, "check").returncode == 0
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT masked_name FROM feeds").fetchall() == [("news",)]
        db.execute("UPDATE feeds SET masked_name = NULL")  # as a poll before schema 6 left it
    cfg.write_text(jsonl_config(tmp_path, ""))
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert (row["name"], row["state"], row["entries"]) == ("***", "removed", 1)
    assert fw(cfg, "explain", "news").stdout.startswith("Feed ***\n")
    assert fw(cfg, "forget", "news").stdout.startswith("forgot ***: it is not in the config")


def test_no_expanded_value_reaches_an_alert_or_status(tmp_path, feed_server):  # noqa: F811
    """SPEC 2: expanded ${VAR} values show as *** in alerts and status: a feed's name,
    tags and keywords written with one, and its URL's path and query secrets in every
    link resolved against it (an edited link's `changes`, enclosures, "#item" links)."""

    def body(link: str) -> bytes:
        return (
            '<rss version="2.0"><channel><title>S</title>'
            f"<item><guid>1</guid><title>Bluebird lands</title><link>{link}</link>"
            '<enclosure url="ep1.mp3" type="audio/mpeg" length="9"/></item>'
            "<item><guid>2</guid><title>Bluebird again</title><link>#two</link></item>"
            "</channel></rss>"
        ).encode()

    feed_server.set("/feed/PathTok3n99/rss", body("story-1"))
    cfg = tmp_path / "feedwatch.toml"
    url = f"http://127.0.0.1:{feed_server.port}/feed/${{TOK}}/rss?key=${{QTOK}}"
    feeds = (
        f'[[feeds]]\nname = "${{FEEDNAME}}"\nurl = "{url}"\ntags = ["${{TAG}}"]\n'
        'keywords = ["${KW}"]\n'
    )
    cfg.write_text(jsonl_config(tmp_path, feeds, 'first_poll = "alert"'))
    env = {
        "TOK": "PathTok3n99",
        "QTOK": "QueryTok77",
        "FEEDNAME": "intranet-watch",
        "TAG": "team-secret",
        "KW": "Bluebird",
    }
    secrets = ("PathTok3n99", "QueryTok77", "intranet-watch", "team-secret", '"Bluebird"')
    r = fw(cfg, "check", "--json", env=env)
    assert r.returncode == 0, r.stderr
    feed_server.set(  # the link renamed, and the text edited
        "/feed/PathTok3n99/rss",
        body("story-1-renamed").replace(b"Bluebird lands", b"Bluebird lands, late"),
    )
    r2 = fw(cfg, "check", "--json", env=env)
    assert r2.returncode == 0, r2.stderr
    sent = alerts(tmp_path)
    assert [a["kind"] for a in sent] == ["new", "new", "updated"]
    assert sent[2]["changes"]["link"]["new"].endswith("/feed/***/story-1-renamed")
    assert sent[0]["entry"]["enclosures"][0]["url"].endswith("/feed/***/ep1.mp3")
    assert sent[1]["entry"]["link"].endswith("?key=***#two")
    assert sent[0]["feed"]["name"] == "***" and sent[0]["feed"]["tags"] == ["***"]
    assert sent[0]["matched"] == [{"rule": "keywords", "terms": ["***"]}]
    # three entries more at once (flood_limit 1): the flood notice's message; and the
    # lines check prints, a command sink's environment, `alerts --json`
    more = "".join(
        f"<item><guid>{n}</guid><title>Bluebird {n}</title><link>s{n}</link></item>"
        for n in (3, 4, 5)
    ).encode()
    feed_server.set(
        "/feed/PathTok3n99/rss",
        body("story-1-renamed")
        .replace(b"Bluebird lands", b"Bluebird lands, late")
        .replace(b"</channel>", more + b"</channel>"),
    )
    text = cfg.read_text().replace(
        "[sinks.log]",
        "[sinks.cmd]\n"
        + (
            'type = "command"\nargv = ["sh", "-c", "echo \\"$FEEDWATCH_FEED\\" >> '
            + str(tmp_path / "env.txt")
            + '"]\n\n[sinks.log]'
        ),
    )
    cfg.write_text(text.replace('first_poll = "alert"', 'first_poll = "alert"\nflood_limit = 1'))
    r3 = fw(cfg, "check", env=env)
    assert r3.returncode == 0, r3.stderr
    (flood,) = alerts(tmp_path)[3:]
    assert flood["kind"] == "flood" and "'***'" in flood["message"], flood
    assert (tmp_path / "env.txt").read_text().split() == ["***"]
    status = fw(cfg, "status", env=env).stdout + fw(cfg, "status", "--json", env=env).stdout
    listed = fw(cfg, "alerts", "--json", env=env).stdout
    for text in (
        r.stdout,
        r2.stdout,
        r3.stdout + r3.stderr,
        json.dumps(alerts(tmp_path)),
        status,
        listed,
    ):
        assert not any(s in text for s in secrets), text


def test_a_gone_feed_given_a_new_url_is_polled_by_check_and_not_shown_gone(tmp_path, feed_server):  # noqa: F811
    """The daemon polls it at the new url; check skipped it and status said gone."""
    feed_server.set("/g", b"gone", status=410)
    feed_server.set("/j", rss([entry(1)]))
    cfg = tmp_path / "feedwatch.toml"
    text = jsonl_config(tmp_path, f'[[feeds]]\nname = "g"\nurl = "{feed_server.url("/g")}"\n')
    cfg.write_text(text)
    assert fw(cfg, "check").returncode == 1
    assert json.loads(fw(cfg, "status", "--json").stdout)["feeds"][0]["state"] == "gone"
    cfg.write_text(text.replace(feed_server.url("/g"), feed_server.url("/j")))
    assert json.loads(fw(cfg, "status", "--json").stdout)["feeds"][0]["state"] != "gone"
    r = fw(cfg, "check")
    assert r.returncode == 0 and "skipped" not in r.stderr, r.stderr
    assert feed_server.count("/j") == 1
    assert json.loads(fw(cfg, "status", "--json").stdout)["feeds"][0]["state"] == "ok"


def test_a_feed_given_a_new_url_is_not_held_back_by_the_old_urls_retry_after_or_errors(
    tmp_path,
    feed_server,  # noqa: F811
):
    """The old url's server asked for an hour (429, Retry-After) after failing twice:
    `check` skipped the feed at its new url ("Retry-After"), `status` showed it `error`
    (exit 1 with --check), and a failure of the new url backed off as the third."""
    feed_server.set("/old", b"down", status=500)
    feed_server.set("/new", b"down", status=500)
    cfg = tmp_path / "feedwatch.toml"
    text = jsonl_config(tmp_path, f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/old")}"\n')
    cfg.write_text(text)
    assert fw(cfg, "check").returncode == 1
    feed_server.set("/old", b"slow down", status=429, headers={"Retry-After": "3600"})
    assert fw(cfg, "check").returncode == 1
    assert "Retry-After" in fw(cfg, "check").stderr  # (the old url: still skipped)
    cfg.write_text(text.replace(feed_server.url("/old"), feed_server.url("/new")))
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert (row["state"], row["errors"], row["last_error"]) == ("new", 0, None), row
    assert fw(cfg, "status", "--check").returncode == 0
    r = fw(cfg, "check", "--feed", "a")
    assert r.returncode == 1 and "skipped" not in r.stderr, r.stderr
    assert feed_server.count("/new") == 1
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert (row["state"], row["errors"]) == ("error", 1), row
    feed_server.set("/new", rss([entry(1)]))
    r = fw(cfg, "check")
    assert r.returncode == 0 and "skipped" not in r.stderr, r.stderr
    assert json.loads(fw(cfg, "status", "--json").stdout)["feeds"][0]["state"] == "ok"


def test_a_feed_given_a_new_url_reads_as_never_polled_until_polled_there(tmp_path, feed_server):  # noqa: F811
    """After a feed's url was edited, `status` showed the old url's poll as the new
    one's: `new 500 2026-12-08T01:49:13Z - 0 0 2026-12-08T02:17:49Z`, an HTTP status, a
    last poll and a next poll up to hours away (the old url's backoff), while `run`
    polls it a second after it starts. Until its first poll at the new url the row
    reads as a never-polled feed's (SPEC: `new` never polled); its entries are kept."""
    feed_server.set("/old", rss([entry(1)]))
    feed_server.set("/new", rss([entry(1), entry(2)]))
    cfg = tmp_path / "feedwatch.toml"
    text = jsonl_config(tmp_path, f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/old")}"\n')
    cfg.write_text(text)
    assert fw(cfg, "check").returncode == 0
    feed_server.set("/old", b"down", status=500)
    assert fw(cfg, "check").returncode == 1
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert (row["state"], row["http_status"]) == ("error", 500), row
    assert row["last_poll"] and row["last_success"] and row["next_poll"], row
    cfg.write_text(text.replace(feed_server.url("/old"), feed_server.url("/new")))
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    never = {"http_status": None, "last_poll": None, "last_success": None, "next_poll": None}
    assert row["state"] == "new" and {k: row[k] for k in never} == never, row
    assert (row["errors"], row["last_error"], row["entries"]) == (0, None, 1), row
    line = fw(cfg, "status").stdout.splitlines()[1]
    assert line.split() == ["a", "new", "-", "-", "-", "0", "1", "-"], line
    assert fw(cfg, "check").returncode == 0
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert (row["state"], row["http_status"], row["entries"]) == ("ok", 200, 2), row
    assert row["last_poll"] and row["last_success"] and row["next_poll"], row


def test_a_removed_feeds_state_goes_after_retention_and_its_pending_alerts_stay(
    tmp_path,
    feed_server,  # noqa: F811
    webhook_receiver,  # noqa: F811
):
    """SPEC: a removed feed's state is kept until `retention`. Nothing dropped it: only a
    poll of the feed pruned its entries, so `status` listed it `removed` for ever. `check`
    now drops the entries and the row of a feed out of the config last polled longer than
    `retention` ago; its alerts still pending go out; added back, it starts from a
    baseline, as a new feed does."""
    webhook_receiver.script(status=503)
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/b", rss([entry(1), entry(2), entry(3)]))
    # (a's own retention: the global one is what a removed feed's state waits)
    a = f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\nretention = "1h"\n'
    b = f'[[feeds]]\nname = "b"\nurl = "{feed_server.url("/b")}"\n'
    hook = f'[sinks.hook]\ntype = "webhook"\nurl = "{webhook_receiver.url}/x"\n\n'
    cfg = tmp_path / "feedwatch.toml"

    def status() -> dict:
        return json.loads(fw(cfg, "status", "--json").stdout)

    def write(feeds: str, retention: str) -> None:
        cfg.write_text(jsonl_config(tmp_path, hook + feeds, f'retention = "{retention}"'))

    write(a + b, "1h")
    assert fw(cfg, "check").returncode == 0
    feed_server.set("/b", rss([entry(1), entry(2), entry(3), entry(4)]))
    assert fw(cfg, "check").returncode == 1  # entry 4's alert: the hook answers 503
    write(a, "1h")  # removed, within retention: kept
    fw(cfg, "check")
    assert [(f["name"], f["state"], f["entries"]) for f in status()["feeds"]] == [
        ("a", "ok", 1),
        ("b", "removed", 4),
    ]
    write(a, "1s")

    def dropped() -> bool:
        fw(cfg, "check")
        return [f["name"] for f in status()["feeds"]] == ["a"]

    wait_for(dropped, timeout=15, what="b's state dropped")
    assert [s["pending"] for s in status()["sinks"] if s["name"] == "hook"] == [1]
    webhook_receiver.script(status=200)
    assert fw(cfg, "check").returncode == 0
    sent = webhook_receiver.received()
    assert json.loads(sent[-1].body)["feed"]["name"] == "b"
    # back in the config: a new feed, its first poll a baseline (entry 5 no alert)
    feed_server.set("/b", rss([entry(n) for n in range(1, 6)]))
    write(a + b, "1h")
    r = fw(cfg, "check")
    assert r.returncode == 0 and "5 baselined, 0 new" in r.stderr, r.stderr
    assert [(f["name"], f["entries"]) for f in status()["feeds"]] == [("a", 1), ("b", 5)]
    assert len(webhook_receiver.received()) == len(sent)


def _dated(zone_times: list[str]) -> bytes:
    """An RSS body of one entry per pubDate, in this order."""
    items = "".join(
        f"<item><title>Story {i}</title><link>https://news.example.jp/{i}</link>"
        f"<guid>https://news.example.jp/{i}</guid><description>Text {i}.</description>"
        f"<pubDate>{when}</pubDate></item>"
        for i, when in enumerate(zone_times)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>News JP</title>'
        f"<link>https://news.example.jp/</link><description>d</description>{items}"
        "</channel></rss>"
    ).encode()


def test_a_zone_name_and_its_offset_are_one_instant(tmp_path, feed_server):  # noqa: F811
    """'19:40:17 JST' was read as 19:40:17 UTC, so the same instant written '+0900'
    next alerted each entry as updated (changes.published); the alert carried a time
    nine hours off."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/jp.xml")
    cfg.write_text(
        jsonl_config(tmp_path, f'[[feeds]]\nname = "jp"\nurl = "{url}"\n', 'first_poll = "alert"')
    )
    feed_server.set(
        "/jp.xml", _dated(["Fri, 22 Nov 2024 19:40:17 JST", "Fri, 22 Nov 2024 11:40:17 CET"])
    )
    assert fw(cfg, "check").returncode == 0
    assert [a["entry"]["published"] for a in alerts(tmp_path)] == ["2024-11-22T10:40:17Z"] * 2
    feed_server.set(
        "/jp.xml", _dated(["Fri, 22 Nov 2024 19:40:17 +0900", "Fri, 22 Nov 2024 11:40:17 +0100"])
    )
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert len(alerts(tmp_path)) == 2  # no more


def test_a_moved_time_of_day_in_basic_iso_or_rfc822_with_milliseconds_alerts(
    tmp_path,
    feed_server,  # noqa: F811
):
    """'20241122T104017Z' (ISO 8601's basic format) was read as midnight, so an edit
    that only moved <updated> to '20241122T155645Z' alerted nothing (a lost update),
    and 'Fri, 22 Nov 2024 10:40:17.000 +0000' as no date, so a moved pubDate neither."""
    cfg = tmp_path / "feedwatch.toml"
    atom_url, rss_url = feed_server.url("/a.xml"), feed_server.url("/r.xml")
    cfg.write_text(
        jsonl_config(
            tmp_path,
            f'[[feeds]]\nname = "a"\nurl = "{atom_url}"\n\n'
            f'[[feeds]]\nname = "r"\nurl = "{rss_url}"\n',
            'first_poll = "alert"',
        )
    )

    def atom(updated: str) -> bytes:
        return (
            '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
            "<id>urn:t</id><updated>2024-01-01T00:00:00Z</updated><entry><id>urn:a</id>"
            '<title>Story one</title><link href="https://example.com/a"/>'
            f"<published>20241122T104017+0100</published><updated>{updated}</updated>"
            "<summary>body</summary></entry></feed>"
        ).encode()

    feed_server.set("/a.xml", atom("20241122T104017Z"))
    feed_server.set("/r.xml", _dated(["Fri, 22 Nov 2024 10:40:17.000 +0000"]))
    assert fw(cfg, "check").returncode == 0

    def seen(got: list[dict]) -> list[tuple[str, str | None, str | None]]:
        return sorted(
            ((a["kind"], a["entry"]["published"], a["entry"]["updated"]) for a in got), key=str
        )

    assert seen(alerts(tmp_path)) == [
        ("new", "2024-11-22T09:40:17Z", "2024-11-22T10:40:17Z"),
        ("new", "2024-11-22T10:40:17Z", None),
    ]
    feed_server.set("/a.xml", atom("20241122T155645Z"))
    feed_server.set("/r.xml", _dated(["Fri, 22 Nov 2024 15:56:45.000 +0000"]))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert seen(alerts(tmp_path)[2:]) == [
        ("updated", "2024-11-22T09:40:17Z", "2024-11-22T15:56:45Z"),
        ("updated", "2024-11-22T15:56:45Z", None),
    ]


def test_entries_an_earlier_feedwatch_dated_as_utc_do_not_alert_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """The state an earlier feedwatch wrote holds '19:40:17 JST' as 19:40:17 UTC (the
    first poll here stores just that, written '+0000'); read right now, every entry's
    time moves back nine hours at once: timestamp churn, no alert."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/jp.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "jp"\nurl = "{url}"\n'))
    hours = range(10, 14)
    feed_server.set("/jp.xml", _dated([f"Fri, 22 Nov 2024 {h}:40:17 +0000" for h in hours]))
    assert fw(cfg, "check").returncode == 0
    feed_server.set("/jp.xml", _dated([f"Fri, 22 Nov 2024 {h}:40:17 JST" for h in hours]))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT published FROM entries ORDER BY identity").fetchall()
    # (microseconds since the epoch) stored as read now
    assert [p for (p,) in rows] == [
        int((T0 + timedelta(hours=h - 19)).timestamp()) * 10**6 for h in hours
    ]


def test_a_notice_of_the_same_text_hours_later_alerts_as_new(tmp_path, feed_server):  # noqa: F811
    """A feed of the latest notice only, without a guid or a link (keyed by title, link
    and published time), the same text again 3 and 6 hours later, dated GMT: each is a
    new notice. They were stored silently over the last one, taken for a row an earlier
    feedwatch had dated with a zone name (BRT's three hours) read as UTC."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/b.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "b"\nurl = "{url}"\n'))

    def body(when: str) -> bytes:
        return (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>Backups</title>'
            "<link>https://example.org/</link><description>d</description><item>"
            "<title>Backup completed</title><description>The backup completed.</description>"
            f"<pubDate>Mon, 02 Dec 2024 {when} GMT</pubDate></item></channel></rss>"
        ).encode()

    feed_server.set("/b.xml", body("00:00:00"))
    assert fw(cfg, "check").returncode == 0
    for when in ("03:00:00", "06:00:00"):
        feed_server.set("/b.xml", body(when))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
    assert [(a["kind"], a["entry"]["published"]) for a in alerts(tmp_path)] == [
        ("new", "2024-12-02T03:00:00Z"),
        ("new", "2024-12-02T06:00:00Z"),
    ]


def test_a_rule_on_the_author_matches_an_aggregated_entrys_source_author(tmp_path, feed_server):  # noqa: F811
    """A Planet's entries name their author in <source> only; they had the Planet's
    own author, so a rule on Alice's name never matched her posts. Reading it so alerts
    nothing for the entries already seen (the author is not compared)."""

    def planet(posts: range, with_source: bool = True) -> bytes:
        src = (
            "<source><id>tag:alice</id><title>Alice's blog</title>"
            "<author><name>Alice Liddell</name></author></source>"
        )
        entries = "".join(
            f"<entry><id>tag:alice,2024:post-{i}</id><title>Post {i}</title>"
            f'<link href="https://alice.example.org/{i}"/><updated>2024-11-22T1{i}:00:00Z</updated>'
            f"{src if with_source else ''}<content>Text {i}</content></entry>"
            for i in posts
        )
        return (
            '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Planet</title>'
            "<id>urn:planet</id><updated>2024-11-22T19:00:00Z</updated>"
            f"<author><name>Planet Admin</name></author>{entries}</feed>"
        ).encode()

    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/planet.xml")
    feeds = f'[[feeds]]\nname = "planet"\nurl = "{url}"\nmatch = ["alice"]\n'
    rule = '\n[rules.alice]\nany = ["Alice Liddell"]\nfields = ["author"]\n'
    cfg.write_text(jsonl_config(tmp_path, feeds) + rule)
    ct = "application/atom+xml"
    feed_server.set("/planet.xml", planet(range(1, 3), with_source=False), content_type=ct)
    assert fw(cfg, "check").returncode == 0
    feed_server.set("/planet.xml", planet(range(1, 3)), content_type=ct)
    assert fw(cfg, "check").returncode == 0
    assert alerts(tmp_path) == []
    feed_server.set("/planet.xml", planet(range(1, 4)), content_type=ct)
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    (a,) = alerts(tmp_path)
    assert (a["kind"], a["entry"]["title"], a["entry"]["author"]) == (
        "new",
        "Post 3",
        "Alice Liddell",
    )


def test_entries_keyed_by_content_an_earlier_feedwatch_dated_as_utc_are_not_new(
    tmp_path,
    feed_server,  # noqa: F811
):
    """An entry without a guid or a usable link is keyed by its title, link and published
    time, and an earlier feedwatch stored '19:40:17 JST' as 19:40:17 UTC (the first poll
    here stores just that, written '+0000'): read right now, its key moved, and each
    entry alerted as new. Now each is its row, re-keyed, its time stored silently (also
    where churn does not cover it: two entries, one with the home page as its link)."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/jp.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "jp"\nurl = "{url}"\n'))

    def body(zone: str) -> bytes:
        return (
            _dated([f"Fri, 22 Nov 2024 1{h}:40:17 {zone}" for h in range(2)])
            .replace(b"<link>https://news.example.jp/1</link>", b"")
            .replace(b"https://news.example.jp/0", b"https://news.example.jp/")
            .replace(b"<guid>https://news.example.jp/</guid>", b"")
            .replace(b"<guid>https://news.example.jp/1</guid>", b"")
        )

    feed_server.set("/jp.xml", body("+0000"))
    assert fw(cfg, "check").returncode == 0
    feed_server.set("/jp.xml", body("JST"))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT published FROM entries ORDER BY published").fetchall()
    assert [p for (p,) in rows] == [
        int((T0 + timedelta(hours=h - 9)).timestamp()) * 10**6 for h in range(2)
    ]


def _notices_dated(times: Sequence[str]) -> bytes:
    """An RSS body of notices without a guid or a link (keyed by title and published
    time), one per pubDate, in this order."""
    items = "".join(
        f"<item><title>Notice {i}</title><description>Text {i}.</description>"
        f"<pubDate>{when}</pubDate></item>"
        for i, when in enumerate(times)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Notices</title>'
        f"<link>https://notices.example.org/</link><description>d</description>{items}"
        "</channel></rss>"
    ).encode()


def _iso_atom(times: Sequence[tuple[str, str]]) -> bytes:
    entries = "".join(
        f"<entry><id>urn:post:{i}</id><title>Post {i}</title>"
        f'<link href="https://blog.example.org/{i}"/><published>{published}</published>'
        f"<updated>{updated}</updated><summary>Text {i}.</summary></entry>"
        for i, (published, updated) in enumerate(times)
    )
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Blog</title>'
        f"<id>urn:blog</id><updated>2024-11-23T00:00:00Z</updated>{entries}</feed>"
    ).encode()


def _as_stored_by_v6(state: Path) -> None:
    """The rows of ``state`` labelled as the release before labelled them (fingerprint
    v6, hashed as v7): the rows an upgrade finds."""
    with sqlite3.connect(state) as db:
        db.execute("UPDATE entries SET fingerprint = 'v6:' || substr(fingerprint, 4)")


def test_entries_an_earlier_feedwatch_read_without_am_pm_an_iso_zone_name_or_in_local_time_do_not_alert_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """An earlier feedwatch read "10:40:17 PM GMT" as 10:40 (AM/PM dropped), a zone name
    after an ISO date ("10:40:17 EST") as UTC, and an ISO date feedparser's ISO reader
    took ("02:30:00,5") in the process's local zone (under TZ=Europe/Berlin, a time its
    DST change skips an hour later); the first polls here store just those readings,
    written '+0000' and labelled as the release before labelled its rows, fingerprint v6
    (the parse cache dropped as the upgrade drops it). Read right now,
    the times move by 12 hours, a zone's offset or an hour, not every entry's (the AM
    ones stay): no timestamp churn, so each alerted as updated, and each entry keyed by
    its content (no guid, no link) as new. Now each is its row, its time stored
    silently."""
    cfg = tmp_path / "feedwatch.toml"
    feeds = "".join(
        f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(f"/{name}.xml")}"\n\n'
        for name in ("cms", "blog", "notices")
    )
    cfg.write_text(jsonl_config(tmp_path, feeds))
    berlin = {"TZ": "Europe/Berlin"}
    day = "Fri, 22 Nov 2024"
    cms_was = [f"{day} {t} +0000" for t in ("10:40:17", "09:15:00", "12:05:00", "03:00:00")]
    cms_now = [f"{day} {t} GMT" for t in ("10:40:17 PM", "09:15:00 AM", "12:05:00 AM", "3:00 PM")]
    blog_was = [("2024-11-22T10:40:17Z", "2024-11-22T00:00:00Z")]  # after a space: midnight
    blog_now = [("2024-11-22T10:40:17 EST", "2024-11-22 11:00:00 EST")]
    # (Berlin's clocks went from 02:00 to 03:00 on 2024-03-31)
    notices_was = [f"{day} 10:40:17 +0000", "Fri, 22 Nov 2024 10:00:00 +0000"]
    notices_was += ["Sun, 31 Mar 2024 03:30:00 +0000", f"{day} 08:00:00 +0000"]
    notices_now = [f"{day} 10:40:17 PM GMT", "2024-11-22T10:00:00 PST"]
    notices_now += ["2024-03-31T02:30:00,5", f"{day} 08:00:00 AM GMT"]
    feed_server.set("/cms.xml", _dated(cms_was))
    feed_server.set("/blog.xml", _iso_atom(blog_was), content_type="application/atom+xml")
    feed_server.set("/notices.xml", _notices_dated(notices_was))
    assert fw(cfg, "check", env=berlin).returncode == 0  # baseline
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")
    _as_stored_by_v6(tmp_path / "state.db")

    feed_server.set("/cms.xml", _dated(cms_now))
    feed_server.set("/blog.xml", _iso_atom(blog_now), content_type="application/atom+xml")
    feed_server.set("/notices.xml", _notices_dated(notices_now))
    out = fw(cfg, "explain", "cms", "Story 0", env=berlin).stdout
    assert "status:   changed, stored silently" in out, out
    assert "its date as releases before read it (AM/PM dropped" in out, out
    r = fw(cfg, "check", env=berlin)
    assert r.returncode == 0, r.stderr
    assert [(a["kind"], a["entry"]["title"]) for a in alerts(tmp_path)] == []

    def at(*args: int) -> int:
        return int(datetime(*args, tzinfo=timezone.utc).timestamp()) * 10**6

    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT title, published, updated FROM entries ORDER BY title")
        got = rows.fetchall()
    assert got == [  # stored as read now
        ("Notice 0", at(2024, 11, 22, 22, 40, 17), None),
        ("Notice 1", at(2024, 11, 22, 18), None),
        ("Notice 2", at(2024, 3, 31, 2, 30), None),
        ("Notice 3", at(2024, 11, 22, 8), None),
        ("Post 0", at(2024, 11, 22, 15, 40, 17), at(2024, 11, 22, 16)),
        ("Story 0", at(2024, 11, 22, 22, 40, 17), None),
        ("Story 1", at(2024, 11, 22, 9, 15), None),
        ("Story 2", at(2024, 11, 22, 0, 5), None),
        ("Story 3", at(2024, 11, 22, 15), None),
    ]
    # and under another TZ, nothing moves
    feed_server.set("/cms.xml", _dated(cms_now).replace(b"Text 1.", b"Text 1, edited."))
    feed_server.set("/notices.xml", _notices_dated(notices_now)[:-1] + b" ")
    r = fw(cfg, "check", env={"TZ": "UTC"})
    assert r.returncode == 0, r.stderr
    assert [(a["kind"], a["entry"]["title"], a["changes"]) for a in alerts(tmp_path)] == [
        ("updated", "Story 1", {"summary": {"old": "Text 1.", "new": "Text 1, edited."}})
    ]


def test_a_date_moved_from_am_to_pm_still_alerts(tmp_path, feed_server):  # noqa: F811
    """The upgrade takes a row holding an entry's time as read before (PM as AM) for that
    entry only where a release before stored it (a row of this one holds its time as
    read now), and under a content key only where it was first seen after that time: an
    entry seen since ("10:40:17 AM", tomorrow) whose date moves to "10:40:17 PM" alerts
    as updated, and a notice of the same text as a morning one, twelve hours later, as
    new."""
    cfg = tmp_path / "feedwatch.toml"
    feeds = "".join(
        f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(f"/{name}.xml")}"\n\n'
        for name in ("cms", "notices")
    )
    cfg.write_text(jsonl_config(tmp_path, feeds))
    day = format_datetime(datetime.now(timezone.utc) + timedelta(days=1), usegmt=True)[:16]
    feed_server.set("/cms.xml", _dated([f"{day} 10:40:17 AM GMT"]))
    feed_server.set("/notices.xml", _notices_dated([f"{day} 10:40:17 AM GMT"]))
    assert fw(cfg, "check").returncode == 0  # baseline
    feed_server.set("/cms.xml", _dated([f"{day} 10:40:17 PM GMT"]))
    feed_server.set("/notices.xml", _notices_dated([f"{day} 10:40:17 PM GMT"]))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = sorted((a["feed"]["name"], a["kind"], a["entry"]["published"]) for a in alerts(tmp_path))
    when = datetime.strptime(day[5:], "%d %b %Y").strftime("%Y-%m-%dT22:40:17Z")
    assert got == [("cms", "updated", when), ("notices", "new", when)]


def test_a_date_edited_from_am_to_pm_alerts_on_a_state_this_release_made(
    tmp_path,
    feed_server,  # noqa: F811
):
    """docs/change-detection.md: an AM -> PM edit of a date alerts as updated. The
    upgrade's rule (a row holding an entry's times as the releases before read them is
    that entry's, its move silent) took every row, a fresh state's too: a post of two
    days ago baselined at "09:15:00 AM GMT", then edited to "09:15:00 PM GMT", alerted
    nothing with `updates = "timestamp"`, and explain said its stored times were its
    date as releases before read it. A row this release stored is no such row."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/cms.xml")
    cfg.write_text(
        jsonl_config(tmp_path, f'[[feeds]]\nname = "cms"\nurl = "{url}"\nupdates = "timestamp"\n')
    )
    then = datetime.now(timezone.utc) - timedelta(days=2)
    day = format_datetime(then, usegmt=True)[:16]
    feed_server.set("/cms.xml", _dated([f"{day} 09:15:00 AM GMT"]))
    assert fw(cfg, "check").returncode == 0  # baseline
    feed_server.set("/cms.xml", _dated([f"{day} 09:15:00 PM GMT"]))
    out = fw(cfg, "explain", "cms", "Story 0").stdout
    assert "releases before read it" not in out and "stored silently" not in out, out
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    at = then.strftime("%Y-%m-%dT{}Z")
    assert [(a["kind"], a["changes"]) for a in alerts(tmp_path)] == [
        ("updated", {"published": {"old": at.format("09:15:00"), "new": at.format("21:15:00")}})
    ]


def test_a_pm_post_a_release_before_stored_as_am_is_silent_at_the_upgrade_however_soon_seen(
    tmp_path,
    feed_server,  # noqa: F811
):
    """A CMS in CET writing its local time labelled "GMT" with PM ("09:15:00 PM GMT",
    in truth 20:15Z), polled by the release before five minutes after that (first seen
    20:20Z), stored 09:15Z; read now it is 21:15Z. The upgrade took such a row only if
    first seen no earlier than ten minutes before 21:15Z, so this one alerted as
    updated. A row keyed by its guid that a release before stored holding that reading
    is the entry's: silent. And the first edit at the upgrade (another feed) alerted
    with "published" 09:15Z -> 21:15Z among its changes: only the summary is named."""
    cfg = tmp_path / "feedwatch.toml"
    feeds = f'[[feeds]]\nname = "cms"\nurl = "{feed_server.url("/cms.xml")}"\n'
    feeds += 'updates = "timestamp"\n\n'
    feeds += f'[[feeds]]\nname = "edited"\nurl = "{feed_server.url("/edited.xml")}"\n'
    cfg.write_text(jsonl_config(tmp_path, feeds))
    then = datetime.now(timezone.utc) - timedelta(days=2)
    day = format_datetime(then, usegmt=True)[:16]
    for name in ("cms", "edited"):  # as the release before read "09:15:00 PM GMT"
        feed_server.set(f"/{name}.xml", _dated([f"{day} 09:15:00 +0000"]))
    assert fw(cfg, "check").returncode == 0  # baseline
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")
    _as_stored_by_v6(tmp_path / "state.db")
    seen = then.replace(hour=20, minute=20, second=0, microsecond=0)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE entries SET first_seen = ?", (int(seen.timestamp()) * 10**6,))

    feed_server.set("/cms.xml", _dated([f"{day} 09:15:00 PM GMT"]))
    feed_server.set(
        "/edited.xml", _dated([f"{day} 09:15:00 PM GMT"]).replace(b"Text 0.", b"Text 0, fixed.")
    )
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert [(a["feed"]["name"], a["kind"], a["changes"]) for a in alerts(tmp_path)] == [
        ("edited", "updated", {"summary": {"old": "Text 0.", "new": "Text 0, fixed."}})
    ]
    pm = int(then.replace(hour=21, minute=15, second=0, microsecond=0).timestamp()) * 10**6
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT published, substr(fingerprint, 1, 3) FROM entries")
        assert rows.fetchall() == [(pm, "v8:"), (pm, "v8:")]


# Notices without a guid or a link (keyed by title, link and published time), and one
# title with a byte that is not UTF-8 (0xE9)
_NOTICES = [
    ("Notice 0", "1732300817", "Text 0"),
    ("Notice 1", "Sat, 23 Nov 2024 19:40:17 +530", "Text 1"),
    ("Notice 2", "Sun, 24 Nov 2024 19:40:17 -5", "Text 2"),
    ("Оголошення 3 — відключення", "Fri, 22 Nov 2024 13:00:00 GMT", "Графік 3 — з 10:00"),
    ("Caf\udce9", "Fri, 22 Nov 2024 09:00:00 GMT", "x"),
]
# How the release before (4e97867, a0a307a) stored the first four, each by its title as
# read now: its key, title, summary and published time (microseconds). It read
# "1732300817" as 1732-10-26, "+530" as 53 hours, "-5" as five minutes, and the whole
# document, for its stray byte, as ISO-8859-2
_NOTICES_WAS = {
    "Notice 0": ("c:7f0de9aba46775fa4a85a02b7d46a8b3", "Notice 0", "Text 0", -7484745600000000),
    "Notice 1": ("c:e34140b45f6b278c9eb3200c066c788f", "Notice 1", "Text 1", 1732200017000000),
    "Notice 2": ("c:3565a0504441ce772b22b489ea4c87af", "Notice 2", "Text 2", 1732477517000000),
    "Оголошення 3 — відключення": (
        "c:b1aff0ec67b73d29c2329553349c73db",
        "ĐžĐłĐžĐťĐžŃˆĐľĐ˝Đ˝Ń\x8f 3 â€” Đ˛Ń–Đ´ĐşĐťŃŽŃ‡ĐľĐ˝Đ˝Ń\x8f",
        "Đ“Ń€Đ°Ń„Ń–Đş 3 â€” Đˇ 10:00",
        1732280400000000,
    ),
}


def _notices(built: str, first: str = "Text 0") -> bytes:
    items = "".join(
        f"<item><title>{title}</title><pubDate>{when}</pubDate>"
        f"<description>{first if n == 0 else text}</description></item>"
        for n, (title, when, text) in enumerate(_NOTICES)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Notices</title>'
        "<link>https://notices.example.org/</link><description>d</description>"
        f"<lastBuildDate>Mon, 02 Dec 2024 {built}:00 GMT</lastBuildDate>{items}</channel></rss>"
    ).encode("utf-8", "surrogateescape")


def test_entries_keyed_by_content_an_earlier_feedwatch_misread_are_not_new(
    tmp_path,
    feed_server,  # noqa: F811
):
    """An entry without a guid or a usable link is keyed by its title and published
    time, and the release before misread some: a Unix time as a date in 1732, a zone
    "+530" as 53 hours and "-5" as minutes, and (one byte that is not UTF-8 in the body)
    a Cyrillic title in mojibake. Read right now, their keys moved, and the first
    changed poll after the upgrade alerted each as new. Now each is its row, re-keyed
    and stored silently; one edited in that very poll alerts once, as updated. The rows
    are written here as that release wrote them (their keys, texts, times, fingerprints
    and `new` ids: checked against a run of it), and its parse cache is gone."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/notices.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "notices"\nurl = "{url}"\n'))
    feed_server.set("/notices.xml", _notices("06:00"))
    assert fw(cfg, "check").returncode == 0  # baseline
    with sqlite3.connect(tmp_path / "state.db") as db:
        for now, (key, title, summary, published) in _NOTICES_WAS.items():
            was = "v1:" + fingerprint(title, summary, "")[3:]
            when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=published)
            db.execute(
                "UPDATE entries SET identity = ?, title = ?, summary = ?, published = ?,"
                " fingerprint = ?, new_alert_id = ? WHERE title = ?",
                (
                    key,
                    title,
                    summary,
                    published,
                    was,
                    alert_id("notices", key, "new", was, when, None),
                    now,
                ),
            )
        db.execute("UPDATE entries SET fingerprint = 'v1:' || substr(fingerprint, 4)")
        olds = db.execute("SELECT fingerprint, new_alert_id FROM entries ORDER BY published")
        assert olds.fetchall() == [  # as the release before stored them
            ("v1:9bbe25dd31b5047e50646e2e57ca8e57", "04c27b7d1ebb1f19a369e3fca8682b25"),
            ("v1:b595796177a59a9570b91c167328879c", "678c8852cd7eec44bb9e020ce4454b77"),
            ("v1:41dcfc996b94d473e912ab643695b7ad", "d984364af4269bcdfe25498684c5688c"),
            ("v1:2d4a7e9c5e20cc46ab59d89e6dd36378", "03fb60aacf6d1eb80f101df7946c1429"),
            ("v1:28c5537c714f1a186df905c8296bdb0a", "b21cacc0b3bd3ddaacc5aecd445be6e3"),
        ]
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")

    feed_server.set("/notices.xml", _notices("06:05", first="Text 0, corrected"))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["entry"]["title"], a["changes"]) for a in alerts(tmp_path)]
    assert got == [
        (
            "updated",
            "Notice 0",
            {
                "summary": {"old": "Text 0", "new": "Text 0, corrected"},
                "published": {"old": "1732-10-26T00:00:00Z", "new": "2024-11-22T18:40:17Z"},
            },
        )
    ]
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT identity, title, substr(fingerprint, 1, 3) FROM entries")
        rows = rows.fetchall()
    assert len(rows) == len(_NOTICES)
    assert {t for _, t, _ in rows} == {
        "Notice 0",
        "Notice 1",
        "Notice 2",
        "Оголошення 3 — відключення",
        "Café",
    }
    assert {f for _, _, f in rows} == {"v8:"}
    assert not {k for k, _, _ in rows} & {key for key, *_ in _NOTICES_WAS.values()}
    feed_server.set("/notices.xml", _notices("06:10", first="Text 0, corrected"))
    assert fw(cfg, "check").returncode == 0
    assert len(alerts(tmp_path)) == 1  # no more


def test_terms_hit_text_that_differs_only_in_what_a_reader_cannot_see(
    tmp_path,
    feed_server,  # noqa: F811
):
    """A Turkish feed's "SON DAKİKA: İSRAİL'DEN AÇIKLAMA" and "İzmir depremi" hit none of
    "son dakika", "İsrail", "izmir" (casefold() makes İ an i and a combining dot), and
    WordPress's "O’Brien", "COVID‑19" (a non-breaking hyphen) and an emoji without its
    presentation selector missed the typed "O'Brien", "COVID-19" and "❤️". They hit now;
    the alerts carry the text as the feed wrote it."""
    old = [entry(1, title="Hava durumu")]
    feed_server.set("/tr.xml", rss(old))
    cfg = tmp_path / "feedwatch.toml"
    feeds = (
        f'[[feeds]]\nname = "tr"\nurl = "{feed_server.url("/tr.xml")}"\nmatch = ["tr"]\n'
        'keywords = ["O\'Brien", "COVID-19", "\u2764\ufe0f"]\n'
    )
    rules = '[rules.tr]\nany = ["son dakika", "İsrail", "izmir"]\n'
    cfg.write_text(jsonl_config(tmp_path, rules + feeds), encoding="utf-8")
    assert fw(cfg, "check").returncode == 0  # baseline
    titles = [
        "SON DAKİKA: İSRAİL'DEN AÇIKLAMA",
        "İzmir depremi",
        "Minister O\u2019Brien resigns",
        "COVID\u201119 cases rise",
        "I \u2764 NY",
        "Istanbul'da ılık hava",  # no term: a dotless ı is not an i
    ]
    new = [*old, *(entry(n, title=t) for n, t in enumerate(titles, 2))]
    feed_server.set("/tr.xml", rss(new))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = {a["entry"]["title"]: a["matched"] for a in alerts(tmp_path)}
    assert got == {
        titles[0]: [{"rule": "tr", "terms": ["son dakika", "İsrail"]}],
        titles[1]: [{"rule": "tr", "terms": ["izmir"]}],
        titles[2]: [{"rule": "keywords", "terms": ["O'Brien"]}],
        titles[3]: [{"rule": "keywords", "terms": ["COVID-19"]}],
        titles[4]: [{"rule": "keywords", "terms": ["\u2764\ufe0f"]}],
    }
    # explain finds the entry by what a user types, and tells the same
    r = fw(cfg, "explain", "tr", "izmir")
    assert r.returncode == 0, r.stderr
    assert "Entry: İzmir depremi" in r.stdout
    assert "tr: MATCHED (matched: 'izmir' (title))" in r.stdout
    assert re.search(r"any izmir\s+hit in title", r.stdout), r.stdout
    assert re.search(r"any İsrail\s+missed", r.stdout), r.stdout


_SELF_CLOSED_ICON = '&lt;svg class="icon" width="16" height="16"/&gt;'


def _icon_news(
    items: list[tuple[int, str]],
    built: str = "Mon, 02 Dec 2024 06:00:00 GMT",
    icon: str = _SELF_CLOSED_ICON,
) -> bytes:
    """An RSS body whose descriptions start with an icon (a self-closed SVG one unless
    ``icon`` says), escaped as publishers write HTML into a description."""
    body = "".join(
        f"<item><guid>urn:story:{n}</guid><title>Story {n}</title>"
        f"<link>https://news.example.org/{n}</link>"
        f"<description>&lt;p&gt;{icon} {text}&lt;/p&gt;</description></item>"
        for n, text in items
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>'
        "<link>https://news.example.org/</link><description>d</description>"
        f"<lastBuildDate>{built}</lastBuildDate>{body}</channel></rss>"
    ).encode()


def test_the_text_after_a_self_closed_svg_is_the_entrys(tmp_path, feed_server):  # noqa: F811
    """HTML5 honours "/>" on an SVG element, so a browser shows the text after
    <svg .../>: feedwatch took the svg for unclosed and dropped the rest of the text
    with it, so the new alert's summary was empty, a rule missed the words after the
    icon, and an edit there ("3 dead" -> "12 dead") alerted nothing."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/news.xml")
    feeds = f'[[feeds]]\nname = "news"\nurl = "{url}"\nmatch = ["dnipro"]\n'
    rule = '\n[rules.dnipro]\nany = ["Dnipro"]\n'
    cfg.write_text(jsonl_config(tmp_path, feeds) + rule)
    feed_server.set("/news.xml", _icon_news([(1, "Kyiv: markets open")]))
    assert fw(cfg, "check").returncode == 0  # baseline
    feed_server.set(
        "/news.xml", _icon_news([(2, "Dnipro strike: 3 dead"), (1, "Kyiv: markets open")])
    )
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["entry"]["title"], a["entry"]["summary"]) for a in alerts(tmp_path)]
    assert got == [("new", "Story 2", "Dnipro strike: 3 dead")]
    feed_server.set(
        "/news.xml", _icon_news([(2, "Dnipro strike: 12 dead"), (1, "Kyiv: markets open")])
    )
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    a = alerts(tmp_path)[1:]
    assert [(x["kind"], x["entry"]["summary"]) for x in a] == [
        ("updated", "Dnipro strike: 12 dead")
    ]
    assert a[0]["changes"]["summary"] == {
        "old": "Dnipro strike: 3 dead",
        "new": "Dnipro strike: 12 dead",
    }
    assert fw(cfg, "check").returncode == 0
    assert len(alerts(tmp_path)) == 2  # no more


def _stored_without_summary(tmp_path: Path, labels: dict[int, str]) -> list[tuple[str, str]]:
    """Stories' rows as a release that read their summary as empty stored them (the
    text after an svg icon or a custom element lost), under its fingerprint label: the
    (fingerprint, new alert id) of each row, by identity."""
    with sqlite3.connect(tmp_path / "state.db") as db:
        for n, label in labels.items():
            was = label + fingerprint(f"Story {n}", "", "")[3:]
            db.execute(
                "UPDATE entries SET summary = '', fingerprint = ?, new_alert_id = ?"
                " WHERE identity = ?",
                (
                    was,
                    alert_id("news", f"g:urn:story:{n}", "new", was, None, None),
                    f"g:urn:story:{n}",
                ),
            )
        rows = db.execute("SELECT fingerprint, new_alert_id FROM entries ORDER BY identity")
        return [tuple(r) for r in rows.fetchall()]


def test_entries_stored_before_svg_self_closed_do_not_alert_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """The release before read the text after a self-closed svg as the svg's, so it
    stored these summaries empty (fingerprint v3). Read right now they hold text: the
    first poll after the upgrade that compares them (the channel's lastBuildDate moved)
    stores them again silently, not as updated; a real edit after the svg then alerts,
    once. The rows are written here as that release wrote them (its texts, fingerprints
    and `new` ids: checked against a run of it), and its parse cache is gone (one of an
    older parser version is never used)."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/news.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "news"\nurl = "{url}"\n'))
    stories = [(1, "Kyiv: markets open"), (2, "Dnipro strike: 3 dead")]
    feed_server.set("/news.xml", _icon_news(stories))
    assert fw(cfg, "check").returncode == 0  # baseline
    olds = _stored_without_summary(tmp_path, {1: "v3:", 2: "v3:"})
    assert olds[1] == (  # as the release before stored story 2
        "v3:19ed4ad730376f67ae90196d6eaa0712",
        "c9d2f42a2932431adde839acc421a62e",
    )
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")

    feed_server.set("/news.xml", _icon_news(stories, built="Mon, 02 Dec 2024 06:05:00 GMT"))
    # explain gives the reason (it said the text "only moved between summary and content")
    out = fw(cfg, "explain", "news", "Story 2").stdout
    assert "status:   changed, stored silently" in out, out
    assert "stored by a release before fingerprint v4" in out, out
    assert "moved between summary and content" not in out, out
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute(
            "SELECT summary, substr(fingerprint, 1, 3) FROM entries ORDER BY identity"
        )
        assert rows.fetchall() == [("Kyiv: markets open", "v8:"), ("Dnipro strike: 3 dead", "v8:")]

    edited = [(1, "Kyiv: markets open"), (2, "Dnipro strike: 12 dead")]
    for built in ("06:10", "06:15"):
        feed_server.set("/news.xml", _icon_news(edited, built=f"Mon, 02 Dec 2024 {built}:00 GMT"))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["entry"]["title"], a["changes"]["summary"]) for a in alerts(tmp_path)]
    assert got == [
        ("updated", "Story 2", {"old": "Dnipro strike: 3 dead", "new": "Dnipro strike: 12 dead"})
    ]


# An icon as a custom element whose name starts with svg's, escaped into a description
_NAMED_ICON = '&lt;svg-icon name="bolt"&gt;&lt;/svg-icon&gt;'


def test_the_text_after_an_element_named_like_svg_is_the_entrys(tmp_path, feed_server):  # noqa: F811
    """<svg-icon> is a custom element (a tag's name runs to white space, "/" or ">"),
    whose text, and the text after it, a browser shows: feedwatch read it as an svg
    left open and dropped the rest of the text, so the new alert's summary was empty, a
    rule missed the words after the icon, and an edit there alerted nothing."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/news.xml")
    feeds = f'[[feeds]]\nname = "news"\nurl = "{url}"\nmatch = ["dnipro"]\n'
    rule = '\n[rules.dnipro]\nany = ["Dnipro"]\n'
    cfg.write_text(jsonl_config(tmp_path, feeds) + rule)

    def news(*items: tuple[int, str]) -> bytes:
        return _icon_news(list(items), icon=_NAMED_ICON)

    feed_server.set("/news.xml", news((1, "Kyiv: markets open")))
    assert fw(cfg, "check").returncode == 0  # baseline
    feed_server.set("/news.xml", news((2, "Dnipro strike: 3 dead"), (1, "Kyiv: markets open")))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["entry"]["title"], a["entry"]["summary"]) for a in alerts(tmp_path)]
    assert got == [("new", "Story 2", "Dnipro strike: 3 dead")]
    feed_server.set("/news.xml", news((2, "Dnipro strike: 12 dead"), (1, "Kyiv: markets open")))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    a = alerts(tmp_path)[1:]
    assert [(x["kind"], x["changes"]["summary"]) for x in a] == [
        ("updated", {"old": "Dnipro strike: 3 dead", "new": "Dnipro strike: 12 dead"})
    ]
    assert fw(cfg, "check").returncode == 0
    assert len(alerts(tmp_path)) == 2  # no more


def test_entries_stored_by_fingerprint_v4_do_not_alert_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """Fingerprint v4 read the text after <svg-icon> as an svg's, left open, so it
    stored these summaries empty; so did the releases before it. Read right now they
    hold text: the first poll after the upgrade that compares them (the channel's
    lastBuildDate moved) stores them again silently, not as updated, a v4 row and a v3
    row alike (each compared with its own release's reading); a real edit after the
    icon then alerts, once. The rows are written here as those releases wrote them (their
    texts, fingerprints and `new` ids: checked against a run of the v4 release), and
    the parse cache is gone (one of an older parser version is never used)."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/news.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "news"\nurl = "{url}"\n'))
    stories = [(1, "Kyiv: markets open"), (2, "Dnipro strike: 3 dead")]

    def news(items: list[tuple[int, str]], minute: int) -> bytes:
        built = f"Mon, 02 Dec 2024 06:{minute:02}:00 GMT"
        return _icon_news(items, built=built, icon=_NAMED_ICON)

    feed_server.set("/news.xml", news(stories, 0))
    assert fw(cfg, "check").returncode == 0  # baseline
    olds = _stored_without_summary(tmp_path, {1: "v3:", 2: "v4:"})
    assert olds[1] == (  # as the v4 release stored story 2
        "v4:19ed4ad730376f67ae90196d6eaa0712",
        "c9d2f42a2932431adde839acc421a62e",
    )
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")

    feed_server.set("/news.xml", news(stories, 5))
    # explain gives the reason, naming the release that stored the row
    out = fw(cfg, "explain", "news", "Story 2").stdout
    assert "status:   changed, stored silently" in out, out
    assert "stored under fingerprint v4, which lost the text after an element named" in out, out
    assert "its text as that release read it is the same (an edit in the text it lost" in out
    out = fw(cfg, "explain", "news", "Story 1").stdout
    assert "stored by a release before fingerprint v4" in out, out
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute(
            "SELECT summary, substr(fingerprint, 1, 3) FROM entries ORDER BY identity"
        )
        assert rows.fetchall() == [("Kyiv: markets open", "v8:"), ("Dnipro strike: 3 dead", "v8:")]

    edited = [(1, "Kyiv: markets open"), (2, "Dnipro strike: 12 dead")]
    for minute in (10, 15):
        feed_server.set("/news.xml", news(edited, minute))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["entry"]["title"], a["changes"]["summary"]) for a in alerts(tmp_path)]
    assert got == [
        ("updated", "Story 2", {"old": "Dnipro strike: 3 dead", "new": "Dnipro strike: 12 dead"})
    ]


def _misread(text: str, codec: str) -> str:
    """``text`` as a release of fingerprint v1 stored it from a UTF-8 document holding a
    byte that is not UTF-8: feedparser read the whole document as windows-1252, or, when
    a byte windows-1252 leaves undefined is in it too (the D1 81 of a Cyrillic "с"), as
    ISO-8859-2, and mapped the C1 controls that left to windows-1252's characters."""
    c1 = {b: bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(0x80, 0xA0)}
    return text.encode("utf-8").decode(codec).translate(c1)


_QUOTED = "&amp;lt;script&amp;gt;"  # a tag quoted in a story about HTML, escaped twice


def _stray_byte_news(minute: int, third: str, dead: int = 3) -> bytes:
    """A UTF-8 RSS body with one byte that is not UTF-8 (a title pasted from a Windows
    editor), whose other descriptions hold a self-closed icon and a quoted (escaped
    twice) <script>; ``third``: the third story's title."""
    items = [
        (1, "Дніпро", f"&lt;p&gt;Дніпро: {_SELF_CLOSED_ICON} {dead} загиблих&lt;/p&gt;"),
        (2, "Quoting HTML", f"&lt;p&gt;Never put a {_QUOTED} tag inside an SVG file.&lt;/p&gt;"),
        (3, third, f"&lt;p&gt;Цитуйте {_QUOTED} тут.&lt;/p&gt;"),
        (4, "Caf@ opens", "Plain."),
    ]
    body = "".join(
        f"<item><guid>urn:story:{n}</guid><title>{title}</title>"
        f"<link>https://news.example.org/{n}</link><description>{d}</description></item>"
        for n, title, d in items
    )
    built = f"Mon, 02 Dec 2024 06:{minute:02}:00 GMT"
    text = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>News</title>'
        "<link>https://news.example.org/</link><description>d</description>"
        f"<lastBuildDate>{built}</lastBuildDate>{body}</channel></rss>"
    )
    return text.encode().replace(b"@", b"\xe9")


def _stray_byte_dev(minute: int, third: str, dead: int = 3) -> bytes:
    """An Atom body with one byte that is not UTF-8 and a plain (type="text") title
    naming a tag (``_stray_byte_news``'s arguments: ``dead`` other than 3 edits it)."""
    word = "finally" if dead == 3 else "at last"
    text = (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Dev</title><id>urn:f</id><updated>2024-11-25T12:{minute:02}:00Z</updated>"
        '<entry><id>urn:story:1</id><title type="text">Firefox ships the &lt;dialog&gt;'
        f" element — {word}</title><updated>2024-11-22T10:00:00Z</updated>"
        '<content type="html">Body — text — more</content></entry>'
        "<entry><id>urn:story:2</id><title>Caf@ opens</title>"
        '<updated>2024-11-21T10:00:00Z</updated><content type="html">Body 2</content></entry>'
        "</feed>"
    )
    return text.encode().replace(b"@", b"\xe9")


_RSS_AS_READ = [  # (title, summary, content) as fingerprint v1 read them, before the mojibake
    ("Дніпро", "Дніпро:", ""),  # the text after the self-closed icon lost
    ("Quoting HTML", "Never put a", ""),  # the text after the quoted <script> lost
    ("{third}", "Цитуйте", ""),  # the same, in Cyrillic
]


@pytest.mark.parametrize(
    ("body", "third", "codec", "as_read", "story_1"),
    [
        (
            _stray_byte_news,
            "Цитата",
            "cp1252",
            _RSS_AS_READ,
            ("v1:9c2cb4a668f98c711e93ea669c14ea25", "c9be2c3aa69ba4d54284c971fe5fe354"),
        ),
        (
            _stray_byte_news,
            "Нова пошта",  # its "Н" (D0 9D) makes the document ISO-8859-2
            "iso-8859-2",
            _RSS_AS_READ,
            ("v1:27fb7a275038bfa2c23a875826cc75e1", "b5267ce65090805991f42d073e8d3a19"),
        ),
        (
            _stray_byte_dev,
            "",
            "cp1252",
            [("Firefox ships the\n\nelement — finally", "", "Body — text — more")],
            ("v1:af009e42dc557ba0dbf27ad23cd1b3aa", "3b58c5517a0df4aeee6325161c245270"),
        ),
    ],
    ids=["rss-windows-1252", "rss-iso-8859-2", "atom-windows-1252"],
)
def test_entries_stored_with_two_misreadings_at_once_do_not_alert_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
    body,
    third,
    codec,
    as_read,
    story_1,
):
    """A release of fingerprint v1 read a UTF-8 document holding one stray byte whole as
    windows-1252 (or ISO-8859-2), and in the same text lost the words after a
    self-closed icon or a quoted <script>, or a plain title's "<dialog>": its rows hold
    both misreadings at once. The first poll after the upgrade that compares them stores
    them again silently (each misreading alone was forgiven, not two together: every
    such entry alerted as updated, and so did the quoted <script> alone); a real edit
    then alerts, once. The rows are written here as that release wrote them (texts,
    fingerprints and `new` ids: checked against a run of it, 4e97867); the stray byte's
    own entry ("Café", read so by every release) is only labelled v1."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/feed.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "news"\nurl = "{url}"\n'))
    feed_server.set("/feed.xml", body(0, third))
    assert fw(cfg, "check").returncode == 0  # baseline
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT identity, title, summary, content, updated FROM entries")
        for key, *texts, updated in rows.fetchall():
            n = int(key.rsplit(":", 1)[1])
            if n <= len(as_read):
                texts = [_misread(t.format(third=third), codec) for t in as_read[n - 1]]
            was = "v1:" + fingerprint(*texts)[3:]
            when = None if updated is None else datetime.fromtimestamp(updated / 1e6, timezone.utc)
            db.execute(
                "UPDATE entries SET title = ?, summary = ?, content = ?, fingerprint = ?,"
                " new_alert_id = ? WHERE identity = ?",
                (*texts, was, alert_id("news", key, "new", was, None, when), key),
            )
        olds = db.execute("SELECT fingerprint, new_alert_id FROM entries ORDER BY identity")
        assert olds.fetchall()[0] == story_1  # as that release stored story 1
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")

    feed_server.set("/feed.xml", body(5, third))
    if body is _stray_byte_news:  # explain names the reading of the first v1 releases
        out = fw(cfg, "explain", "news", "Quoting HTML").stdout
        assert "status:   changed, stored silently" in out, out
        assert "or after a tag quoted in the text, an escaped <script>" in out, out
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        got = db.execute("SELECT DISTINCT substr(fingerprint, 1, 3) FROM entries").fetchall()
        assert got == [("v8:",)]

    for minute in (10, 15):
        feed_server.set("/feed.xml", body(minute, third, dead=12))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
    assert [(a["kind"], a["entry"]["id"]) for a in alerts(tmp_path)] == [("updated", "urn:story:1")]


def test_check_forgets_old_alerts_and_an_entry_back_after_both_retentions_alerts_again(
    tmp_path,
    feed_server,  # noqa: F811
):
    """SPEC: retention forgets "delivered or dead alerts older than this". Only the
    daemon's hourly upkeep pruned alerts: under cron the alerts table only grew, and an
    entry forgotten by its feed and back unchanged never alerted again (its `new`
    alert's id is its first one's, "once recorded"). `check` prunes them as the upkeep
    does. A feed's shorter `retention` forgets the entry; the global one keeps the id."""
    with_e4 = rss([entry(1), entry(2), entry(4)])
    without = rss([entry(1), entry(2)])
    feeds = "".join(
        f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(f"/{name}.xml")}"\n{extra}\n'
        for name, extra in (("short", 'retention = "2h"'), ("long", ""))
    )
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, feeds, 'retention = "4h"\njitter = "0s"'))
    db = tmp_path / "state.db"

    def check(body: bytes) -> list[tuple[str, str, str]]:
        before = len(alerts(tmp_path))
        for name in ("short", "long"):
            feed_server.set(f"/{name}.xml", body)
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        return [(a["feed"]["name"], a["kind"], a["id"]) for a in alerts(tmp_path)[before:]]

    def stored_alerts() -> int:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        finally:
            conn.close()

    assert check(without) == []  # the baseline
    first = check(with_e4)
    assert sorted(f for f, k, _ in first) == ["long", "short"] and stored_alerts() == 2
    assert check(without) == []  # entry 4 leaves
    age_state(db, 3 * 3600)
    # back after 3 hours: "short" forgot it (2h), and its `new` alert has the first
    # one's id, still kept (4h): nothing; "long" still knows it: nothing
    assert check(with_e4) == []
    assert check(without) == []
    age_state(db, 5 * 3600)
    assert check(without) == [] and stored_alerts() == 0  # both forgotten, alerts too
    again = check(with_e4)
    assert sorted(again) == sorted(first)  # the same ids, sent again


def test_two_items_sharing_a_guid_alert_nothing_when_their_order_flips(tmp_path, feed_server):  # noqa: F811
    """A CMS bug gives two stories one guid. Every flip of their order sent an `updated`
    whose changes moved title, summary and link to the other story, again and again:
    the first of the two was compared with the row of whichever came first before. Now
    the one compared is the one that is the stored row's (SPEC 4, 6: a reorder alerts
    nothing); a real edit of it still alerts once, and `explain` predicts each poll."""
    others = [entry(i, title=f"Story {i}") for i in range(12)]
    council = entry("c", title="Council meets", link="https://example.org/council", entry_id="dup")
    bridge = entry("b", title="Bridge closed", link="https://example.org/bridge", entry_id="dup")
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        jsonl_config(
            tmp_path,
            f'[[feeds]]\nname = "city"\nurl = "{feed_server.url("/city.xml")}"\n',
            'jitter = "0s"',
        )
    )

    def poll(*items: EntrySnapshot) -> None:
        feed_server.set("/city.xml", rss([*others, *items]))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr

    def explain(query: str) -> str:
        r = fw(cfg, "explain", "city", query)
        assert r.returncode == 0, r.stderr
        return r.stdout

    poll(council, bridge)  # the baseline: the row of "dup" is the council's
    for order in ((council, bridge), (bridge, council), (council, bridge), (bridge, council)):
        feed_server.set("/city.xml", rss([*others, *order]))
        out = explain("Council meets")
        assert "nothing changed since it was last seen" in out, out
        assert "another copy of one identity" not in out
        assert "not compared" in explain("Bridge closed")
        poll(*order)
    assert alerts(tmp_path) == []

    edited = replace(council, summary="Council meets on Tuesday instead.")
    feed_server.set("/city.xml", rss([*others, bridge, edited]))
    assert "the next poll alerts it as 'updated'" in explain("Council meets")
    for order in ((bridge, edited), (edited, bridge), (bridge, edited)):
        poll(*order)
    got = [(a["kind"], a["entry"]["title"], sorted(a["changes"])) for a in alerts(tmp_path)]
    assert got == [("updated", "Council meets", ["summary"])]


# --------------------------------------------------------------------------
# What a new user meets following the docs
# --------------------------------------------------------------------------


def test_quiet_check_prints_nothing_on_a_clean_run_but_still_its_failures(setup):
    """docs/recipes.md's cron line `feedwatch -q check >/dev/null` mailed the summary
    line every 15 minutes: -q keeps only warnings and errors on stderr."""
    tmp, srv, cfg, news = setup
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    srv.set("/news.xml", rss([*news, entry(3, title="Missile test")]))
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert [a["entry"]["title"] for a in alerts(tmp)] == ["Missile test"]
    r = fw(cfg, "check")  # without -q: the summary
    assert "2 feeds polled (2 ok, 0 failed)" in r.stderr
    srv.set("/all.xml", b"", status=500)
    r = fw(cfg, "-q", "check")
    assert r.returncode == 1
    assert [line for line in r.stderr.splitlines() if not line.startswith("{")] == [
        "error everything: HTTP 500 Internal Server Error"
    ]
    assert "feeds polled" not in r.stderr


def test_quiet_check_with_a_jsonl_sink_on_stdout_prints_no_alert_line_to_stderr(
    tmp_path,
    feed_server,  # noqa: F811
):
    feed_server.set("/a", rss([entry(1)]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\nfirst_poll = "alert"\nlog_format = "json"\n'
        f'[sinks.out]\ntype = "jsonl"\npath = "-"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\n'
    )
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert [json.loads(x)["entry"]["title"] for x in r.stdout.splitlines()] == ["Entry 1"]


def test_a_console_sink_with_json_is_a_usage_error(tmp_path, feed_server):  # noqa: F811
    """A console sink prints text on stdout: among --json's lines, jq fails."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\nfirst_poll = "alert"\n'
        f'[sinks.screen]\ntype = "console"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\n'
    )
    r = fw(cfg, "check", "--json")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (
        "feedwatch: sink 'screen' (type = \"console\") prints alerts as text on stdout;"
        " it cannot be combined with --json\n"
    )
    assert feed_server.count("/a") == 0 and not (tmp_path / "s.db").exists()
    r = fw(cfg, "check")  # without --json: the console sink prints its alert
    assert r.returncode == 0, r.stderr
    assert "== NEW · " in r.stdout


def test_no_sink_warns_that_alerts_go_nowhere(tmp_path, feed_server):  # noqa: F811
    """With feeds and no sink, validate said `ok` and check printed `-> (no sink)`:
    those alerts are recorded, never sent, not even to a sink added later."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path}/s.db"\nfirst_poll = "alert"\nlog_format = "json"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a")}"\n'
    )
    warning = (
        "no sink is configured: alerts are recorded in the state but sent nowhere, and"
        " a sink added later does not get them (add a [sinks.NAME] table)"
    )
    r = fw(cfg, "validate")
    assert r.returncode == 0 and r.stdout == "ok: 1 feeds, 0 sinks, 0 rules\n"
    assert r.stderr == f"warning: {warning}\n"
    r = fw(cfg, "-q", "check")
    assert r.returncode == 0
    events = [json.loads(line) for line in r.stderr.splitlines()]
    assert [(e["event"], e["level"], e["problem"]) for e in events] == [
        ("config.no_sinks", "warning", warning)
    ]
    assert "-> (no sink)" in r.stdout
    cfg.write_text(
        cfg.read_text() + f'[sinks.log]\ntype = "jsonl"\npath = "{tmp_path}/alerts.jsonl"\n'
    )
    r = fw(cfg, "check")
    assert r.returncode == 0 and "config.no_sinks" not in r.stderr
    assert "deliveries: 0 sent" in r.stderr and alerts(tmp_path) == []  # as the warning says
    r = fw(cfg, "validate")
    assert r.returncode == 0 and r.stderr == ""


def test_forget_without_a_state_is_not_a_usage_error(setup):
    """`forget FEED` before any poll exited 2, which is for usage and config errors:
    there is nothing to forget, and the feed's first poll is a baseline anyway."""
    tmp, srv, cfg, news = setup
    r = fw(cfg, "forget", "news")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"nothing to forget: no state file at {tmp}/state.db yet (nothing was polled)\n"
    )
    assert not (tmp / "state.db").exists()
    r = fw(cfg, "forget", "nosuch")  # a typo is still one, state or not
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "feedwatch: unknown feed 'nosuch' (configured: news, everything)\n"
    assert fw(cfg, "check").returncode == 0
    r = fw(cfg, "forget", "nosuch")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "feedwatch: unknown feed 'nosuch' (configured: news, everything)\n"


def _cells(text: str) -> int:
    """Terminal cells of ``text`` as the test's names take them: wide (W/F) 2, a
    combining mark 0, any other 1."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def test_status_columns_line_up_for_wide_and_combining_names(tmp_path, feed_server):  # noqa: F811
    """`status` padded each name by its len(): a CJK name (東京ニュース, 12 cells in a
    terminal for 6 characters) or one with an emoji (🚀 launches) pushed its row's
    columns right of the others'; a name with a combining accent pulled them left.
    Names are padded by the cells they take."""
    names = ["plain", "東京ニュース", "🚀 launches", "cafe\u0301 news"]
    feed_server.set("/f.xml", rss([entry(1)]))
    feeds = "".join(
        f'[[feeds]]\nname = "{n}"\nurl = "{feed_server.url("/f.xml")}?{i}"\n\n'
        for i, n in enumerate(names)
    )
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, feeds), encoding="utf-8")
    assert fw(cfg, "check").returncode == 0
    r = fw(cfg, "status", env={"PYTHONIOENCODING": "utf-8"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()[: 1 + len(names)]
    assert [x.split("  ")[0] for x in lines] == ["FEED", *names], r.stdout
    # where each column starts, in cells: the same on every row
    starts = []
    for line in lines:
        cols = re.finditer(r"(?<=  )\S", line)
        starts.append([_cells(line[: m.start()]) for m in cols])
    assert all(s == starts[0] for s in starts), r.stdout
    assert len(starts[0]) == 7, r.stdout  # STATE .. NEXT POLL after FEED


def test_status_forget_and_check_show_a_name_s_control_characters_escaped(
    tmp_path,
    feed_server,  # noqa: F811
):
    """A feed name holding an escape sequence, a carriage return or a bidi override (an
    OPML file's title imported as a name; a removed feed's as the state holds it) went
    to the terminal as it was: `status` cleared the screen, rubbed out a character or
    showed "TXT.exe" backwards, and its columns were padded by cells the terminal never
    drew. `status`, `forget` and `check`'s error lines write them as \\x1b, \\x08,
    \\u202e (an emoji's joiner stays: it draws one glyph); `status --json` keeps the
    names as they are."""
    evil = "evil\x1b[2J\x08\u202eTXT.exe"
    shown = "evil\\x1b[2J\\x08\\u202eTXT.exe"
    bad = "bad\x9b31m\u2028x"  # a C1 CSI, a line separator
    dev = "\U0001f469\u200d\U0001f4bb dev"
    feed_server.set("/f.xml", rss([entry(1)]))
    feed_server.set("/bad.xml", "down", status=500)
    feeds = (
        f'[[feeds]]\nname = "evil\\u001b[2J\\b\\u202eTXT.exe"\nurl = "{feed_server.url("/f.xml")}"\n\n'
        f'[[feeds]]\nname = "bad\\u009b31m\\u2028x"\nurl = "{feed_server.url("/bad.xml")}"\n\n'
        f'[[feeds]]\nname = "{dev}"\nurl = "{feed_server.url("/f.xml")}?dev"\n\n'
    )
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, feeds), encoding="utf-8")
    utf8 = {"PYTHONIOENCODING": "utf-8"}
    acting = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")
    r = fw(cfg, "check", env=utf8)
    assert r.returncode == 1
    said = [x for x in r.stderr.split("\n") if not x.startswith("{")]  # (not the JSON log's)
    assert (
        "error bad\\x9b31m\\u2028x: HTTP 500 Internal Server Error" in said
        and not acting.search("\n".join(said))
    )

    r = fw(cfg, "status", env=utf8)
    assert r.returncode == 0, r.stderr
    assert not acting.search(r.stdout), repr(r.stdout)
    rows = r.stdout.splitlines()
    assert [x.split("  ")[0] for x in rows[1:4]] == [shown, "bad\\x9b31m\\u2028x", dev]
    # each column where the header's is: the name padded by the cells it takes, the
    # emoji its two (joined: one glyph), an escape its four characters, not one or none
    state = rows[0].index("STATE")
    assert [x[state - 2 : state + 2] for x in rows[1:3]] == ["  ok", "  er"], r.stdout
    assert rows[3].index("  ok") == state - 2 + 1, r.stdout  # 7 characters, 6 cells
    assert "\n  bad\\x9b31m\\u2028x: HTTP 500 Internal Server Error\n" in r.stdout, r.stdout

    r = fw(cfg, "status", "--json", env=utf8)
    assert [f["name"] for f in json.loads(r.stdout)["feeds"]] == [evil, bad, dev]

    r = fw(cfg, "forget", evil, env=utf8)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"forgot {shown}: its next poll records a new baseline\n"
    assert fw(cfg, "check", env=utf8).returncode == 1  # its baseline again
    # out of the config: named as the state holds it
    cfg.write_text(jsonl_config(tmp_path, feeds.split("\n\n", 1)[1]), encoding="utf-8")
    r = fw(cfg, "status", env=utf8)
    assert f"\n{shown}  removed " in r.stdout and not acting.search(r.stdout), r.stdout
    r = fw(cfg, "forget", evil, env=utf8)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"forgot {shown}: it is not in the config"), r.stdout


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_status_and_redeliver_without_a_state_say_where_they_looked(setup, json_flag):
    """`status` and `redeliver` run with another state path than the service's (an
    admin's config, a typo) showed every feed `new` and "0 dead deliveries queued
    again", never saying there was no state where they looked. They say so on stderr
    (stdout as before: every feed `new`, SPEC 2), create nothing and exit 0."""
    tmp, srv, cfg, news = setup
    state = tmp / "elsewhere" / "state.db"
    note = (
        f"note: no state file at {state}: nothing polled yet with this config"
        " (is this the service's config?)\n"
    )
    r = fw(cfg, "--state", str(state), "status", *json_flag)
    assert r.returncode == 0, r.stderr
    assert r.stderr == note
    if json_flag:
        assert [f["state"] for f in json.loads(r.stdout)["feeds"]] == ["new", "new"]
    else:
        assert r.stdout.splitlines()[1].split()[:2] == ["news", "new"]
    if not json_flag:
        r = fw(cfg, "--state", str(state), "redeliver")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "0 dead deliveries queued again\n"
        assert r.stderr == note
    assert not state.parent.exists()  # neither created the file nor its directory
    assert fw(cfg, "check").returncode == 0  # with a state: no such note
    r = fw(cfg, "status")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = fw(cfg, "redeliver")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_missing_config_named_by_the_variable_says_so(tmp_path):
    r = run_feedwatch(
        "validate", env={**os.environ, "FEEDWATCH_CONFIG": str(tmp_path / "nope.toml")}
    )
    assert r.returncode == 2
    assert r.stderr == (
        f"{tmp_path}/nope.toml (from $FEEDWATCH_CONFIG): cannot read: No such file or directory\n"
    )
    r = run_feedwatch("-c", str(tmp_path / "nope.toml"), "validate")  # -c: named by the user
    assert r.stderr == f"{tmp_path}/nope.toml: cannot read: No such file or directory\n"


# A German feed whose UTF-8 body says it is windows-1252 (its XML declaration; a CMS
# template's). Each text beyond ASCII has a character windows-1252 reads otherwise than
# ISO-8859-1 ("Ü" as "Ãœ", "—" as "â€”"), which feedparser could not put back.
_GERMAN = [
    ("m1", "Über den Fluss", "Café crème — résumé"),
    ("m2", "Zürich – Dnipró", "Crème brûlée, 5 €"),
    ("m3", "Plain title", "plain text"),
]


def _german(*items: tuple[str, str, str], built: str = "06:00", lead: str = "") -> bytes:
    body = "".join(
        f"<item><guid>urn:de:{g}</guid><link>https://news.example.de/{g}</link>"
        f"<title>{title}</title><description>{text}</description>"
        "<pubDate>Fri, 22 Nov 2024 09:00:00 GMT</pubDate></item>"
        for g, title, text in (_GERMAN + list(items))
    )
    return (
        f'{lead}<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel>'
        "<title>Nachrichten</title><link>https://news.example.de/</link><description>d"
        f"</description><lastBuildDate>Mon, 02 Dec 2024 {built}:00 GMT</lastBuildDate>"
        f"{body}</channel></rss>"
    ).encode()


def test_a_utf8_feed_labelled_windows_1252_alerts_its_new_entries_alone_and_right(
    tmp_path,
    feed_server,  # noqa: F811
):
    """feedparser read a UTF-8 body labelled windows-1252 as windows-1252: every alert in
    mojibake ("Ãœber"). A later body holding a byte windows-1252 leaves undefined (the
    UTF-8 of "”" ends with 0x9D) it read whole as UTF-8, so that poll alerted every
    entry beyond ASCII as updated ("Ãœber…" -> "Über…"), and the next body without it
    all of them again; a line break before the declaration hid it, with the same
    effect. Now such a body is UTF-8: each new entry alerts once, with its text."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/news.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "news"\nurl = "{url}"\n'))
    polls = [
        _german(),  # the baseline
        _german(("m4", "„Zitat” des Tages", "Übersicht"), built="06:05"),  # 0x9D
        _german(("m5", "Straße gesperrt", "Köln"), built="06:10"),  # m4 gone: no 0x9D
        _german(("m5", "Straße gesperrt", "Köln"), built="06:15", lead="\n"),
        _german(("m5", "Straße gesperrt", "Köln – bis Montag"), built="06:20"),
    ]
    logs = []
    for body in polls:
        feed_server.set("/news.xml", body, content_type="application/rss+xml")
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        logs.append(r.stderr)
    got = [(a["kind"], a["entry"]["title"], a["entry"]["summary"]) for a in alerts(tmp_path)]
    assert got == [
        ("new", "„Zitat” des Tages", "Übersicht"),
        ("new", "Straße gesperrt", "Köln"),
        ("updated", "Straße gesperrt", "Köln – bis Montag"),
    ]
    assert all("labelled windows-1252, but the body is UTF-8: read as UTF-8" in x for x in logs)
    # a note, not a warning: nothing anyone running feedwatch can mend, and a cron
    # `-q check` mails whatever it prints
    feed_server.set("/news.xml", polls[0], content_type="application/rss+xml")
    r = fw(cfg, "-q", "check")
    assert (r.returncode, r.stderr) == (0, "")


def test_entries_stored_in_mojibake_from_a_mislabelled_feed_do_not_alert_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """The release before stored the entries of a UTF-8 feed labelled windows-1252 (or
    ISO-8859-15) in mojibake, under the current fingerprint label: "Ãœber den Fluss".
    Read right now, each differs from its row, and the first poll after the upgrade
    alerted every one as updated; an entry without a guid or a link, keyed by its
    title, as new. Now each is its row: stored again silently, as it reads now; a real
    edit in that very poll alerts once. The rows are written here as that release wrote
    them (texts, keys, fingerprints and `new` ids: checked against a run of it), and
    its parse cache is gone."""
    cfg = tmp_path / "feedwatch.toml"
    news, notices = feed_server.url("/news.xml"), feed_server.url("/notices.xml")
    cfg.write_text(
        jsonl_config(
            tmp_path,
            f'[[feeds]]\nname = "news"\nurl = "{news}"\n\n'
            f'[[feeds]]\nname = "notices"\nurl = "{notices}"\n',
        )
    )

    def notices_body(built: str) -> bytes:  # no guid, no link: keyed by title and date
        return (
            '<?xml version="1.0" encoding="ISO-8859-15"?><rss version="2.0"><channel>'
            f"<title>Avis</title><lastBuildDate>Mon, 02 Dec 2024 {built}:00 GMT</lastBuildDate>"
            "<item><title>Fermeture à Zürich — crème</title><description>Très bien"
            "</description><pubDate>Fri, 22 Nov 2024 09:00:00 GMT</pubDate></item>"
            "<item><title>Plain notice</title><description>x</description>"
            "<pubDate>Fri, 22 Nov 2024 10:00:00 GMT</pubDate></item></channel></rss>"
        ).encode()

    feed_server.set("/news.xml", _german(), content_type="application/rss+xml")
    feed_server.set("/notices.xml", notices_body("06:00"))
    assert fw(cfg, "check").returncode == 0  # the baseline, read right
    codecs = {"news": "cp1252", "notices": "iso-8859-15"}
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute(
            "SELECT feed, identity, title, summary, content, published, updated FROM entries"
        ).fetchall()
        for feed, key, title, summary, content, published, updated in rows:
            texts = [_misread(t, codecs[feed]) for t in (title, summary, content)]
            was = "v5:" + fingerprint(*texts)[3:]  # the label that release wrote
            new_key = key
            if key.startswith("c:"):
                when = datetime.fromtimestamp(published / 1e6, timezone.utc)
                snapshot = replace(entry(0), title=title, link=None, published=when)
                new_key = content_identity_at(snapshot, when, texts[0])
            times = [
                None if t is None else datetime.fromtimestamp(t / 1e6, timezone.utc)
                for t in (published, updated)
            ]
            db.execute(
                "UPDATE entries SET identity = ?, title = ?, summary = ?, content = ?,"
                " fingerprint = ?, new_alert_id = ? WHERE feed = ? AND identity = ?",
                (new_key, *texts, was, alert_id(feed, new_key, "new", was, *times), feed, key),
            )
        olds = db.execute(
            "SELECT feed, title, fingerprint, new_alert_id FROM entries ORDER BY feed, title"
        )
        assert olds.fetchall() == [  # as the release before stored them
            (
                "news",
                "Plain title",
                "v5:ea079d053571d1b8958a74aa33f1b098",
                "95b3a5dfa530b9919a2c352580269575",
            ),
            (
                "news",
                "ZÃ¼rich â€“ DniprÃ³",
                "v5:5d41dd1eb8dee8e187d561f6397101b8",
                "6588098142c9cbdbc5ee99dbd509a281",
            ),
            (
                "news",
                "Ãœber den Fluss",
                "v5:2f3ce25452c27d5a644c8a06e2d2d7d6",
                "b732725cba7c375a1f36afbb4fa61a88",
            ),
            (
                "notices",
                "Fermeture Ã\xa0 ZÃŒrich â€” crÃšme",
                "v5:5fa3e790d3dd805ec268eee9708ba4a8",
                "7d34f12b5cc98bac34cebb1222406181",
            ),
            (
                "notices",
                "Plain notice",
                "v5:e11efc66425a9b25fa8738de4db45c57",
                "2741c117ae820af6a722c8525f8f69e7",
            ),
        ]
        keys = db.execute("SELECT identity FROM entries WHERE feed = 'notices' ORDER BY title")
        assert keys.fetchall() == [
            ("c:3fb121e1a77ad8a6e80fe30acccb76d6",),
            ("c:547c22954e9d0e39b54592bef0bec1c2",),
        ]
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")

    feed_server.set(
        "/news.xml",
        _german(built="06:05").replace(b"plain text<", b"plain text, corrected<"),
        content_type="application/rss+xml",
    )
    feed_server.set("/notices.xml", notices_body("06:05"))
    out = fw(cfg, "explain", "news", "Über den Fluss").stdout
    assert "status:   changed, stored silently" in out, out
    assert "its text was stored in mojibake" in out, out
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = [(a["feed"]["name"], a["kind"], a["entry"]["title"]) for a in alerts(tmp_path)]
    assert got == [("news", "updated", "Plain title")]
    assert alerts(tmp_path)[0]["changes"] == {
        "summary": {"old": "plain text", "new": "plain text, corrected"}
    }
    with sqlite3.connect(tmp_path / "state.db") as db:
        titles = {t for (t,) in db.execute("SELECT title FROM entries")}
    assert titles == {t for _, t, _ in _GERMAN} | {"Fermeture à Zürich — crème", "Plain notice"}
    feed_server.set("/notices.xml", notices_body("06:10"))
    assert fw(cfg, "check").returncode == 0
    assert len(alerts(tmp_path)) == 1  # no more


def _bare_items(items: Sequence[tuple[str | None, str]], built: int = 0) -> bytes:
    """An RSS 2.0 body whose items have a description and, when given, a title: no
    guid, no link, no date (a microblog, a status page)."""
    body = "".join(
        "<item>"
        + (f"<title>{escape(title)}</title>" if title is not None else "")
        + f"<description>{escape(text)}</description></item>"
        for title, text in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Micro</title>'
        "<link>http://example.org/</link><description>d</description>"
        f"<lastBuildDate>Mon, 02 Dec 2024 06:{built:02}:00 GMT</lastBuildDate>"
        f"{body}</channel></rss>"
    ).encode()


def _bare_feed(tmp_path: Path, feed_server: FeedServer, items, policy: str = "auto") -> Path:  # noqa: F811
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/micro.xml")
    feed_server.set("/micro.xml", _bare_items(items))
    cfg.write_text(
        jsonl_config(
            tmp_path, f'[[feeds]]\nname = "micro"\nurl = "{url}"\nid_policy = "{policy}"\n'
        )
    )
    r = fw(cfg, "check", "--json")
    assert r.returncode == 0, r.stderr  # the baseline
    return cfg


def _check_bare(cfg: Path, feed_server: FeedServer, items, built: int) -> list[tuple]:  # noqa: F811
    """``check --json`` of the body of ``items``: the new alerts' kind, title, summary
    and changed fields."""
    before = len(alerts(cfg.parent))
    feed_server.set("/micro.xml", _bare_items(items, built))
    r = fw(cfg, "check", "--json")
    assert r.returncode == 0, r.stderr
    return [
        (a["kind"], a["entry"]["title"], a["entry"]["summary"], sorted(a["changes"]))
        for a in alerts(cfg.parent)[before:]
    ]


@pytest.mark.parametrize("policy", ["auto", "content"])
def test_posts_with_only_a_description_are_each_an_entry(tmp_path, feed_server, policy):  # noqa: F811
    """Items with only a <description> (no guid, link, title or date) all had one content
    key (a hash of the empty title, link and date): the first of the body was the entry,
    a new post at the top was reported as an edit of the one before, and every other post
    and edit was lost. Each post is an entry now; an edit of one is a new entry."""
    cfg = _bare_feed(tmp_path, feed_server, [(None, "post A"), (None, "post B")], policy)
    got = _check_bare(
        cfg,
        feed_server,
        [(None, "post C"), (None, "post A"), (None, "post B, corrected"), (None, "post D")],
        5,
    )
    assert sorted(got) == [
        ("new", "", "post B, corrected", []),
        ("new", "", "post C", []),
        ("new", "", "post D", []),
    ]
    again = [(None, "post C"), (None, "post A"), (None, "post B, corrected"), (None, "post D")]
    assert _check_bare(cfg, feed_server, again, 10) == []


def test_status_items_of_one_title_without_link_or_date_are_each_an_entry(
    tmp_path,
    feed_server,  # noqa: F811
):
    """A status page whose items are all titled "Status", without a link or a date: a new
    incident was taken for the one before it (or lost below it). Each is an entry now;
    an identical repeat is still one, and explain and preview say so."""
    eu = ("Status", "EU outage: investigating")
    cfg = _bare_feed(tmp_path, feed_server, [eu])
    us = ("Status", "US outage: investigating")
    assert _check_bare(cfg, feed_server, [us, eu], 5) == [("new", "Status", us[1], [])]
    resolved = ("Status", "EU outage: resolved")
    assert _check_bare(cfg, feed_server, [resolved, us, eu], 10) == [
        ("new", "Status", resolved[1], [])
    ]
    # a verbatim repeat is the same identity: named by explain and preview
    feed_server.set("/micro.xml", _bare_items([resolved, us, eu, us], 15))
    out = fw(cfg, "explain", "micro").stdout
    assert "1 entry of this body has the identity of another one" in out, out
    out = fw(cfg, "preview", feed_server.url("/micro.xml")).stdout
    assert "1 entry has the identity of an earlier one" in out, out
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    logged = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    said = [e for e in logged if e["event"] == "feed.repeated_identity"]
    assert [(e["feed"], e["entries"], e["policy"]) for e in said] == [("micro", 1, "content")]
    assert len(alerts(tmp_path)) == 2


def test_items_of_distinct_titles_without_link_or_date_alert_an_edit_as_updated(
    tmp_path,
    feed_server,  # noqa: F811
):
    """Titles tell these items apart: a description edit is an update, a new title new."""
    items = [("Alpha", "first text"), ("Beta", "second text")]
    cfg = _bare_feed(tmp_path, feed_server, items)
    edited = [("Alpha", "first text"), ("Beta", "second text, edited"), ("Gamma", "third")]
    assert sorted(_check_bare(cfg, feed_server, edited, 5)) == [
        ("new", "Gamma", "third", []),
        ("updated", "Beta", "second text, edited", ["summary"]),
    ]
    assert _check_bare(cfg, feed_server, edited, 10) == []


def test_entries_keyed_by_title_alone_before_are_not_new_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """The release before keyed an item without a guid, a link or a date by a hash of
    its title alone ("c:" + its title, "" and ""); its rows are written here so. The
    first changed poll after the upgrade finds each under its new key: nothing alerts
    but an edit made in that very poll (an update) and a new post."""
    items = [("Alpha", "first text"), ("Beta", "second text"), (None, "post A")]
    cfg = _bare_feed(tmp_path, feed_server, items)
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT identity, title, fingerprint FROM entries").fetchall()
        assert len(rows) == 3
        for key, title, fp in rows:
            was = "c:" + hashlib.sha256(f"{title}\x00\x00\x00".encode()).hexdigest()[:32]
            db.execute(
                "UPDATE entries SET identity = ?, new_alert_id = ? WHERE identity = ?",
                (was, alert_id("micro", was, "new", fp, None, None), key),
            )
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")  # keyed the old way too

    edited = [("Alpha", "first text"), ("Beta", "second text, edited"), (None, "post A")]
    assert _check_bare(cfg, feed_server, edited, 5) == [
        ("updated", "Beta", "second text, edited", ["summary"])
    ]
    later = [*edited, (None, "post B")]
    assert _check_bare(cfg, feed_server, later, 10) == [("new", "", "post B", [])]
    assert _check_bare(cfg, feed_server, later, 15) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (4,)


def _rakete(title: str, text: str, built: int) -> bytes:
    """A German news feed (two stories) whose first story's title and description are
    ``title`` and ``text``, written with character references as a CMS writes them."""
    items = [
        ("rakete", title, text),
        ("wetter", "Sturm an der K&#252;ste", "Windb&#246;en bis 120 km/h."),
    ]
    body = "".join(
        f"<item><guid>urn:de:{g}</guid><link>https://news.example.de/{g}</link>"
        f"<title>{t}</title><description>{d}</description>"
        "<pubDate>Fri, 22 Nov 2024 09:00:00 GMT</pubDate></item>"
        for g, t, d in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Nachrichten</title><link>https://news.example.de/</link><description>d"
        f"</description><lastBuildDate>Mon, 02 Dec 2024 06:{built:02}:00 GMT</lastBuildDate>"
        f"{body}</channel></rss>"
    ).encode()


def test_invisible_characters_a_cms_adds_alert_nothing_and_a_later_edit_once(
    tmp_path,
    feed_server,  # noqa: F811
):
    """A German CMS's hyphenation pass put soft hyphens into a story ("Hyper&#173;schall
    &#173;rakete") and a zero-width space into "Bundes&#8203;wehr": the story alerted as
    updated, "What changed" showing the same title as old and new (a word joiner, a BOM
    or a direction mark did the same). Now such a body is the same story: nothing alerts,
    the row is stored again as it is, and a real edit afterwards alerts once, naming only
    the field it changed."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/de.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "de"\nurl = "{url}"\n'))
    text = "Die {}wehr hat eine {} getestet."
    polls = [
        ("Neue Hyperschallrakete getestet", text.format("Bundes", "Hyperschallrakete")),
        (
            "Neue Hyper&#173;schall&#173;rakete getestet",
            text.format("Bundes&#8203;", "Hyper&#173;schall&#173;rakete"),
        ),
        (  # the same again
            "Neue Hyper&#173;schall&#173;rakete getestet",
            text.format("Bundes&#8203;", "Hyper&#173;schall&#173;rakete"),
        ),
        (
            "&#65279;Neue Hyper&#173;schall&#8288;rakete getestet&#8206;",
            "&#8207;" + text.format("Bundes&#8203;", "Hyper&amp;shy;schall&#173;rakete"),
        ),
    ]
    for n, (title, description) in enumerate(polls):
        feed_server.set("/de.xml", _rakete(title, description, n))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        assert alerts(tmp_path) == [], n
    # the row holds the last body's text: the edit is compared with it
    with sqlite3.connect(tmp_path / "state.db") as db:
        (stored,) = db.execute(
            "SELECT title FROM entries WHERE identity = 'g:urn:de:rakete'"
        ).fetchone()
    assert stored == "\ufeffNeue Hyper\u00adschall\u2060rakete getestet\u200e"
    edited = text.format("Bundes&#8203;", "Hyper&#173;schall&#173;rakete erfolgreich")
    feed_server.set("/de.xml", _rakete(polls[-1][0], edited, 9))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    (a,) = alerts(tmp_path)
    assert a["kind"] == "updated" and sorted(a["changes"]) == ["summary"]
    assert a["changes"]["summary"] == {
        "old": "\u200fDie Bundes\u200bwehr hat eine Hyper\u00adschall\u00adrakete getestet.",
        "new": "Die Bundes\u200bwehr hat eine Hyper\u00adschall\u00adrakete erfolgreich getestet.",
    }
    feed_server.set("/de.xml", _rakete(polls[1][0], edited, 10))
    assert fw(cfg, "check").returncode == 0
    assert len(alerts(tmp_path)) == 1  # its title losing the BOM and the marks: nothing


def test_invisible_characters_in_items_keyed_by_their_content_alert_nothing(
    tmp_path,
    feed_server,  # noqa: F811
):
    """Items without a guid, a link or a date are keyed by their title and text: a soft
    hyphen gave such an item another key, and it alerted as new. It is its row."""
    items = [("Hyperschallrakete getestet", "Die Bundeswehr testet."), ("Sturm", "Böen.")]
    cfg = _bare_feed(tmp_path, feed_server, items)
    marked = [("Hyper\u00adschall\u00adrakete getestet", "Die Bundes\u200bwehr testet."), items[1]]
    assert _check_bare(cfg, feed_server, marked, 5) == []
    assert _check_bare(cfg, feed_server, items, 10) == []


# Descriptions as publishers write them (the HTML escaped once into the XML): a type's
# parameters and an address escaped in the HTML, footnote markers stuck to a word, a
# formula with its TeX source (``_browser_news``)
_BROWSER_ITEMS = {
    1: (
        "Release 1.2",
        "<p>Adds <code>Vec&lt;u{}&gt;</code> support. Report bugs to"
        " &lt;security@example.org&gt;.</p>",
    ),
    2: (
        "Strike",
        '<p>strike on Dnipro<a class="footnote-anchor" href="#footnote-1">1</a> used a new'
        " hypersonic<sup>2</sup> missile: {} dead</p>",
    ),
    3: (
        "Euler",
        "<p><math><semantics><mrow><msup><mi>e</mi><mi>i&#960;</mi></msup><mo>+</mo><mn>1</mn>"
        '</mrow><annotation encoding="application/x-tex">e^{{i\\pi}}+1</annotation>'
        "</semantics></math> is {}</p>",
    ),
}
# each as a browser shows it, and as fingerprint v5 read it (checked against a run of it)
_BROWSER_READ = {
    1: "Adds Vec<u{}> support. Report bugs to <security@example.org>.",
    2: "strike on Dnipro 1 used a new hypersonic 2 missile: {} dead",
    3: "eiπ+1 is {}",
}
_V5_READ = {
    1: "Adds Vec support. Report bugs to .",
    2: "strike on Dnipro1 used a new hypersonic2 missile: {} dead",
    3: "eiπ+1e^{{i\\pi}}+1 is {}",
}


def _browser_news(values: dict[int, object], built: int = 0) -> bytes:
    """An RSS body of ``_BROWSER_ITEMS`` (guid, title, description), each description
    formatted with its value in ``values``."""
    body = "".join(
        f"<item><guid>urn:story:{n}</guid><title>{_BROWSER_ITEMS[n][0]}</title>"
        f"<link>https://news.example.org/{n}</link>"
        f"<description>{escape(_BROWSER_ITEMS[n][1].format(v))}</description></item>"
        for n, v in values.items()
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>'
        "<link>https://news.example.org/</link><description>d</description>"
        f"<lastBuildDate>Mon, 02 Dec 2024 06:{built:02}:00 GMT</lastBuildDate>{body}"
        "</channel></rss>"
    ).encode()


def test_escaped_text_footnotes_and_formulas_read_as_a_browser_shows_them(
    tmp_path,
    feed_server,  # noqa: F811
):
    """ "Vec&lt;u8&gt;" in a description's own markup is "Vec<u8>" (it was reduced as a
    tag: "Adds Vec support", and u8 -> u16 alerted nothing); a footnote marker stuck to a
    word ("Dnipro<a ...>1</a>", "hypersonic<sup>2</sup>") read "Dnipro1", so rules for
    "Dnipro" and "hypersonic" never hit; a MathML annotation's TeX was read after the
    formula. The alerts show the text a browser shows, the rules hit, the edit alerts."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/news.xml")
    feeds = f'[[feeds]]\nname = "news"\nurl = "{url}"\nmatch = ["war", "rust"]\n'
    rules = (
        '\n[rules.war]\nall = ["Dnipro", "hypersonic"]\n'
        '\n[rules.rust]\nany = ["u8", "u16", "security@example.org", "eiπ"]\n'
    )
    cfg.write_text(jsonl_config(tmp_path, feeds) + rules)
    feed_server.set("/news.xml", _browser_news({}))
    assert fw(cfg, "check").returncode == 0  # baseline: no entries
    feed_server.set("/news.xml", _browser_news({1: 8, 2: 3, 3: 1}, 5))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = sorted((a["entry"]["title"], a["entry"]["summary"]) for a in alerts(tmp_path))
    assert got == [
        ("Euler", _BROWSER_READ[3].format(1)),
        ("Release 1.2", _BROWSER_READ[1].format(8)),
        ("Strike", _BROWSER_READ[2].format(3)),
    ]
    matched = {a["entry"]["title"]: a["matched"][0]["rule"] for a in alerts(tmp_path)}
    assert matched == {"Euler": "rust", "Release 1.2": "rust", "Strike": "war"}
    feed_server.set("/news.xml", _browser_news({1: 16, 2: 3, 3: 1}, 10))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    a = alerts(tmp_path)[3:]
    assert [(x["kind"], x["changes"]["summary"]) for x in a] == [
        ("updated", {"old": _BROWSER_READ[1].format(8), "new": _BROWSER_READ[1].format(16)})
    ]


def _stored_as_v5(tmp_path: Path, feed: str, read: dict[str, str]) -> list[tuple]:
    """Rows of ``feed`` rewritten as fingerprint v5 stored them: each summary the v5
    reading of ``read`` (the summary as read now -> as v5 read it), under its label; an
    entry keyed by its content (no guid, link or date) under the key of that text. The
    (identity, summary, fingerprint, new alert id) of each row, by summary."""
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute(
            "SELECT identity, title, summary, content FROM entries WHERE feed = ?", (feed,)
        ).fetchall()
        for key, title, summary, content in rows:
            was = "v5:" + fingerprint(title, read[summary], content)[3:]
            new_key = key
            if key.startswith("c:"):
                snapshot = EntrySnapshot(
                    entry_id=None, title=title, summary=read[summary], content=content
                )
                new_key = content_identity_at(snapshot, None)
            db.execute(
                "UPDATE entries SET identity = ?, summary = ?, fingerprint = ?, new_alert_id = ?"
                " WHERE feed = ? AND identity = ?",
                (
                    new_key,
                    read[summary],
                    was,
                    alert_id(feed, new_key, "new", was, None, None),
                    feed,
                    key,
                ),
            )
        got = db.execute(
            "SELECT identity, summary, fingerprint, new_alert_id FROM entries WHERE feed = ?"
            " ORDER BY summary",
            (feed,),
        )
        return [tuple(r) for r in got.fetchall()]


# Status items without a guid, a link or a date, all titled alike: keyed by their text
_STATUS = [
    ("Status", "<p>Queue &lt;eu-west&gt; degraded</p>"),
    ("Status", "<p>Kyiv<sup>1</sup></p>"),
]


def test_entries_stored_by_fingerprint_v5_do_not_alert_after_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """Fingerprint v5 read "Vec&lt;u8&gt;" in a description's markup as a tag, joined a
    footnote marker to its word and read a MathML annotation: its rows hold those
    readings. The first poll after the upgrade that compares them (a lastBuildDate
    moved) stores them again silently, whole, under v6; an item keyed by its text (no
    guid, link or date; its title no other's) is found under the key v5's reading gave
    it, not new. A real edit then alerts, once. The rows are written here as v5 stored
    them (texts, keys, fingerprints and `new` ids: checked against a run of it), and the
    parse cache is gone (one of an older parser version is never used)."""
    cfg = tmp_path / "feedwatch.toml"
    news, status = feed_server.url("/news.xml"), feed_server.url("/micro.xml")
    cfg.write_text(
        jsonl_config(
            tmp_path,
            f'[[feeds]]\nname = "news"\nurl = "{news}"\n\n'
            f'[[feeds]]\nname = "micro"\nurl = "{status}"\n',
        )
    )
    values = {1: 8, 2: 3, 3: 1}
    feed_server.set("/news.xml", _browser_news(values))
    feed_server.set("/micro.xml", _bare_items(_STATUS))
    assert fw(cfg, "check").returncode == 0  # baseline
    read = {_BROWSER_READ[n].format(v): _V5_READ[n].format(v) for n, v in values.items()}
    assert [row[2:] for row in _stored_as_v5(tmp_path, "news", read)] == [
        ("v5:a148d75dd869ad22bacf756ac2b6924b", "3e5a8876ad6d5a9294a5ef4ea4765ea0"),
        ("v5:7fadfb6581b1cda6217abab6197cfe53", "32ec3d0df2046b407c98b158cc082543"),
        ("v5:0eb53391a3da7b2b96a4593d5dc606e0", "afb61c1da8b0ccaca66d9144a63eea98"),
    ]
    status_read = {"Queue <eu-west> degraded": "Queue degraded", "Kyiv 1": "Kyiv1"}
    assert _stored_as_v5(tmp_path, "micro", status_read) == [
        (
            "c:e909e3389bcb21189de2e13e0df95dbc",
            "Kyiv1",
            "v5:c9e2ef24fe78f29d41e2652dd3f303ac",
            "29e2fabd7ba93d58b4a84a638a11f58e",
        ),
        (
            "c:8eb056bc8ccb8951d45a9af0c46c20ef",
            "Queue degraded",
            "v5:d48422d7c8e068a8dbe4b3d8d704e319",
            "d3ff7ab6e55f4f68f1023053ae93019f",
        ),
    ]
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}")

    feed_server.set("/news.xml", _browser_news(values, 5))
    feed_server.set("/micro.xml", _bare_items(_STATUS, 5))
    out = fw(cfg, "explain", "news", "Release 1.2").stdout
    assert "status:   changed, stored silently" in out, out
    assert "stored under fingerprint v5, which read escaped markup in HTML as tags" in out, out
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute(
            "SELECT feed, summary, substr(fingerprint, 1, 3) FROM entries ORDER BY feed, summary"
        )
        assert rows.fetchall() == [
            ("micro", "Kyiv 1", "v8:"),
            ("micro", "Queue <eu-west> degraded", "v8:"),
            ("news", _BROWSER_READ[1].format(8), "v8:"),
            ("news", _BROWSER_READ[3].format(1), "v8:"),
            ("news", _BROWSER_READ[2].format(3), "v8:"),
        ]

    edited = {1: 16, 2: 3, 3: 1}
    for built in (10, 15):
        feed_server.set("/news.xml", _browser_news(edited, built))
        feed_server.set("/micro.xml", _bare_items(_STATUS, built))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
    got = [(a["kind"], a["entry"]["title"], a["changes"]["summary"]) for a in alerts(tmp_path)]
    assert got == [
        (
            "updated",
            "Release 1.2",
            {"old": _BROWSER_READ[1].format(8), "new": _BROWSER_READ[1].format(16)},
        )
    ]


_WP_TITLES = (
    "Why the &lt;dialog&gt; element matters",
    "Serde now supports Vec&lt;u8&gt; fields",
    "Plain title",
)


def _wordpress_feed(atom: bool, updated: int = 0) -> bytes:
    """WordPress's feeds of three posts, two whose titles name a tag: RSS writes the
    title as text, escaped once; Atom as HTML in CDATA, escaped inside it."""
    if atom:
        entries = "".join(
            f'<entry><id>https://wp.example.org/?p={i}</id><title type="html"><![CDATA[{t}]]>'
            f'</title><link rel="alternate" href="https://wp.example.org/p{i}/"/>'
            f"<published>2024-12-02T0{i}:00:00Z</published><updated>2024-12-02T0{i}:00:00Z"
            f'</updated><content type="html"><![CDATA[<p>Post {i}.</p>]]></content></entry>'
            for i, t in enumerate(_WP_TITLES)
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            "<title>WP</title><id>https://wp.example.org/</id>"
            f"<updated>2024-12-02T06:{updated:02}:00Z</updated>{entries}</feed>"
        ).encode()
    items = "".join(
        f"<item><title>{t}</title><link>https://wp.example.org/p{i}/</link>"
        f'<guid isPermaLink="false">https://wp.example.org/?p={i}</guid>'
        f"<pubDate>Mon, 02 Dec 2024 0{i}:00:00 +0000</pubDate>"
        f"<content:encoded><![CDATA[<p>Post {i}.</p>]]></content:encoded></item>"
        for i, t in enumerate(_WP_TITLES)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>WP</title>'
        "<link>https://wp.example.org/</link><description>d</description>"
        f"<lastBuildDate>Mon, 02 Dec 2024 06:{updated:02}:00 GMT</lastBuildDate>{items}"
        "</channel></rss>"
    ).encode()


def test_titles_naming_a_tag_read_as_a_browser_shows_them_across_upgrade_and_formats(
    tmp_path,
    feed_server,  # noqa: F811
):
    """WordPress's Atom titles ("Why the &lt;dialog&gt; element matters", HTML in CDATA)
    read "Why the element matters" (fingerprint v6): `keywords = ["dialog"]` missed the
    post, and a blog moving between its RSS feed (read whole) and its Atom feed alerted
    an update per such post. Now both read "Why the <dialog> element matters": the rule
    hits, rows as v6 stored them (its reading, label) are stored again silently under
    v7, and a switch to RSS and back alerts nothing (the Atom updated times, lost and
    gained by every entry at once, are timestamp churn)."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/wp.xml")
    cfg.write_text(
        jsonl_config(
            tmp_path,
            f'[[feeds]]\nname = "wp"\nurl = "{url}"\nfirst_poll = "alert"\nkeywords = ["dialog"]\n',
        )
    )
    feed_server.set("/wp.xml", _wordpress_feed(True))
    assert fw(cfg, "check").returncode == 0
    got = [a["entry"]["title"] for a in alerts(tmp_path)]
    assert got == ["Why the <dialog> element matters"]
    # the rows as v6 stored them: its reading of the titles, its label
    with sqlite3.connect(tmp_path / "state.db") as db:
        v6 = {"Why the <dialog> element matters": "Why the\n\nelement matters"}
        v6["Serde now supports Vec<u8> fields"] = "Serde now supports Vec fields"
        v6["Plain title"] = "Plain title"
        for key, title, summary, content in db.execute(
            "SELECT identity, title, summary, content FROM entries WHERE feed = 'wp'"
        ).fetchall():
            was = "v6:" + fingerprint(v6[title], summary, content)[3:]
            db.execute(
                "UPDATE entries SET title = ?, fingerprint = ? WHERE feed = 'wp' AND identity = ?",
                (v6[title], was, key),
            )
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}", ignore_errors=True)
    for atom, built in ((True, 5), (False, 10), (True, 15)):
        feed_server.set("/wp.xml", _wordpress_feed(atom, built))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        assert len(alerts(tmp_path)) == 1, (atom, built)
        with sqlite3.connect(tmp_path / "state.db") as db:
            rows = db.execute("SELECT title, substr(fingerprint, 1, 3) FROM entries ORDER BY title")
            assert rows.fetchall() == [
                ("Plain title", "v8:"),
                ("Serde now supports Vec<u8> fields", "v8:"),
                ("Why the <dialog> element matters", "v8:"),
            ]


# Stories as learners' news writes them (NHK News Web Easy): every kanji word with its
# reading in <ruby>, per character or per word, with <rp> brackets or without; and, as
# fingerprint v6 read them, with the readings inline.
_RUBY_STORIES = (
    (
        "<p><ruby>北<rt>きた</rt>朝<rt>ちょう</rt>鮮<rt>せん</rt></ruby>がミサイルを"
        "<ruby>発<rt>はっ</rt>射<rt>しゃ</rt></ruby>しました</p>",
        "北朝鮮がミサイルを発射しました",
        "北きた朝ちょう鮮せんがミサイルを発はっ射しゃしました",
    ),
    (
        "<p><ruby>天気<rp>(</rp><rt>てんき</rt><rp>)</rp></ruby>は<ruby>晴<rt>は</rt></ruby>れ</p>",
        "天気は晴れ",
        "天気(てんき)は晴はれ",
    ),
    ("<p>Plain story</p>", "Plain story", "Plain story"),
)


def test_ruby_readings_are_not_read_into_the_words_across_the_upgrade(
    tmp_path,
    feed_server,  # noqa: F811
):
    """Japanese with per-character <ruby> read "北きた朝ちょう鮮せん...": `keywords =
    ["北朝鮮"]` missed the story and an alert showed the readings glued into the words.
    Now the readings go (a browser shows them above the words): the rule hits, the alert
    reads "北朝鮮がミサイルを発射しました"; rows as v6 stored them (its reading, its
    label) are stored again silently under v7, and a later edit alerts once."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/easy.xml")
    cfg.write_text(
        jsonl_config(
            tmp_path,
            f'[[feeds]]\nname = "easy"\nurl = "{url}"\nfirst_poll = "alert"\n'
            'keywords = ["北朝鮮"]\n',
        )
    )

    def body(first: str = _RUBY_STORIES[0][0], built: int = 0) -> bytes:
        htmls = [first] + [h for h, _, _ in _RUBY_STORIES[1:]]
        items = [entry(i, title=f"ニュース {i}", summary=h) for i, h in enumerate(htmls)]
        return rss(items, title=f"Easy news, built {built}")

    feed_server.set("/easy.xml", body())
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    got = [(a["entry"]["title"], a["entry"]["summary"]) for a in alerts(tmp_path)]
    assert got == [("ニュース 0", "北朝鮮がミサイルを発射しました")]
    preview = fw(cfg, "preview", url, "--keywords", "北朝鮮")
    assert preview.returncode == 0, preview.stderr
    assert "hits: 北朝鮮 (summary)" in preview.stdout, preview.stdout
    assert "1 of 3 entries hit" in preview.stdout, preview.stdout
    # the rows as v6 stored them: its reading of the summaries, its label
    v6 = {text: was for _, text, was in _RUBY_STORIES}
    with sqlite3.connect(tmp_path / "state.db") as db:
        for key, title, summary, content in db.execute(
            "SELECT identity, title, summary, content FROM entries WHERE feed = 'easy'"
        ).fetchall():
            was = "v6:" + fingerprint(title, v6[summary], content)[3:]
            db.execute(
                "UPDATE entries SET summary = ?, fingerprint = ? WHERE feed = 'easy' AND identity = ?",
                (v6[summary], was, key),
            )
    shutil.rmtree(f"{tmp_path}/state.db{parsecache.SUFFIX}", ignore_errors=True)
    feed_server.set("/easy.xml", body(built=1))  # a body changed elsewhere: read again
    told = fw(cfg, "explain", "easy", "ニュース 0")
    assert told.returncode == 0, told.stderr
    assert "stored under fingerprint v6" in told.stdout and "ruby" in told.stdout, told.stdout
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert len(alerts(tmp_path)) == 1, alerts(tmp_path)
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT summary, substr(fingerprint, 1, 3) FROM entries ORDER BY title")
        assert rows.fetchall() == [(text, "v8:") for _, text, _ in _RUBY_STORIES]
    # an edit since alerts, once
    edited = _RUBY_STORIES[0][0].replace("しました", "したと発表")
    feed_server.set("/easy.xml", body(edited, built=2))
    assert fw(cfg, "check").returncode == 0
    got = [(a["kind"], a["entry"]["summary"]) for a in alerts(tmp_path)[1:]]
    assert got == [("updated", "北朝鮮がミサイルを発射したと発表")]
    assert fw(cfg, "check").returncode == 0
    assert len(alerts(tmp_path)) == 2


def test_an_entry_back_after_retention_alerts_again_before_any_upkeep_drops_its_alert(
    tmp_path,
    feed_server,  # noqa: F811
):
    """docs/change-detection.md: "With one `retention` for both, an entry back after it
    alerts again once its first alert ... has been dropped". `check` drops old alerts
    after it polls: an entry back unchanged at the first check past `retention` made its
    first alert's id, still recorded; the insert was ignored, the entry stored as known,
    and it never alerted again (`1 new, 0 alerts`). The poll now drops that old alert
    itself (delivered, older than the global `retention`) and queues the new one; a
    `--dry-run` promises it (its claim of `duplicates = "skip"` goes with it)."""
    feeds = f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/f.xml")}"\nduplicates = "skip"\n'
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(jsonl_config(tmp_path, feeds, 'retention = "4h"\njitter = "0s"'))
    with_b = rss([entry("a"), entry("b", title="Beta"), entry("c")])
    without = rss([entry("a"), entry("c")])

    def check(body: bytes) -> list[tuple[str, str]]:
        before = len(alerts(tmp_path))
        feed_server.set("/f.xml", body)
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        return [(a["kind"], a["id"]) for a in alerts(tmp_path)[before:]]

    assert check(without) == []  # the baseline
    first = check(with_b)
    assert [k for k, _ in first] == ["new"]
    assert check(without) == []  # B leaves
    age_state(tmp_path / "state.db", 5 * 3600)
    feed_server.set("/f.xml", with_b)
    dry = fw(cfg, "check", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert [json.loads(line)["id"] for line in dry.stdout.splitlines()] == [first[0][1]]
    # explain agrees with the poll to come: it said the id was alerted before, for good
    told = fw(cfg, "explain", "f", "Beta")
    assert told.returncode == 0 and "the next poll alerts it as 'new'" in told.stdout, told.stdout
    assert "alerted before" not in told.stdout, told.stdout
    assert check(with_b) == first  # back after retention: its first alert's id, sent again
    assert check(without) == [] and check(with_b) == []  # known again: once
    r = fw(cfg, "explain", "f", "Beta")
    assert r.returncode == 0 and "was pruned" not in r.stdout, r.stdout


@pytest.mark.parametrize("guids", [False, True])
def test_a_feed_that_rewrites_its_dates_by_a_zone_offset_alerts_nothing(
    tmp_path,
    feed_server,  # noqa: F811
    guids,
):
    """Items without a guid or a link are keyed by title, link and published time. The
    site wrote the same wall-clock dates with another offset (a CMS fixing its zone,
    dates re-rendered after a DST change): every instant moved an hour, every key
    changed, and `check` alerted each entry as new ("3 new ... 3 alerts"), `explain`
    listing each twice. It is timestamp churn, stored silently, as with guids; the
    next poll is quiet. One entry re-dated alone alerts once, with guids or without."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/cms.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "cms"\nurl = "{url}"\n'))

    def body(zones: Sequence[str]) -> bytes:
        items = "".join(
            f"<item><title>Story {i}</title>"
            + (f"<guid>urn:story:{i}</guid>" if guids else "")
            + f"<description>Text {i}.</description>"
            f"<pubDate>Fri, 22 Nov 2024 1{i}:40:17 {zone}</pubDate></item>"
            for i, zone in enumerate(zones)
        )
        return (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>CMS</title>'
            f"<link>https://cms.example.org/</link><description>d</description>{items}"
            "</channel></rss>"
        ).encode()

    feed_server.set("/cms.xml", body(["-0400"] * 3))
    assert fw(cfg, "check").returncode == 0
    assert alerts(tmp_path) == []
    feed_server.set("/cms.xml", body(["-0500"] * 3))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    explained = fw(cfg, "explain", "cms", "Story 1").stdout
    # one item, its own row (it listed the row of the old key too, "not in the feed now")
    assert "unchanged since last seen" in explained, explained
    assert "not in the feed now" not in explained, explained
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT published FROM entries ORDER BY published").fetchall()
    assert [p for (p,) in rows] == [
        int(datetime(2024, 11, 22, 15 + h, 40, 17, tzinfo=timezone.utc).timestamp()) * 10**6
        for h in range(3)
    ]
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    assert alerts(tmp_path) == []
    # one entry re-dated alone: one alert
    feed_server.set("/cms.xml", body(["-0600", "-0500", "-0500"]))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr
    # (with a guid an update of its time; without, a new entry, as its key says)
    assert [
        (a["kind"], a["entry"]["title"], a["entry"]["published"]) for a in alerts(tmp_path)
    ] == [("updated" if guids else "new", "Story 0", "2024-11-22T16:40:17Z")]


def test_a_gone_feed_gets_one_stale_notice_from_check_and_recovered_when_back(
    tmp_path,
    feed_server,  # noqa: F811
):
    """`check` skipped a feed that answered 410 and never judged its staleness: it never
    polled successfully again, yet no `stale` notice ever came (a 404 brought one)."""
    feed_server.set("/f", rss([entry(1)]))
    cfg = tmp_path / "feedwatch.toml"
    feed = f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/f")}"\n'
    cfg.write_text(jsonl_config(tmp_path, feed))
    assert fw(cfg, "check").returncode == 0  # its baseline, its last success
    feed_server.set("/f", b"gone", status=410)
    r = fw(cfg, "check")
    assert r.returncode == 1 and "error f: HTTP 410 Gone" in r.stderr, r.stderr
    # stale_after from now on: the poll that met the 410 cannot have sent the notice
    cfg.write_text(jsonl_config(tmp_path, feed, 'stale_after = "1s"'))

    def stale() -> list[dict]:
        return [a for a in alerts(tmp_path) if a["kind"] == "stale"]

    def checked_stale() -> list[dict]:
        r = fw(cfg, "check")
        assert r.returncode == 0 and "skipped f: gone (HTTP 410)" in r.stderr, r.stderr
        return stale()

    [notice] = wait_for(checked_stale, timeout=20, what="the gone feed's stale notice")
    assert notice["message"].startswith("feed 'f' looks stale: no successful poll for ")
    assert notice["message"].endswith("(last error: HTTP 410 Gone)"), notice["message"]
    assert "skipped f: gone" in fw(cfg, "check").stderr
    assert len(stale()) == 1  # once, not at every check
    # back: `check --feed` polls it again, with a new entry
    feed_server.set("/f", rss([entry(1), entry(2)]))
    r = fw(cfg, "check", "--feed", "f")
    assert r.returncode == 0, r.stderr
    assert [a["kind"] for a in alerts(tmp_path)].count("recovered") == 1
    assert len(stale()) == 1


def test_a_gone_feed_forgotten_reads_as_due_not_as_failing(tmp_path, feed_server):  # noqa: F811
    """`forget` resumes a feed stopped by a 410 (docs/troubleshooting.md), yet `status`
    then showed it `error  410 ... NEXT POLL -` and `status --check` exited 1 until its
    next poll (the daemon's, seconds later; a cron `check`'s, minutes): forget cleared
    the 410 but kept the error it counted. The 410 goes with it: the feed reads as due
    to be polled (no HTTP status, no error, no next poll time: at once)."""
    feed_server.set("/f", rss([entry(1)]))
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        jsonl_config(tmp_path, f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/f")}"\n')
    )
    assert fw(cfg, "check").returncode == 0
    feed_server.set("/f", b"gone", status=410)
    assert fw(cfg, "check").returncode == 1
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert (row["state"], row["http_status"], row["errors"]) == ("gone", 410, 1), row
    assert fw(cfg, "status", "--check").returncode == 1

    assert fw(cfg, "forget", "f").returncode == 0
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert row["state"] == "ok", row
    assert (row["http_status"], row["errors"], row["last_error"], row["next_poll"]) == (
        None,
        0,
        None,
        None,
    ), row
    assert row["last_poll"] and row["last_success"], row  # (it was polled: not `new`)
    r = fw(cfg, "status", "--check")
    assert r.returncode == 0, r.stdout
    assert r.stdout.splitlines()[1].split()[:3] == ["f", "ok", "-"], r.stdout
    assert "410" not in r.stdout, r.stdout

    feed_server.set("/f", rss([entry(1), entry(2)]))
    assert fw(cfg, "check").returncode == 0  # its baseline again
    (row,) = json.loads(fw(cfg, "status", "--json").stdout)["feeds"]
    assert (row["state"], row["http_status"], row["entries"]) == ("ok", 200, 2), row
    assert row["next_poll"], row


def test_a_feed_held_off_by_retry_after_gets_its_stale_notice_from_check(
    tmp_path,
    feed_server,  # noqa: F811
):
    """`check` skipped a feed whose server answered 429 with `Retry-After: 86400` and never
    judged its staleness: a server saying so day after day never brought the `stale`
    notice that `stale_after` promises (a 410 Gone or a 404 did)."""
    feed_server.set("/f", rss([entry(1)]))
    cfg = tmp_path / "feedwatch.toml"
    feed = f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/f")}"\n'
    cfg.write_text(jsonl_config(tmp_path, feed))
    assert fw(cfg, "check").returncode == 0  # its baseline, its last success
    feed_server.set("/f", b"slow down", status=429, headers={"Retry-After": "86400"})
    r = fw(cfg, "check")
    assert r.returncode == 1 and "error f: HTTP 429" in r.stderr, r.stderr
    # stale_after from now on: the poll that met the 429 cannot have sent the notice
    cfg.write_text(jsonl_config(tmp_path, feed, 'stale_after = "1s"'))

    def stale() -> list[dict]:
        return [a for a in alerts(tmp_path) if a["kind"] == "stale"]

    def checked_stale() -> list[dict]:
        r = fw(cfg, "check")
        assert r.returncode == 0 and "skipped f: the server asked" in r.stderr, r.stderr
        return stale()

    [notice] = wait_for(checked_stale, timeout=20, what="the held-off feed's stale notice")
    assert notice["message"].startswith("feed 'f' looks stale: no successful poll for ")
    assert "(last error: HTTP 429" in notice["message"], notice["message"]
    assert "(Retry-After)" in fw(cfg, "check").stderr
    assert len(stale()) == 1  # once, not at every check
    assert feed_server.count("/f") == 2  # and never polled meanwhile


@pytest.mark.parametrize("n", [1, 2])
def test_a_feed_that_dates_its_items_with_each_requests_time_alerts_nothing(
    tmp_path,
    feed_server,  # noqa: F811
    n,
):
    """A generated feed (a status page, a script's RSS output) of items without a guid
    or a link, each dated with the time of the request: the items are keyed by title,
    link and published time, so every `check` gave each a new key and alerted each as
    new, at every poll. Each is its row re-stamped: no alert, one row an item. A text
    edit still alerts; a notice of one text dated otherwise (daily, at 02:00) is new."""
    cfg = tmp_path / "feedwatch.toml"
    url = feed_server.url("/status.xml")
    cfg.write_text(jsonl_config(tmp_path, f'[[feeds]]\nname = "status"\nurl = "{url}"\n'))
    served: list[str] = []

    def serve(text: str = "All systems operational.", when: datetime | None = None) -> None:
        """The body as the feed builds it at a request now (a new second each time)."""
        if when is None:
            wait_for(lambda: format_datetime(datetime.now(timezone.utc), usegmt=True) not in served)
        date = format_datetime(when or datetime.now(timezone.utc), usegmt=True)
        served.append(date)
        items = "".join(
            f"<item><title>Service {i}</title><description>{text}</description>"
            f"<pubDate>{date}</pubDate></item>"
            for i in range(n)
        )
        feed_server.set(
            "/status.xml",
            '<?xml version="1.0"?><rss version="2.0"><channel><title>Status</title>'
            f"<link>https://status.example.org/</link><description>d</description>{items}"
            "</channel></rss>",
        )

    def check() -> list[tuple[str, str]]:
        before = len(alerts(tmp_path))
        r = fw(cfg, "check")
        assert r.returncode == 0, r.stderr
        return [(a["kind"], a["entry"]["title"]) for a in alerts(tmp_path)[before:]]

    serve()
    assert check() == []  # the baseline
    for _ in range(3):
        serve()
        assert check() == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone() == (n,)
    serve("Degraded performance.")  # an edit: each item is another
    assert check() == [("new", f"Service {i}") for i in range(n)]
    serve("Degraded performance.")
    assert check() == []
    # the same text, dated 02:00 of each day (not when the feed is requested): new
    for day in (20, 21):
        serve("Degraded performance.", datetime(2024, 11, day, 2, tzinfo=timezone.utc))
        assert check() == [("new", f"Service {i}") for i in range(n)]
