"""`feedwatch preview URL`: a real subprocess against the 127.0.0.1 feed server."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from feedwatch.discover import page_problem
from feedwatch.preview import discover_feeds, newest_first, split_keywords
from feedwatch.testing import T0, entry, rss
from tests.feedserver import FeedServer, feed_server_fixture, free_port  # noqa: F401
from tests.helpers import bare_env, run_feedwatch

ENTRIES = [
    entry(1, title="Markets open", published=T0),
    entry(
        2,
        title="Hypersonic missile test reported",
        summary="Over the Dnipro river.",
        published=T0 + timedelta(hours=2),
    ),
    entry(3, title="Weather", published=T0 + timedelta(hours=1), updated=T0 + timedelta(hours=5)),
    entry(4, title="No date, no id", published=None, entry_id=None),
]


def fw(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = bare_env(tmp, XDG_STATE_HOME=str(tmp / "state"), XDG_CONFIG_HOME=str(tmp / "config"))
    return run_feedwatch(*args, env=env, cwd=tmp)


@pytest.fixture
def srv(feed_server: FeedServer) -> FeedServer:
    feed_server.set(
        "/feed.xml", rss(ENTRIES, title="Test News"), content_type="application/rss+xml"
    )
    return feed_server


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_entries_newest_first_with_keyword_hits_and_diagnostics(tmp_path, srv):
    r = fw(tmp_path, "preview", srv.url("/feed.xml"), "--keywords", "hypersonic,dnipro,weather*")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"URL:           {srv.url('/feed.xml')}" in out
    assert "HTTP:          200 in " in out and "application/rss+xml" in out
    assert 'ETag:          "' in out
    assert "Last-Modified: (none)" in out
    assert "Conditional:   304 Not Modified: the server honours it" in out
    assert "Warnings:      none" in out
    assert "Entries:       4 (1 without an id, 1 without a date)" in out
    assert "Test News" in out
    # newest first by the later of published/updated; undated last
    titles = ["Weather", "Hypersonic missile test reported", "Markets open", "No date, no id"]
    positions = [out.index(t) for t in titles]
    assert positions == sorted(positions)
    assert "* 2024-11-22 15:40  Weather" in out  # updated 15:40 is its date
    assert "hits: hypersonic (title), dnipro (summary)" in out
    assert "hits: weather* (title)" in out
    assert "  (no date)         No date, no id" in out
    assert "Keywords:      hypersonic, dnipro, weather*: 2 of 4 entries hit (marked *)" in out
    # the second, conditional request really happened
    reqs = [h for m, p, h in srv.requests if p == "/feed.xml"]
    assert len(reqs) == 2 and "if-none-match" in reqs[1]
    # nothing written anywhere: no state, no config
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ignore_text_terms_are_tried_on_the_live_feed(tmp_path, feed_server):
    """What an ignore_text term would cut, entry by entry, before it goes in a config."""
    hn = [
        entry(
            i,
            summary=f"<p>Article URL: https://x.example/{i}</p><p>Points: {i * 7}</p>"
            f"<p># Comments: {i}</p>",
        )
        for i in (1, 2)
    ] + [entry(3, summary="No counters here.")]
    feed_server.set("/hn.xml", rss(hn), content_type="application/rss+xml")
    r = fw(
        tmp_path,
        "preview",
        feed_server.url("/hn.xml"),
        "--ignore-text",
        r"/Points: \d+/,/# Comments: \d+/",
    )
    assert r.returncode == 0, r.stderr
    assert "ignored: 'Points: 14', '# Comments: 2'" in r.stdout
    assert "ignored: 'Points: 7', '# Comments: 1'" in r.stdout
    assert r"Ignore text:   /Points: \d+/, /# Comments: \d+/: cuts text from 2 of 3" in r.stdout
    r = fw(tmp_path, "preview", feed_server.url("/hn.xml"), "--ignore-text", "/(a+)+/")
    assert r.returncode == 2 and "--ignore-text" in r.stderr and "exponential" in r.stderr


def test_validators_missing_or_ignored(tmp_path, feed_server):
    feed_server.set("/plain.xml", rss(ENTRIES[:1]), etag=False)
    r = fw(tmp_path, "preview", feed_server.url("/plain.xml"))
    assert r.returncode == 0, r.stderr
    assert "ETag:          (none)" in r.stdout
    assert "Conditional:   not possible: no ETag or Last-Modified" in r.stdout
    assert feed_server.count("/plain.xml") == 1

    # an ETag sent but never honoured: the second request gets the whole body again
    feed_server.set("/stubborn.xml", rss(ENTRIES[:1]), etag=False, headers={"ETag": '"v1"'})
    r = fw(tmp_path, "preview", feed_server.url("/stubborn.xml"))
    assert r.returncode == 0, r.stderr
    assert 'ETag:          "v1"' in r.stdout
    assert "Conditional:   200 with the same body: the server ignores" in r.stdout


def test_redirects_are_shown(tmp_path, srv):
    srv.redirect("/old.xml", "/feed.xml", 301)
    srv.redirect("/tmp.xml", "/feed.xml", 302)
    r = fw(tmp_path, "preview", srv.url("/old.xml"))
    assert r.returncode == 0, r.stderr
    assert f"Redirected:    -> {srv.url('/feed.xml')}" in r.stdout
    assert f"permanent (301/308): set the feed's url to {srv.url('/feed.xml')}" in r.stdout
    r = fw(tmp_path, "preview", srv.url("/tmp.xml"))
    assert "temporary: keep the url you have" in r.stdout


def test_html_page_lists_the_feeds_it_advertises(tmp_path, feed_server):
    page = """<!DOCTYPE html><html><head><title>Site</title>
    <base href="/blog/">
    <link rel="stylesheet" href="style.css">
    <link rel="alternate" type="application/rss+xml" title="All posts" href="feed.xml">
    <link rel="alternate" type="application/atom+xml" title="Comments" href="/comments.atom">
    <link rel="alternate" type="application/feed+json" href="//cdn.example.org/feed.json">
    <link rel="alternate" hreflang="de" href="/de/">
    </head><body>hello</body></html>"""
    feed_server.set("/", page, content_type="text/html; charset=utf-8")
    r = fw(tmp_path, "preview", feed_server.url("/"))
    assert r.returncode == 1
    out = r.stdout
    assert "Not a feed:    an HTML page; it advertises 3 feeds:" in out
    assert f"All posts (RSS): {feed_server.url('/blog/feed.xml')}" in out
    assert f"Comments (Atom): {feed_server.url('/comments.atom')}" in out
    assert "(JSON Feed): http://cdn.example.org/feed.json" in out
    assert "style.css" not in out and "/de/" not in out
    assert f"Try:           feedwatch preview {feed_server.url('/blog/feed.xml')}" in out

    feed_server.set("/bare", "<html><body>no feeds</body></html>", content_type="text/html")
    r = fw(tmp_path, "preview", feed_server.url("/bare"))
    assert r.returncode == 1
    assert "an HTML page that advertises no feed" in r.stdout


def test_failures_exit_1(tmp_path, feed_server):
    r = fw(tmp_path, "preview", feed_server.url("/missing.xml"))
    assert r.returncode == 1
    assert "Fetch failed:  HTTP 404 Not Found" in r.stdout

    r = fw(tmp_path, "preview", f"http://127.0.0.1:{free_port()}/feed.xml")
    assert r.returncode == 1
    assert "Fetch failed:  connection refused" in r.stdout

    feed_server.set("/text", "just some words", content_type="text/plain")
    r = fw(tmp_path, "preview", feed_server.url("/text"))
    assert r.returncode == 1
    assert "Not a feed:    " in r.stdout and "no RSS, Atom or JSON Feed found" in r.stdout


def test_usage_errors_exit_2(tmp_path):
    r = fw(tmp_path, "preview", "ftp://example.org/feed")
    assert r.returncode == 2
    assert "must be an http:// or https:// URL" in r.stderr
    r = fw(tmp_path, "preview", "https://example.org/feed", "--keywords", "ok,/(unclosed/")
    assert r.returncode == 2
    assert "--keywords" in r.stderr and "(unclosed" in r.stderr
    r = fw(tmp_path, "preview", "https://example.org/feed", "--header", "no colon")
    assert r.returncode == 2 and "--header" in r.stderr
    # the config's rule for a header value: one that could never be sent is refused
    r = fw(tmp_path, "preview", "https://example.org/feed", "--header", "X-Team: Équipe")
    assert r.returncode == 2 and "'X-Team': its value must be printable ASCII" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["preview", "http://alice:S3cretPassw0rd@127.0.0.1:99999/feed"],  # a bad port
        ["preview", "ftp://alice:S3cretPassw0rd@example.org/feed"],
        ["preview", "http://alice:S3cret Passw0rd@example.org/feed"],  # white space
        ["preview", "http://alice:S3cr/etPassw0rd@example.org/feed"],
        ["preview", "alice:S3cretPassw0rd@example.org/feed"],
        ["preview", "https://example.org/feed", "--header", "Authorization Bearer S3cretPassw0rd"],
        ["preview", "https://example.org/feed", "--header", "S3cretPassw0rd"],
        ["migrate-state", "mysql://alice:S3cretPassw0rd@db/x", "postgresql://db/feedwatch"],
    ],
)
def test_a_usage_error_never_shows_a_password_or_a_header_value(tmp_path, args):
    """They quoted the argument as given: a URL's user-info, a malformed header's token."""
    r = fw(tmp_path, *args)
    assert r.returncode == 2 and "***" in r.stderr, r.stderr
    assert "S3cr" not in r.stdout + r.stderr, r.stderr
    if "Authorization" in args[-1]:
        assert "--header 'Authorization ***': write it as 'Name: value'" in r.stderr


def test_warnings_json_feed_and_hostile_text(tmp_path, feed_server):
    broken = rss(ENTRIES[:2]).replace(b"</channel></rss>", b"<oops></channel></rss>")
    feed_server.set("/broken.xml", broken)
    r = fw(tmp_path, "preview", feed_server.url("/broken.xml"))
    assert r.returncode == 0, r.stderr
    assert "Warning:       not well-formed XML" in r.stdout
    assert "Hypersonic missile test reported" in r.stdout

    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "JSON \u001b[31mred\u001b[0m feed",
        "items": [
            {"id": "a", "url": "https://example.org/a", "title": "Bell\u0007 and escape\u001b]0;x"},
            {"id": "a", "url": "https://example.org/b", "title": "same id"},
        ],
    }
    feed_server.set("/feed.json", json.dumps(doc), content_type="application/feed+json")
    r = fw(tmp_path, "preview", feed_server.url("/feed.json"), "--header", "X-Test: yes")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "JSON" in r.stdout and "red" in r.stdout
    assert "Entries:       2 (1 repeated ids, 2 without a date)" in r.stdout
    assert 'id_policy = "auto" would key entries on links' in r.stdout
    headers = [h for m, p, h in feed_server.requests if p == "/feed.json"][0]
    assert headers["x-test"] == "yes"


def test_limit(tmp_path, srv):
    r = fw(tmp_path, "preview", srv.url("/feed.xml"), "--limit", "1")
    assert r.returncode == 0
    assert "Weather" in r.stdout and "Markets open" not in r.stdout
    assert "... and 3 more (--limit N)" in r.stdout


def test_split_keywords():
    assert split_keywords(["a, b", "c,,a"]) == ["a", "b", "c"]
    assert split_keywords(["/x{1,3}/,NATO, /a,b/ "]) == ["/x{1,3}/", "NATO", "/a,b/"]
    # a piece that starts with "/" is a regex only with the pieces up to the first that
    # ends with "/" (a term that starts and ends with "/", as in the config); else it
    # is a plain term, and the pieces after it are terms of their own
    assert split_keywords(["/unclosed,x"]) == ["/unclosed", "x"]
    assert split_keywords(["/r/ukraine,Dnipro"]) == ["/r/ukraine", "Dnipro"]
    assert split_keywords(["Dnipro,/r/ukraine"]) == ["Dnipro", "/r/ukraine"]
    assert split_keywords(["/a,b,c/,d"]) == ["/a,b,c/", "d"]
    assert split_keywords(["/a, b/ ,/c/"]) == ["/a, b/", "/c/"]
    assert split_keywords(["/"]) == ["/"]
    # a term with a comma: in double quotes, as in the config's TOML ("" is a quote)
    assert split_keywords(['"Washington, D.C.",Dnipro']) == ["Washington, D.C.", "Dnipro"]
    assert split_keywords([' "a, ""b""" , c']) == ['a, "b"', "c"]
    assert split_keywords(['"/r/ukraine",/x/']) == ["/r/ukraine", "/x/"]
    assert split_keywords(['5" gun,x']) == ['5" gun', "x"]  # a quote inside: itself
    for bad in ['"Washington, D.C.', '"a"b,c']:
        with pytest.raises(ValueError, match="double quote"):
            split_keywords([bad])


def test_keywords_that_start_with_a_slash_and_a_term_with_a_comma(tmp_path, feed_server):
    """`--keywords '/r/ukraine,Dnipro'` tried one glued term '/r/ukraine,Dnipro' (no
    hit) where 'Dnipro,/r/ukraine' tried two: a piece starting with "/" took the rest
    for a regex. And a term with a comma could not be tried at all."""
    feed_server.set(
        "/feed.xml",
        rss(
            [
                entry(1, title="Thread on /r/ukraine", published=T0),
                entry(2, title="Strike on Dnipro", published=T0 + timedelta(hours=1)),
                entry(3, title="Washington, D.C. briefing", published=T0 + timedelta(hours=2)),
            ]
        ),
    )
    url = feed_server.url("/feed.xml")
    for keywords in ("/r/ukraine,Dnipro", "Dnipro,/r/ukraine"):
        r = fw(tmp_path, "preview", url, "--keywords", keywords)
        assert r.returncode == 0, r.stderr
        assert ": 2 of 3 entries hit (marked *)" in r.stdout, r.stdout
        assert "hits: /r/ukraine (title)" in r.stdout
    r = fw(tmp_path, "preview", url, "--keywords", '"Washington, D.C.",dnipro')
    assert r.returncode == 0, r.stderr
    # shown as typed: quoted, so that the list reads as the terms it is
    assert 'Keywords:      "Washington, D.C.", dnipro: 2 of 3 entries hit' in r.stdout, r.stdout
    assert 'hits: "Washington, D.C." (title)' in r.stdout
    r = fw(tmp_path, "preview", url, "--keywords", '"Washington, D.C.')
    assert r.returncode == 2 and "--keywords" in r.stderr and "double quote" in r.stderr


def test_discover_feeds_and_order_helpers():
    body = b'<link rel="Alternate Feed" type="application/RSS+XML; charset=utf-8" href=" x.xml ">'
    (link,) = discover_feeds(body, "https://example.org/a/b.html")
    assert link.url == "https://example.org/a/x.xml" and link.type == "application/rss+xml"
    assert (
        discover_feeds(b'<link rel="alternate" type="text/html" href="x">', "https://e.org/") == []
    )
    assert (
        discover_feeds(
            b'<link rel="alternate" type="application/rss+xml" href="javascript:x">',
            "https://e.org/",
        )
        == []
    )
    ordered = newest_first(ENTRIES)
    assert [e.title for e in ordered][0] == "Weather"


def test_a_page_advertising_its_own_url_offers_no_feed():
    """A maintenance page served at the feed's URL, whose <head> advertises that URL:
    "set the feed's url to it" named the URL already configured."""
    page = (
        b'<html><head><link rel="alternate" type="application/rss+xml" title="Blog"'
        b' href="%s"></head><body>Back soon</body></html>'
    )
    url = "https://Example.ORG:443/feed/"
    for href in (b"/feed/", b"HTTPS://example.org/feed/#top", b"https://example.org:443/feed/"):
        assert discover_feeds(page % href, url) == []
        problem = page_problem(page % href, url, "text/html")
        assert problem is not None and "advertises no feed: a login, error" in problem
    # another feed it advertises is still offered, and the same path elsewhere is another URL
    for other in (b"/feed/atom/", b"http://example.org/feed/", b"https://example.org:8443/feed/"):
        assert len(discover_feeds(page % other, url)) == 1


def test_a_validator_given_with_header_that_the_server_honours(tmp_path, srv):
    """`--header 'If-None-Match: ...'` with the feed's own ETag: the server answers 304,
    which has no body to show: preview says so, and exits 1 (no feed was read). It
    crashed with an AssertionError (it took its first request for one without
    validators)."""
    etag = srv._routes["/feed.xml"].etag or ""
    r = fw(tmp_path, "preview", srv.url("/feed.xml"), "--header", f"If-None-Match: {etag}")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "HTTP:          304 Not Modified in " in r.stdout
    assert "drop that --header to see the feed" in r.stdout


WORDPRESS_HEAD = """<!DOCTYPE html><html lang="en-US"><head><meta charset="UTF-8">
<title>About - Blog</title>
%s
<link rel="https://api.w.org/" href="/wp-json/">
<link rel="alternate" title="JSON" type="application/json" href="/wp-json/wp/v2/pages/2">
<link rel="EditURI" type="application/rsd+xml" title="RSD" href="/xmlrpc.php?rsd">
<link rel="alternate" title="oEmbed (JSON)" type="application/json+oembed"
 href="/wp-json/oembed/1.0/embed?url=https%%3A%%2F%%2Fexample.org%%2Fabout%%2F">
<link rel="alternate" title="oEmbed (XML)" type="text/xml+oembed"
 href="/wp-json/oembed/1.0/embed?url=https%%3A%%2F%%2Fexample.org%%2Fabout%%2F&#038;format=xml">
</head><body>About us</body></html>"""


def test_a_wordpress_rest_api_link_is_not_taken_for_a_feed(tmp_path, feed_server):
    """Every WordPress page advertises its REST API record as rel="alternate"
    type="application/json": preview said "it advertises 1 feed: JSON (JSON)" and
    suggested a URL that is not a feed."""
    feed_server.set("/about/", WORDPRESS_HEAD % "", content_type="text/html; charset=UTF-8")
    r = fw(tmp_path, "preview", feed_server.url("/about/"))
    assert r.returncode == 1
    assert "an HTML page that advertises no feed" in r.stdout, r.stdout
    assert "wp-json" not in r.stdout and "Try:" not in r.stdout

    feeds = """<link rel="alternate" type="application/rss+xml" title="Blog &raquo; Feed"
     href="/feed/">
    <link rel="alternate" type="application/rss+xml" title="Blog &raquo; Comments Feed"
     href="/comments/feed/">"""
    feed_server.set("/", WORDPRESS_HEAD % feeds, content_type="text/html; charset=UTF-8")
    r = fw(tmp_path, "preview", feed_server.url("/"))
    assert "it advertises 2 feeds:" in r.stdout, r.stdout
    assert f"Blog \u00bb Feed (RSS): {feed_server.url('/feed/')}" in r.stdout
    assert "wp-json" not in r.stdout

    # a JSON Feed is still found: its own type, and JSON Feed 1.0's application/json
    # with a title or URL that says it is a feed
    jsonfeeds = """<link rel="alternate" type="application/feed+json" href="/a.json">
    <link rel="alternate" type="application/json" title="JSON Feed" href="/b">
    <link rel="alternate" type="application/json" href="/feeds/json">
    <link rel="alternate" type="application/json" href="/api/data.json">"""
    feed_server.set("/json/", WORDPRESS_HEAD % jsonfeeds, content_type="text/html")
    r = fw(tmp_path, "preview", feed_server.url("/json/"))
    assert "it advertises 3 feeds:" in r.stdout, r.stdout
    assert f"(JSON Feed): {feed_server.url('/a.json')}" in r.stdout
    assert f"JSON Feed (JSON Feed): {feed_server.url('/b')}" in r.stdout
    assert f"(JSON Feed): {feed_server.url('/feeds/json')}" in r.stdout
    assert "data.json" not in r.stdout and "wp-json" not in r.stdout


def test_a_page_without_a_charset_header_is_read_in_its_own_declared_encoding(
    tmp_path, feed_server
):
    """A page served as plain "text/html" declares its encoding itself (<meta charset>,
    <meta http-equiv>, a BOM): it was read as UTF-8 all the same, and a windows-1251 or
    Shift_JIS page's titles and non-ASCII links came out garbled ("/�������.xml"), a
    wrong URL suggested."""
    link = '<link rel="alternate" type="application/rss+xml" title="Новости" href="/новости.xml">'
    pages = {
        "/meta": ('<html><head><meta charset="windows-1251">' + link, "cp1251"),
        "/http-equiv": (
            "<html><head><!-- <meta charset=koi8-r> --><META HTTP-EQUIV='Content-Type'"
            " CONTENT='text/html; charset=Windows-1251'>" + link,
            "cp1251",
        ),
        "/sjis": (
            '<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
            '<link rel="alternate" type="application/rss+xml" title="ニュース" href="/ニュース.xml">',
            "shift_jis",
        ),
        "/bom": ("<html><head>" + link, "utf-16"),  # Python writes its BOM
    }
    for path, (page, encoding) in pages.items():
        feed_server.set(path, page.encode(encoding), content_type="text/html")
        r = fw(tmp_path, "preview", feed_server.url(path))
        assert "it advertises 1 feed:" in r.stdout, r.stdout
        if path == "/sjis":
            assert f"ニュース (RSS): {feed_server.url('/ニュース.xml')}" in r.stdout, r.stdout
        else:
            assert f"Новости (RSS): {feed_server.url('/новости.xml')}" in r.stdout, r.stdout

    # the suggested URL is the feed's: fetched percent-encoded as UTF-8, as a URL needs
    feed_server.set(
        "/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8.xml",
        rss(ENTRIES[:1], title="News"),
        content_type="application/rss+xml",
    )
    r = fw(tmp_path, "preview", feed_server.url("/новости.xml"))
    assert r.returncode == 0 and "Markets open" in r.stdout, r.stdout

    # the header's charset still wins over the page's declaration
    page = '<html><head><meta charset="windows-1251">' + link
    feed_server.set("/header", page.encode("utf-8"), content_type="text/html; charset=utf-8")
    r = fw(tmp_path, "preview", feed_server.url("/header"))
    assert f"Новости (RSS): {feed_server.url('/новости.xml')}" in r.stdout, r.stdout


def test_a_slow_regex_has_a_polls_time_and_the_summary_says_it_ran_out(tmp_path, feed_server):
    """`preview -k '/(a|aa)+$/'` on a 40-entry feed took 11.7 s: no regex time for
    the whole command, as a poll has (0.1 s a field, 1 s in all), and its summary said
    "0 of 40 entries hit" without a word of the regex running out of time."""
    slow = "a" * 40 + "b"  # seconds for this pattern, far past 0.1 s
    feed_server.set(
        "/slow.xml",
        rss([entry(i, title=slow, summary=slow) for i in range(40)]),
        content_type="application/rss+xml",
    )
    started = time.monotonic()
    r = fw(tmp_path, "preview", feed_server.url("/slow.xml"), "-k", "/(a|aa)+$/,missile")
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert (
        "Keywords:      /(a|aa)+$/, missile: 0 of 40 entries hit (marked *); a regex ran out"
        " of time on 40 of them (a miss there: 0.1 s a field, 1 s in all, as in a poll)"
    ) in r.stdout, r.stdout
    # the poll's 1 s, not 40 entries x 2 fields x 0.1 s (old: 8 s), plus the start
    assert took < 5, took
