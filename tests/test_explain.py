"""`feedwatch explain FEED [ENTRY]`: real subprocesses, a real state file, the 127.0.0.1 feed server.

The strongest check: the alert id `explain` predicts for a new entry is the id the
next `check` really sends, and `explain` writes nothing to the state.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from feedwatch.testing import T0, entry, rss
from tests.feedserver import FeedServer, feed_server_fixture  # noqa: F401
from tests.helpers import age_state, bare_env, run_feedwatch, wait_for

BASE = [entry(1, title="Markets open"), entry(2, title="Hypersonic test reported")]
STRIKE = entry(3, title="Hypersonic missile strike on Dnipro")
STRIKE_UPDATED = entry(
    3,
    title="Hypersonic missile strike on Dnipro",
    updated=T0 + timedelta(hours=5, minutes=16, seconds=28),
    summary="Casualties reported.",
)


def fw(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_feedwatch("-c", str(cfg), *args, env=bare_env(cfg.parent))


def write_config(tmp: Path, srv: FeedServer, feeds: str | None = None) -> Path:
    cfg = tmp / "feedwatch.toml"
    default_feeds = f"""
[[feeds]]
name = "news"
url = "{srv.url("/news.xml")}"
match = ["missiles"]
sinks = ["log", "broken"]
"""
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp}/state.db"
log_format = "json"
jitter = "0s"

[rules.missiles]
any = ["hypersonic", "missile*"]
not = ["video game"]

[sinks.log]
type = "jsonl"
path = "{tmp}/alerts.jsonl"

[sinks.broken]
type = "command"
argv = ["{tmp}/no-such-program"]
{default_feeds if feeds is None else feeds}
""",
        encoding="utf-8",
    )
    return cfg


def sqlite_rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def snapshot(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("feeds", "entries", "alerts", "deliveries")
        }
    finally:
        conn.close()


def sent(tmp: Path) -> list[dict]:
    path = tmp / "alerts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def setup(tmp_path, feed_server):
    feed_server.set("/news.xml", rss(BASE, title="Test News"))
    return tmp_path, feed_server, write_config(tmp_path, feed_server)


def test_before_the_first_poll_everything_is_a_baseline(setup):
    tmp, srv, cfg = setup
    r = fw(cfg, "explain", "news")
    assert r.returncode == 0, r.stderr
    assert "state: never polled (nothing stored)" in r.stdout
    assert "fetched " in r.stdout and "HTTP 200, 2 entries" in r.stdout
    rows = [line for line in r.stdout.splitlines() if "baseline" in line and "new" in line]
    assert len(rows) == 2
    r = fw(cfg, "explain", "news", "hypersonic")
    assert "status:   NEW (not in the state)" in r.stdout
    assert 'first_poll = "baseline" records every entry without alerting' in r.stdout
    assert not (tmp / "state.db").exists()  # explain creates no state


def test_new_entry_predicted_alert_id_is_the_one_sent(setup):
    tmp, srv, cfg = setup
    assert fw(cfg, "check").returncode == 0

    r = fw(cfg, "explain", "news", "Hypersonic test")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "identity: g:urn:entry:2  (its guid)" in out
    assert 'id_policy = "auto", in use: guid' in out
    assert "status:   unchanged since last seen" in out
    assert "the feed's first poll, a baseline" in out
    assert "alerts recorded: none" in out

    srv.set("/news.xml", rss([*BASE, STRIKE], title="Test News"))
    before = snapshot(tmp / "state.db")
    r = fw(cfg, "explain", "news", "strike on dnipro")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Entry: Hypersonic missile strike on Dnipro" in out
    assert "status:   NEW (not in the state)" in out
    assert "state:    nothing stored for it" in out
    assert "missiles: MATCHED (matched: 'hypersonic' (title), 'missile*' (title))" in out
    assert re.search(r"any hypersonic\s+hit in title", out)
    assert re.search(r"not video game\s+missed", out)
    m = re.search(r"the next poll alerts it as 'new' \(id ([0-9a-f]{32})\) to: log, broken", out)
    assert m, out
    predicted = m.group(1)
    assert snapshot(tmp / "state.db") == before  # read-only

    r = fw(cfg, "check")
    assert r.returncode == 1  # the command sink cannot start: dead
    (alert,) = sent(tmp)
    assert alert["id"] == predicted

    r = fw(cfg, "explain", "news", "https://example.org/3")  # by link
    out = r.stdout
    assert "status:   unchanged since last seen" in out
    assert "it was alerted before: see below" in out
    assert f"new {predicted} [missiles: hypersonic, missile*]" in out
    assert re.search(r"log: delivered \d{4}-", out)
    assert "broken: DEAD after 1 attempt: sink broken: cannot start" in out
    assert "feedwatch redeliver --sink broken" in out

    r = fw(cfg, "explain", "news")  # the brief list
    line = next(x for x in r.stdout.splitlines() if "strike on Dnipro" in x)
    assert "unchanged" in line and "alerted, delivery DEAD" in line
    line = next(x for x in r.stdout.splitlines() if "Markets open" in x)
    assert "no rule matched" in line

    # updated: the timestamp moved and the summary changed
    srv.set("/news.xml", rss([*BASE, STRIKE_UPDATED], title="Test News"))
    r = fw(cfg, "explain", "news", "urn:entry:3")  # by id
    out = r.stdout
    assert "status:   UPDATED since last seen" in out
    assert "summary: Summary of entry 3.  ->  Casualties reported." in out
    assert "updated: -  ->  2024-11-22T15:56:45Z" in out
    m = re.search(r"the next poll alerts it as 'updated' \(id ([0-9a-f]{32})\)", out)
    assert m, out
    assert fw(cfg, "check").returncode == 1
    assert sent(tmp)[-1]["id"] == m.group(1)
    assert sent(tmp)[-1]["kind"] == "updated"


def test_entries_that_do_not_match_and_lookup_failures(setup):
    tmp, srv, cfg = setup
    assert fw(cfg, "check").returncode == 0
    srv.set("/news.xml", rss([*BASE, entry(9, title="Video game about a hypersonic jet")]))
    r = fw(cfg, "explain", "news", "video game")
    out = r.stdout
    assert "missiles: no match ('not' term 'video game' (title) hit)" in out
    assert "verdict:  no rule matched this version: no alert" in out

    r = fw(cfg, "explain", "news", "nothing like this")
    assert r.returncode == 1
    assert "no entry of 'news' matches 'nothing like this'" in r.stderr

    r = fw(cfg, "explain", "nope")
    assert r.returncode == 2
    assert "unknown feed 'nope' (configured: news)" in r.stderr


def test_a_limit_below_one_is_refused_as_alerts_refuses_it(setup):
    """`explain FEED --limit 0` (or -2) printed its header, "Latest entries (0 of 2)",
    then a traceback (max() of an empty list) and exited 1, SPEC's "no match". It is
    refused as `alerts --limit 0` is: exit 2, before fetching anything."""
    tmp, srv, cfg = setup
    assert fw(cfg, "check").returncode == 0
    hits = srv.count("/news.xml")
    for bad in ("0", "-2"):
        r = fw(cfg, "explain", "news", "--limit", bad)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert f"--limit {bad}: give a number of entries, 1 or more" in r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        r = fw(cfg, "explain", "news", "--limit", bad, "--no-fetch")
        assert r.returncode == 2 and "Traceback" not in r.stderr
    assert srv.count("/news.xml") == hits  # refused before the fetch
    r = fw(cfg, "explain", "news", "--limit", "1")
    assert r.returncode == 0, r.stderr
    assert "Latest entries (1 of 2), newest first:" in r.stdout


def test_an_entry_repeating_another_ones_id_is_named_as_such_in_any_order(setup):
    tmp, srv, cfg = setup
    more = [*BASE, *(entry(n) for n in range(10, 20))]  # ids 90% distinct: guid stays
    srv.set("/news.xml", rss(more, title="Test News"))
    assert fw(cfg, "check").returncode == 0
    first = entry(3, title="Hypersonic missile, first copy")
    second = entry(3, title="Hypersonic missile, second copy", link="https://example.org/3b")
    srv.set("/news.xml", rss([first, second, *more], title="Test News"))
    fw(cfg, "check")  # (exit 1: the config's "broken" sink)
    assert [a["entry"]["title"] for a in sent(tmp)] == ["Hypersonic missile, first copy"]
    # the stored one is the entry in either order: the other is the copy
    for body in ([first, second, *more], [second, first, *more]):
        srv.set("/news.xml", rss(body, title="Test News"))
        for query in ("second copy", "https://example.org/3b"):
            r = fw(cfg, "explain", "news", query)
            assert r.returncode == 0, r.stderr
            assert "Entry: Hypersonic missile, second copy" in r.stdout
            assert "status:   another copy of an entry's identity" in r.stdout
            assert "the entry is the one likest its stored version" in r.stdout
            assert "alerts recorded" not in r.stdout  # the first copy's are not its own
        r = fw(cfg, "explain", "news", "first copy")
        assert "status:   unchanged since last seen" in r.stdout
        assert "alerts recorded:\n" in r.stdout


def test_an_entry_re_keyed_when_its_feed_starts_giving_ids_keeps_its_alerts(setup):
    tmp, srv, cfg = setup
    no_ids = [replace(e, entry_id=None) for e in BASE]
    srv.set("/news.xml", rss(no_ids, title="Test News"))
    assert fw(cfg, "check").returncode == 0
    srv.set("/news.xml", rss([replace(STRIKE, entry_id=None), *no_ids], title="Test News"))
    fw(cfg, "check")  # (exit 1: the config's "broken" sink)
    (alerted,) = sent(tmp)
    r = fw(cfg, "explain", "news", "strike")
    assert alerted["id"] in r.stdout and "identity: l:" in r.stdout
    # the feed starts giving ids: after two polls that agree its entries are re-keyed
    for n in range(2):  # (two bodies: an unchanged one is a 304, which compares nothing)
        srv.set("/news.xml", rss([STRIKE, *BASE], title=f"Test News {n}"))
        fw(cfg, "check")
    assert {k[:2] for (k,) in sqlite_rows(tmp / "state.db", "SELECT identity FROM entries")} == {
        "g:"
    }
    r = fw(cfg, "explain", "news", "strike")
    assert "identity: g:" in r.stdout, r.stdout
    assert f"new {alerted['id']}" in r.stdout and "log: delivered" in r.stdout
    assert "never alerted" not in r.stdout and "no alert recorded" not in r.stdout
    assert len(sent(tmp)) == 1
    # a state an earlier release re-keyed left the alert under the old key: found too
    conn = sqlite3.connect(tmp / "state.db")
    with conn:
        conn.execute("UPDATE alerts SET identity = 'l:https://example.org/3'")
    conn.close()
    r = fw(cfg, "explain", "news", "strike")
    assert f"new {alerted['id']}" in r.stdout and "log: delivered" in r.stdout


def test_an_entry_back_after_the_retention_is_new_as_the_next_poll_finds_it(tmp_path, feed_server):
    """An entry that left the feed longer than `retention` ago is forgotten though no
    poll pruned its row yet (none since it expired): `explain` compared with that row
    as the poll did, and said "unchanged" or "UPDATED" where the poll now finds it new."""
    srv = feed_server
    srv.set("/news.xml", rss(BASE, title="Test News"))
    feeds = f"""
[[feeds]]
name = "news"
url = "{srv.url("/news.xml")}"
match = ["missiles"]
sinks = ["log"]
retention = "2h"
"""
    cfg = write_config(tmp_path, srv, feeds)
    assert fw(cfg, "check").returncode == 0  # the baseline
    srv.set("/news.xml", rss([*BASE, STRIKE], title="Test News"))
    assert fw(cfg, "check").returncode == 0
    (first,) = sent(tmp_path)
    srv.set("/news.xml", rss(BASE, title="Test News"))  # it leaves
    assert fw(cfg, "check").returncode == 0
    r = fw(cfg, "explain", "news", "missile strike")
    assert "status:   not in the feed now" in r.stdout
    assert "if it comes back unchanged within retention (2h) it is not new" in r.stdout

    age_state(tmp_path / "state.db", 3 * 3600)  # three hours with no poll
    r = fw(cfg, "explain", "news", "missile strike")
    assert "longer than retention (2h): the next poll forgets it" in r.stdout, r.stdout
    # back unchanged: new, but its `new` alert is the one recorded (the global
    # retention keeps it): nothing is sent
    srv.set("/news.xml", rss([*BASE, STRIKE], title="Test News"))
    r = fw(cfg, "explain", "news", "missile strike")
    assert "status:   NEW (not in the state)" in r.stdout, r.stdout
    assert "state:    forgotten: it left the feed" in r.stdout
    assert f"alerted before (id {first['id']})" in r.stdout
    # back edited: new, not updated from the text it was forgotten with
    srv.set("/news.xml", rss([*BASE, STRIKE_UPDATED], title="Test News"))
    before = snapshot(tmp_path / "state.db")
    r = fw(cfg, "explain", "news", "missile strike")
    assert snapshot(tmp_path / "state.db") == before
    assert "status:   NEW (not in the state)" in r.stdout, r.stdout
    predicted = re.search(r"the next poll alerts it as 'new' \(id (\w+)\)", r.stdout)
    assert predicted is not None, r.stdout
    assert fw(cfg, "check").returncode == 0
    _, again = sent(tmp_path)
    assert (again["kind"], again["id"], again["changes"]) == ("new", predicted[1], {})


def test_fetch_failure_and_no_fetch_explain_from_state(setup):
    tmp, srv, cfg = setup
    assert fw(cfg, "check").returncode == 0
    srv.remove("/news.xml")
    r = fw(cfg, "explain", "news", "Markets")
    assert r.returncode == 0, r.stderr
    assert "fetch failed (HTTP 404 Not Found): explained from the stored state" in r.stdout
    assert "status:   in the state (not compared: no current body)" in r.stdout
    assert "rules (against the stored version):" in r.stdout

    count = srv.count("/news.xml")
    r = fw(cfg, "explain", "--no-fetch", "news")
    assert r.returncode == 0
    assert "not fetched (--no-fetch)" in r.stdout
    assert srv.count("/news.xml") == count

    # a feed removed from the config is still explained from what the state kept
    write_config(tmp, srv, feeds="")
    r = fw(cfg, "explain", "news", "Markets")
    assert r.returncode == 0, r.stderr
    assert "not in the config any more" in r.stdout


def test_silent_updates_notify_on_and_max_age(tmp_path, feed_server):
    srv = feed_server
    for path in ("/a.xml", "/b.xml", "/c.xml"):
        srv.set(path, rss([STRIKE]))
    feeds = f"""
[[feeds]]
name = "content-only"
url = "{srv.url("/a.xml")}"
updates = "content"

[[feeds]]
name = "new-only"
url = "{srv.url("/b.xml")}"
notify_on = ["new"]

[[feeds]]
name = "recent"
url = "{srv.url("/c.xml")}"
max_age = "1d"
"""
    cfg = write_config(tmp_path, srv, feeds=feeds)
    assert fw(cfg, "check").returncode == 0
    moved = entry(3, title=STRIKE.title, updated=T0 + timedelta(hours=1))
    srv.set("/a.xml", rss([moved]))
    srv.set("/b.xml", rss([STRIKE_UPDATED]))
    srv.set("/c.xml", rss([STRIKE, entry(4, title="An old story")]))

    out = fw(cfg, "explain", "content-only", "strike").stdout
    assert "status:   changed, stored silently" in out
    assert 'updates = "content": a moved timestamp alone is not an update' in out

    out = fw(cfg, "explain", "new-only", "strike").stdout
    assert "status:   UPDATED since last seen" in out
    assert "notify_on = ['new'] leaves out 'updated' changes: no alert" in out

    out = fw(cfg, "explain", "recent", "old story").stdout
    assert "status:   NEW (not in the state)" in out
    assert "published 20" in out and "longer ago than max_age (1d): backfills never alert" in out

    # an entry with an updated time alone: max_age read that, and the verdict said
    # "published" of an entry whose line showed none
    srv.set("/c.xml", rss([STRIKE, entry(5, title="Undated news", published=None, updated=T0)]))
    out = fw(cfg, "explain", "recent", "undated news").stdout
    assert "updated 20" in out and "longer ago than max_age (1d)" in out, out
    assert "published 20" not in out, out


def test_a_long_summary_edited_at_its_end_shows_the_words_that_changed(setup):
    """Each side was cut to its first 60 characters, the same in both: the edit was not
    on the screen."""
    tmp, srv, cfg = setup
    lead = " ".join(f"Paragraph {i} of the hypersonic report." for i in range(20))
    long = replace(STRIKE, summary=lead + " The strike caused no casualties.")
    srv.set("/news.xml", rss([*BASE, long], title="Test News"))
    assert fw(cfg, "check").returncode in (0, 1)
    edited = replace(long, summary=lead + " The strike killed two workers.")
    srv.set("/news.xml", rss([*BASE, edited], title="Test News"))
    out = fw(cfg, "explain", "news", "urn:entry:3").stdout
    assert "status:   UPDATED since last seen" in out
    assert (
        "summary: … hypersonic report. The strike caused no casualties.  ->  "
        "… hypersonic report. The strike killed two workers." in out
    ), out


def test_a_status_feed_stamped_at_each_request_alerts_once_not_at_every_poll(tmp_path, feed_server):
    """A one-entry feed whose entry carries the time of each request (a status page):
    the first re-stamp alerts, the next ones are stored silently and `explain` says why;
    a change of its text still alerts."""
    feeds = f"""
[[feeds]]
name = "status"
url = "{feed_server.url("/status.xml")}"
sinks = ["log"]
"""
    cfg = write_config(tmp_path, feed_server, feeds=feeds)

    polled: list[datetime] = []  # when each check ended

    def serve(summary: str = "All systems operational.") -> None:
        # each poll in a second of its own, as polls minutes apart would be: the state
        # keeps times to the second, so a poll in the second of the one before could not
        # tell the first re-stamp from the ones after it
        deadline = time.monotonic() + 5
        while polled and _second() <= polled[-1]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        stamp = _second()
        body = rss([entry(1, title="Service status", summary=summary, updated=stamp)])
        feed_server.set("/status.xml", body)

    def check() -> None:
        assert fw(cfg, "check").returncode == 0
        polled.append(_second())

    for _ in range(4):
        serve()
        check()
    kinds = [a["kind"] for a in sent(tmp_path)]
    assert kinds == ["updated"]  # the baseline, one re-stamp alerted, then silence
    serve()
    r = fw(cfg, "explain", "status", "Service status")
    assert "its times moved with the time of the fetch" in r.stdout, r.stdout
    serve("Degraded performance.")
    check()
    assert [a["kind"] for a in sent(tmp_path)] == ["updated", "updated"]
    assert sent(tmp_path)[-1]["entry"]["summary"] == "Degraded performance."


def _second() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def test_after_the_poll_a_flood_and_a_backfill_are_named(tmp_path, feed_server):
    """The FAQ's verdicts `flood` and `older than max_age` hold after the poll too, not
    only for the change the next poll would make (it said "never alerted", blaming
    changed rules)."""
    srv = feed_server
    srv.set("/f.xml", rss([entry(1)]))
    srv.set("/m.xml", rss([entry(1)]))
    feeds = f"""
[[feeds]]
name = "fl"
url = "{srv.url("/f.xml")}"
flood_limit = 2
sinks = ["log"]

[[feeds]]
name = "recent"
url = "{srv.url("/m.xml")}"
max_age = "2d"
sinks = ["log"]
"""
    cfg = write_config(tmp_path, srv, feeds=feeds)
    assert fw(cfg, "check").returncode == 0
    # the next poll in another second: the state's times are whole seconds, and the
    # flood's entries are those first seen at its notice's time
    first = int(time.time())
    wait_for(lambda: int(time.time()) > first, what="the next second")
    srv.set(
        "/f.xml",
        rss([entry(1), *(entry(i, published=datetime.now(timezone.utc)) for i in (2, 3, 4))]),
    )
    srv.set("/m.xml", rss([entry(1), entry(5, title="An old story")]))
    assert fw(cfg, "check").returncode == 0
    out = fw(cfg, "explain", "fl", "Entry 3").stdout
    assert "one flood notice went out instead" in out, out
    assert "never alerted" not in out and "no alert recorded for it (first seen" not in out
    rows = [line for line in fw(cfg, "explain", "fl").stdout.splitlines() if "Entry" in line]
    assert sum("flood" in line for line in rows) == 3, rows
    out = fw(cfg, "explain", "recent", "old story").stdout
    assert "already longer ago than max_age (2d) when it was first seen" in out, out
    rows = [
        line for line in fw(cfg, "explain", "recent").stdout.splitlines() if "old story" in line
    ]
    assert rows and "older than max_age" in rows[0], rows


def test_a_text_moved_to_the_content_by_a_change_of_format_is_named(tmp_path, feed_server):
    """RSS to Atom: the description was read as the summary, the Atom content is the
    content; the same text in the other field is stored silently, and said so."""
    srv = feed_server
    srv.set("/news.xml", rss([entry(1, title="Hypersonic test", summary="Full text.")]))
    cfg = write_config(tmp_path, srv)
    assert fw(cfg, "check").returncode == 0
    atom = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>N</title>'
        "<id>urn:feed</id><updated>2024-11-22T10:40:17Z</updated><entry><id>urn:entry:1</id>"
        "<title>Hypersonic test</title><published>2024-11-22T10:40:17Z</published>"
        '<link href="https://example.org/1"/><content type="html">&lt;p&gt;Full text.&lt;/p&gt;'
        "</content></entry></feed>"
    )
    srv.set("/news.xml", atom.encode(), content_type="application/atom+xml")
    out = fw(cfg, "explain", "news", "hypersonic").stdout
    assert "status:   changed, stored silently" in out
    assert "its text only moved between summary and content" in out
    assert fw(cfg, "check").returncode == 0 and sent(tmp_path) == []


def test_a_text_that_gained_only_invisible_characters_is_named(tmp_path, feed_server):
    """A CMS's hyphenation pass adds soft hyphens: no edit, stored silently, and said so."""
    srv = feed_server
    srv.set("/news.xml", rss([entry(1, title="Hypersonic missile", summary="Tested.")]))
    cfg = write_config(tmp_path, srv)
    assert fw(cfg, "check").returncode == 0
    marked = entry(1, title="Hyper\u00adsonic missile", summary="Tes\u200bted.")
    srv.set("/news.xml", rss([marked]))
    out = fw(cfg, "explain", "news", "missile").stdout
    assert "status:   changed, stored silently" in out
    assert "its text differs only by characters no reader sees" in out
    assert fw(cfg, "check").returncode == 0 and sent(tmp_path) == []


@pytest.mark.timeout(60)
def test_a_slow_regex_is_timed_and_warned_of_once_in_the_brief_list(tmp_path, feed_server):
    """`explain FEED` with a catastrophic regex over 15 long entries logged
    rule.regex_timeout 14 times (the rules were compiled again for each entry) and took
    about 5 s. It warns once per term, as the daemon does, and its regex time is capped
    as a poll's is; the rows whose verdict a regex that ran out of time decided say so."""
    srv = feed_server
    srv.set("/slow.xml", rss([entry(1, title="Markets open")]))
    feeds = f"""
[[feeds]]
name = "slow"
url = "{srv.url("/slow.xml")}"
keywords = ["/(a|aa)+$/"]
sinks = ["log"]
"""
    cfg = write_config(tmp_path, srv, feeds=feeds)
    assert fw(cfg, "check").returncode == 0  # the baseline
    long = [entry(n, title="a" * 5000 + f"! {n}") for n in range(2, 17)]
    srv.set("/slow.xml", rss([entry(1, title="Markets open"), *long]))
    t0 = time.monotonic()
    r = fw(cfg, "explain", "slow", "--limit", "20")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    events = [json.loads(x)["event"] for x in r.stderr.splitlines() if x.startswith("{")]
    assert events.count("rule.regex_timeout") == 1, r.stderr
    assert events.count("rule.regex_budget_spent") <= 1, r.stderr
    rows = [x for x in r.stdout.splitlines() if "aaaa" in x]
    assert len(rows) == 15, r.stdout
    assert all("no rule matched (regex ran out of time)" in x for x in rows), r.stdout
    assert took < 4.5, took  # 1 s of regex time (the poll's), not 15 x 0.1 s x fields

    r = fw(cfg, "explain", "slow", "! 16")
    assert r.returncode == 0, r.stderr
    assert "(regex ran out of time)" in r.stdout
    assert "ran out of time and counts as missed" in r.stdout, r.stdout


def test_a_term_with_a_control_character_shows_it_not_a_space(tmp_path, feed_server):
    """A term's tab (TOML's "\\t"; a backspace, "\\b", is warned about by validate now)
    showed as a space: `/missile strike/`, hiding why it never hits."""
    feed_server.set("/news.xml", rss(BASE, title="Test News"))
    feeds = f"""
[[feeds]]
name = "news"
url = "{feed_server.url("/news.xml")}"
keywords = ["hypersonic", "/missile\\tstrike/"]
sinks = ["log"]
"""
    cfg = write_config(tmp_path, feed_server, feeds)
    r = fw(cfg, "explain", "news", "Hypersonic test")
    assert r.returncode == 0, r.stderr
    assert re.search(r"any /missile\\tstrike/\s+missed", r.stdout), r.stdout
