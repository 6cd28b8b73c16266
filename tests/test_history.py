"""`feedwatch alerts`: real subprocesses, a real state file, the 127.0.0.1 feed server.

Two sinks: a jsonl file (delivered) and a command that cannot start (dead at once), so
each alert has one outcome of each kind to list and to filter on.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from feedwatch.testing import T0, entry, rss
from tests.feedserver import feed_server_fixture  # noqa: F401
from tests.helpers import bare_env, run_feedwatch
from tests.pg import pg_cluster, pg_url
from tests.test_explain import (
    BASE,
    STRIKE,
    STRIKE_UPDATED,
    fw,
    snapshot,
    sqlite_rows,
    write_config,
)

__all__ = ["pg_cluster", "pg_url"]  # fixtures, imported for pytest

OTHER_FEED = """
[[feeds]]
name = "news"
url = "{news}"
match = ["missiles"]
sinks = ["log", "broken"]

[[feeds]]
name = "wire"
url = "{wire}"
sinks = ["log"]
"""


def _setup(tmp_path, srv):
    srv.set("/news.xml", rss(BASE, title="Test News"))
    srv.set("/wire.xml", rss([entry(10, title="Wire story one")], title="Wire"))
    feeds = OTHER_FEED.format(news=srv.url("/news.xml"), wire=srv.url("/wire.xml"))
    cfg = write_config(tmp_path, srv, feeds=feeds)
    assert fw(cfg, "check").returncode == 0  # the baselines: nothing alerted
    srv.set("/news.xml", rss([*BASE, STRIKE], title="Test News"))
    srv.set("/wire.xml", rss([entry(10, title="Wire story one"), entry(11, title="Wire two")]))
    assert fw(cfg, "check").returncode == 1  # the command sink cannot start: dead
    srv.set("/news.xml", rss([*BASE, STRIKE_UPDATED], title="Test News"))
    assert fw(cfg, "check").returncode == 1
    return cfg


def test_lists_alerts_newest_first_with_each_sinks_outcome(tmp_path, feed_server):
    cfg = _setup(tmp_path, feed_server)
    before = snapshot(tmp_path / "state.db")
    r = fw(cfg, "alerts")
    assert r.returncode == 0, r.stderr
    heads = [x for x in r.stdout.splitlines() if not x.startswith(" ")]
    assert len(heads) == 3, r.stdout
    rows = [re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)  (\w+) +(.*)", h) for h in heads]
    assert all(rows), heads
    assert [m.group(2, 3) for m in rows if m][0] == (
        "updated",
        "news: Hypersonic missile strike on Dnipro",
    )
    assert {m.group(2, 3) for m in rows[1:] if m} == {
        ("new", "news: Hypersonic missile strike on Dnipro"),
        ("new", "wire: Wire two"),
    }
    assert sorted(m.group(1) for m in rows if m) == [m.group(1) for m in rows if m][::-1]
    block = r.stdout.split(heads[1])[0]  # the newest alert's lines
    assert "    https://example.org/3" in block
    assert re.search(r"    log: delivered \d{4}-", block)
    assert "    broken: DEAD after 1 attempt: sink broken: cannot start" in block
    assert "feedwatch redeliver --sink broken" in block
    assert snapshot(tmp_path / "state.db") == before  # read-only


def test_filters_feed_sink_status_since_and_limit(tmp_path, feed_server):
    cfg = _setup(tmp_path, feed_server)

    def titles(*args: str) -> list[str]:
        r = fw(cfg, "alerts", "--json", *args)
        assert r.returncode == 0, r.stderr
        return [json.loads(x)["alert"]["entry"]["title"] for x in r.stdout.splitlines()]

    assert titles("--feed", "wire") == ["Wire two"]
    assert titles("--feed", "wire", "--feed", "news", "--limit", "1") == [
        "Hypersonic missile strike on Dnipro"
    ]
    assert len(titles("--status", "dead")) == 2  # news's two: the wire feed has no broken sink
    assert titles("--sink", "broken", "--status", "delivered") == []
    assert len(titles("--sink", "log", "--status", "delivered")) == 3
    assert len(titles("--since", "1h")) == 3

    # an alert created two days ago: outside --since 1d, inside --since 3d
    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:
        conn.execute(
            "UPDATE alerts SET created_at = created_at - ? WHERE feed = 'wire'",
            (int(timedelta(days=2).total_seconds()) * 1_000_000,),  # stored in microseconds
        )
    conn.close()
    assert "Wire two" not in titles("--since", "1d")
    assert "Wire two" in titles("--since", "3d")

    assert len(titles("--since", "36500d")) == 3  # the longest duration: all of them
    assert titles("--since", "86400") == titles("--since", "1d")  # a bare number is seconds
    r = fw(cfg, "alerts", "--since", "100000000d")
    assert r.returncode == 2 and "at most 36500d" in r.stderr
    r = fw(cfg, "alerts", "--feed", "nosuch")
    assert r.returncode == 2 and "unknown feed 'nosuch' (configured: " in r.stderr
    # a feed removed from the config still has its alerts in the state
    text = cfg.read_text()
    cfg.write_text(text[: text.index('[[feeds]]\nname = "wire"')])
    assert titles("--feed", "wire") == ["Wire two"]
    r = fw(cfg, "alerts", "--since", "soon")
    assert r.returncode == 2 and "--since 'soon'" in r.stderr
    r = fw(cfg, "alerts", "--limit", "0")
    assert r.returncode == 2 and "--limit 0" in r.stderr


def test_json_lines_carry_the_payload_the_sinks_got_and_the_deliveries(tmp_path, feed_server):
    cfg = _setup(tmp_path, feed_server)
    r = fw(cfg, "alerts", "--json", "--feed", "news")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    sent = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    by_id = {a["id"]: a for a in sent}
    assert [row["alert"]["kind"] for row in rows] == ["updated", "new"]
    for row in rows:
        assert row["alert"] == by_id[row["alert"]["id"]]  # what the jsonl sink wrote
        (log, broken) = sorted(row["deliveries"], key=lambda d: d["sink"] != "log")
        assert log["sink"] == "log" and log["status"] == "delivered"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", log["delivered_at"])
        assert broken == {
            "sink": "broken",
            "status": "dead",
            "attempts": broken["attempts"],
            "delivered_at": None,
            "next_attempt": None,
            "last_error": broken["last_error"],
            "recipients_left": None,  # (owed to every recipient: not a partly sent email)
        }
        assert "cannot start" in broken["last_error"]


def test_no_state_file_creates_nothing(tmp_path, feed_server):
    cfg = write_config(tmp_path, feed_server)
    r = fw(cfg, "alerts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no alerts: no state file at ")
    r = fw(cfg, "alerts", "--json")
    assert r.returncode == 0 and r.stdout == ""
    # a name in neither the config nor a state is a typo, state or not (docs/alerts.md)
    r = fw(cfg, "alerts", "--feed", "nosuch")
    assert r.returncode == 2 and "unknown feed 'nosuch' (configured: " in r.stderr
    assert fw(cfg, "alerts", "--feed", "news").returncode == 0
    assert not (tmp_path / "state.db").exists()


def test_a_postgresql_state_without_schema_hides_its_password(tmp_path, pg_url):
    """`alerts` and `forget` before the first poll name the database, not "a state
    file", and never its password: in the user-info, from ${PGPW}, in ?password=, or
    given with --state."""
    u = urlsplit(pg_url)
    password = u.password
    assert password
    bare = u._replace(netloc=f"{u.username}@{u.hostname}:{u.port}")
    from_env = pg_url.replace(f":{password}@", ":${PGPW}@")
    in_query = urlunsplit(bare._replace(query=f"{u.query}&password={password}"))
    cfg = tmp_path / "feedwatch.toml"
    env = bare_env(tmp_path, PGPW=password)
    for state, extra in (
        (pg_url, ()),
        (from_env, ()),
        (in_query, ()),
        ("x.db", ("--state", in_query)),
        ("x.db", ("--state", pg_url)),
    ):
        cfg.write_text(
            f'[feedwatch]\nstate = "{state}"\n[[feeds]]\nname = "news"\nurl = "http://127.0.0.1:9/f"\n'
        )
        alerts = run_feedwatch("-c", str(cfg), *extra, "alerts", env=env)
        assert alerts.returncode == 0, alerts.stderr
        assert alerts.stdout.startswith(
            "no alerts: no feedwatch state in the PostgreSQL database postgresql://"
        )
        forget = run_feedwatch("-c", str(cfg), *extra, "forget", "news", env=env)
        assert forget.returncode == 0, forget.stderr  # nothing polled: nothing to forget
        assert forget.stdout.startswith(
            "nothing to forget: no feedwatch state in the PostgreSQL database postgresql://"
        )
        for r in (alerts, forget):
            assert password not in r.stdout + r.stderr, r.stdout + r.stderr


def test_an_empty_state_says_so(tmp_path, feed_server):
    feed_server.set("/news.xml", rss(BASE))
    cfg = write_config(tmp_path, feed_server)
    assert fw(cfg, "check").returncode == 0  # a baseline alerts nothing
    r = fw(cfg, "alerts")
    assert r.returncode == 0 and r.stdout == "no alerts recorded yet\n"
    r = fw(cfg, "alerts", "--sink", "gone")
    assert "no sink 'gone' in the config" in r.stderr and r.stdout == "no alerts match\n"


def test_the_time_column_is_utc(tmp_path, feed_server):
    cfg = _setup(tmp_path, feed_server)
    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:
        conn.execute("UPDATE alerts SET created_at = ?", (int(T0.timestamp()) * 1_000_000,))
    conn.close()
    r = fw(cfg, "alerts", "--limit", "1")
    assert r.stdout.startswith(T0.strftime("%Y-%m-%dT%H:%M:%SZ  ")), r.stdout
    assert "(the newest 1; --limit N shows more)" in r.stdout


def test_a_secret_in_a_stored_error_is_masked(tmp_path, feed_server):
    """A sink's error can hold its URL; `alerts` shows it as `explain` and the logs do."""
    cfg = _setup(tmp_path, feed_server)
    hook = "https://hooks.example.net/services/T0/B0/s3cr3t-t0ken"
    text = cfg.read_text() + '\n[sinks.hook]\ntype = "webhook"\nurl = "${HOOK}"\n'
    cfg.write_text(text)
    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:
        conn.execute(
            "UPDATE deliveries SET last_error = ? WHERE sink = 'broken'", (f"POST {hook}: 500",)
        )
    conn.close()
    for args in (("alerts",), ("alerts", "--json")):
        r = run_feedwatch("-c", str(cfg), *args, env=bare_env(tmp_path, HOOK=hook))
        assert r.returncode == 0, r.stderr
        assert "s3cr3t" not in r.stdout and "POST ***: 500" in r.stdout, r.stdout


def test_a_damaged_row_does_not_hide_the_others(tmp_path, feed_server):
    cfg = _setup(tmp_path, feed_server)
    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:
        conn.execute("UPDATE alerts SET payload = '{\"version\": 1, \"id\"' WHERE feed = 'wire'")
    conn.close()
    r = fw(cfg, "alerts")
    assert r.returncode == 0, r.stderr
    assert "wire: (no title)" in r.stdout and "news: Hypersonic missile strike" in r.stdout
    assert "its stored payload does not decode" in r.stderr
    r = fw(cfg, "alerts", "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["feed"], x["alert"] is None) for x in rows].count(("wire", True)) == 1
    assert all(x["alert"]["id"] == x["alert_id"] for x in rows if x["feed"] == "news")
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", x["created_at"]) for x in rows)


def test_a_feed_notice_is_listed_by_its_message(tmp_path, feed_server):
    srv = feed_server
    srv.set("/wire.xml", rss([entry(10, title="Wire story one")], title="Wire"))
    feeds = f"""
[[feeds]]
name = "wire"
url = "{srv.url("/wire.xml")}"
sinks = ["log"]
flood_limit = 2
"""
    cfg = write_config(tmp_path, srv, feeds=feeds)
    assert fw(cfg, "check").returncode == 0  # the baseline
    more = [entry(i, title=f"Wire story {i}") for i in range(11, 16)]
    srv.set("/wire.xml", rss([entry(10, title="Wire story one"), *more], title="Wire"))
    r = fw(cfg, "check")
    assert r.returncode == 0, r.stderr

    text = fw(cfg, "alerts")
    assert text.returncode == 0, text.stderr
    heads = [x for x in text.stdout.splitlines() if not x.startswith(" ")]
    assert len(heads) == 1, text.stdout  # one notice, no alert per entry
    m = re.fullmatch(r"\S+  flood +wire: (.*)", heads[0])
    assert m, heads[0]
    assert "5 new entries appeared at once" in m.group(1)
    assert re.search(r"    log: delivered \d{4}-", text.stdout)

    js = fw(cfg, "alerts", "--json")
    [row] = [json.loads(x) for x in js.stdout.splitlines()]
    assert row["kind"] == "flood" and row["alert"]["entry"] is None
    assert row["alert"]["message"].startswith(m.group(1).rstrip("…")[:60])
    sent = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["id"] for a in sent] == [row["alert_id"]]


def test_a_delivery_never_tried_shows_no_past_attempt_time():
    """Queued behind an alert that waits for its retry, a delivery kept its creation as
    its "next attempt": `alerts` showed it overdue, though it goes in its turn."""
    from feedwatch.history import _delivery_json
    from feedwatch.present import delivery_detail
    from feedwatch.store.base import Delivery

    fresh = Delivery("a1", "hook", "f", "new", {}, None, T0, next_attempt=T0)
    assert delivery_detail(fresh) == (
        "pending (not sent yet: after any older alert this sink still holds)"
    )
    assert _delivery_json(fresh)["next_attempt"] is None
    retried = replace(fresh, attempts=1, next_attempt=T0 + timedelta(minutes=5), last_error="503")
    assert delivery_detail(retried) == (
        "pending (1 attempt, next attempt 2024-11-22T10:45:17Z, last error: 503)"
    )
    assert _delivery_json(retried)["next_attempt"] == "2024-11-22T10:45:17Z"


def test_a_removed_feed_is_known_by_its_alerts_after_retention_dropped_its_state(
    tmp_path, feed_server
):
    """docs/alerts.md: `--feed NAME` takes a feed since removed from the config; after
    `retention` dropped its row and entries, its alerts (one dead per alert here) stay,
    and `alerts --feed`, `redeliver --feed` and `explain` still take its name."""
    cfg = _setup(tmp_path, feed_server)
    text = cfg.read_text()
    cfg.write_text(
        text.replace(
            text[text.index('[[feeds]]\nname = "news"') : text.index('[[feeds]]\nname = "wire"')],
            "",
        )
    )
    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:  # its last poll longer ago than retention (90d): the next check drops it
        conn.execute(
            "UPDATE feeds SET last_poll = last_poll - ? WHERE name = 'news'",
            (int(timedelta(days=91).total_seconds()) * 1_000_000,),
        )
    conn.close()
    r = fw(cfg, "check")
    assert r.returncode == 0 and "state.removed_feeds_dropped" in r.stderr, r.stderr
    db = tmp_path / "state.db"
    assert sqlite_rows(db, "SELECT name FROM feeds") == [("wire",)]
    assert sqlite_rows(db, "SELECT COUNT(*) FROM alerts WHERE feed = 'news'") == [(2,)]

    r = fw(cfg, "alerts", "--json", "--feed", "news")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["alert"]["kind"] for x in r.stdout.splitlines()] == ["updated", "new"]

    r = fw(cfg, "explain", "news")
    assert r.returncode == 0, r.stderr
    assert "state: dropped: the feed is not in the config and its entries went with" in r.stdout
    assert "Latest alerts (2 of 2), newest first:" in r.stdout
    assert "updated  Hypersonic missile strike on Dnipro" in r.stdout
    r = fw(cfg, "explain", "news", "missile strike")
    assert r.returncode == 0, r.stderr
    assert "Entry: Hypersonic missile strike on Dnipro" in r.stdout
    assert "link:     https://example.org/3" in r.stdout
    assert len(re.findall(r"^    \S+ (new|updated) [0-9a-f]{32}$", r.stdout, re.M)) == 2
    assert "broken: DEAD after 1 attempt" in r.stdout
    r = fw(cfg, "explain", "news", "Markets")  # baselined, never alerted: its row is gone
    assert r.returncode == 1 and "no alert of 'news' matches 'Markets'" in r.stderr

    r = fw(cfg, "redeliver", "--feed", "news")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2 dead deliveries queued again")

    # a name in neither the config nor the state is still a typo
    for args in (
        ("alerts", "--feed", "nosuch"),
        ("explain", "nosuch"),
        ("redeliver", "--feed", "nosuch"),
    ):
        r = fw(cfg, *args)
        assert r.returncode == 2 and "unknown feed 'nosuch'" in r.stderr, (args, r.stderr)


def test_alerts_and_explain_show_a_title_s_control_characters_escaped(tmp_path, feed_server):
    """A hostile feed's title with a C1 escape sequence (CSI U+009B: the C0 ESC the
    parser drops) or a bidi override (U+202E) showed each as a space in `alerts` and
    `explain`, so that "\\u202eTXT.exe" and " TXT.exe" read alike: each is written as
    \\x9b, \\u202e now; `alerts --json` keeps the title."""
    title = "Hypersonic \u009b2J \u202eTXT.exe \u2067x"
    shown = "Hypersonic \\x9b2J \\u202eTXT.exe \\u2067x"

    def items(*titles: str) -> str:
        return json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "F",
                "items": [
                    {"id": str(i), "url": f"https://example.org/{i}", "title": t}
                    for i, t in enumerate(titles)
                ],
            }
        )

    feed_server.set("/j", items("Markets open"), content_type="application/feed+json")
    feeds = (
        f'[[feeds]]\nname = "news"\nurl = "{feed_server.url("/j")}"\n'
        'match = ["missiles"]\nsinks = ["log"]\n'
    )
    cfg = write_config(tmp_path, feed_server, feeds=feeds)
    assert fw(cfg, "check").returncode == 0
    feed_server.set("/j", items("Markets open", title), content_type="application/feed+json")
    assert fw(cfg, "check").returncode == 0
    acting = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")

    r = fw(cfg, "alerts")
    assert r.returncode == 0, r.stderr
    assert f"  new      news: {shown}\n" in r.stdout and not acting.search(r.stdout), r.stdout
    r = fw(cfg, "alerts", "--json")
    assert json.loads(r.stdout)["alert"]["entry"]["title"] == title
    for args in (("explain", "news", "1"), ("explain", "news")):
        r = fw(cfg, *args)
        assert r.returncode == 0, r.stderr
        assert shown in r.stdout and not acting.search(r.stdout), r.stdout
