"""The SPEC section 5 payload, routing and identity helpers."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedwatch.alert import build_alert, build_notice, cap, format_time, route, safe_link
from feedwatch.identity import (
    alert_id,
    detect_policy,
    duplicate_key,
    fingerprint,
    normalize_link,
)
from feedwatch.model import (
    Change,
    Enclosure,
    EntrySnapshot,
    FeedConfig,
    FieldChange,
    Rule,
    RuleMatch,
)
from feedwatch.sinks import formats
from feedwatch.testing import T0, entry

FEED = FeedConfig(
    name="moscow-times",
    url="https://www.themoscowtimes.com/rss/news",
    tags=("news",),
    sinks=("me", "chat"),
    rules=(
        Rule("missiles", any=("hypersonic",)),
        Rule("urgent", any=("urgent",), sinks=("pager",)),
    ),
)


def change(e: EntrySnapshot, kind="new", changes=None) -> Change:
    return Change(
        kind=kind,
        identity="g:" + (e.entry_id or ""),
        entry=e,
        fingerprint=fingerprint(e.title, e.summary, e.content),
        changes=changes or {},
        new_alert_id="n" * 32,
    )


def test_payload_shape_matches_spec():
    e = entry(1, title="Hypersonic strike", tags=["Ukraine war"], author="The Moscow Times")
    a = build_alert(
        FEED, "The Moscow Times", change(e), (RuleMatch("missiles", ("hypersonic",)),), T0, "abc"
    )
    p = a.payload
    assert list(p) == [
        "version",
        "id",
        "kind",
        "detected_at",
        "feed",
        "entry",
        "changes",
        "matched",
        "message",
    ]
    assert p["version"] == 1 and p["id"] == "abc" and p["kind"] == "new"
    assert p["detected_at"] == "2024-11-22T10:40:17Z"
    assert p["feed"] == {
        "name": "moscow-times",
        "url": FEED.url,
        "title": "The Moscow Times",
        "tags": ["news"],
    }
    assert list(p["entry"]) == [
        "id",
        "title",
        "link",
        "author",
        "published",
        "updated",
        "summary",
        "content",
        "tags",
        "enclosures",
    ]
    assert p["entry"]["published"] == "2024-11-22T10:40:17Z" and p["entry"]["updated"] is None
    assert p["matched"] == [{"rule": "missiles", "terms": ["hypersonic"]}]
    assert p["changes"] == {} and p["message"] is None
    assert a.sinks == ("me", "chat")
    assert a.thread_id == "n" * 32


def test_updated_changes_rendered():
    e = entry(1)
    c = change(
        e, "updated", {"updated": FieldChange("2024-11-22T10:40:17Z", "2024-11-22T15:56:45Z")}
    )
    p = build_alert(FEED, None, c, (), T0, "x").payload
    assert p["changes"] == {
        "updated": {"old": "2024-11-22T10:40:17Z", "new": "2024-11-22T15:56:45Z"}
    }


def test_routing_rule_sinks_replace_feed_sinks_union():
    assert route(FEED, [RuleMatch("urgent", ("urgent",))]) == ("pager",)
    assert route(FEED, [RuleMatch("missiles", ()), RuleMatch("urgent", ())]) == (
        "me",
        "chat",
        "pager",
    )
    assert route(FEED, []) == ("me", "chat")


def test_only_http_links_leave():
    assert safe_link("javascript:alert(1)") is None
    assert safe_link("data:text/html,x") is None
    assert safe_link("file:///etc/passwd") is None
    assert safe_link(" https://x.org/a ") == "https://x.org/a"
    assert safe_link("https://x.org/a\r\nBcc: y") is None
    e = entry(1, link="javascript:alert(1)")
    assert build_alert(FEED, None, change(e), (), T0, "i").payload["entry"]["link"] is None


def test_a_link_with_a_space_is_percent_encoded_not_dropped():
    """A podcast's file name often has spaces: the link and the enclosure stay, encoded
    as a browser sends them; a line break, tab or NUL still drops a link."""
    e = replace(
        entry(1, link="https://example.org/shows/My Show/episode 1.html"),
        enclosures=(Enclosure("https://cdn.example.org/My Show\u00a0- 1.mp3", "audio/mpeg", 9),),
    )
    p = build_alert(FEED, None, change(e), (), T0, "i").payload["entry"]
    assert p["link"] == "https://example.org/shows/My%20Show/episode%201.html"
    assert p["enclosures"] == [
        {
            "url": "https://cdn.example.org/My%20Show%C2%A0-%201.mp3",
            "type": "audio/mpeg",
            "length": 9,
        }
    ]
    for bad in ("https://x.org/a\tb", "https://x.org/a\nb", "https://x.org/a b\r\nBcc: y"):
        assert safe_link(bad) is None
    assert safe_link("javascript:alert(1) //x") is None
    assert formats.safe_link(p["link"]) == p["link"]  # a chat message links it as it is


@pytest.mark.parametrize("char", ["x", "é", "中", "🚀"])
def test_strings_capped_at_64_kib_of_utf_8(char: str):
    """Counted in characters, 65,536 CJK characters were 192 KiB of the "64 KiB" cap."""
    e = entry(1, title=char * 100_000, summary=char * 10)
    p = build_alert(FEED, None, change(e), (), T0, "i").payload["entry"]
    t = p["title"]
    assert t.endswith("…") and 65536 - 3 <= len(t.encode()) <= 65536
    assert t[:-1] == char * len(t[:-1])  # cut between characters
    assert p["summary"] == char * 10
    assert cap("short") == "short" and cap(None) is None


def test_notice_envelope():
    n = build_notice(FEED, "T", "flood", "60 new entries", T0, key="k")
    p = n.payload
    assert p["kind"] == "flood" and p["entry"] is None and p["changes"] == {} and p["matched"] == []
    assert p["message"] == "60 new entries"
    assert n.sinks == FEED.sinks
    assert build_notice(FEED, "T", "flood", "other text", T0, key="k").id == n.id


def test_format_time_utc():
    from datetime import datetime, timedelta, timezone

    dt = datetime(2024, 11, 22, 18, 40, 17, tzinfo=timezone(timedelta(hours=3)))
    assert format_time(dt) == "2024-11-22T15:40:17Z"
    assert format_time(None) is None


def test_link_normalisation_drops_tracking():
    assert (
        normalize_link("HTTPS://Example.ORG/a?utm_source=x&id=3&fbclid=y")
        == "https://example.org/a?id=3"
    )
    assert normalize_link("https://example.org/a?_=12345") == "https://example.org/a"
    assert normalize_link("https://example.org/a?page=2") == "https://example.org/a?page=2"


def test_detect_policy_thresholds():
    ten = [entry(i) for i in range(10)]
    assert detect_policy(ten) == "guid"
    from dataclasses import replace

    one_dup = ten[:9] + [replace(ten[9], entry_id=ten[0].entry_id)]
    assert detect_policy(one_dup) == "guid"  # 9 of 10 distinct = 90%
    two_dup = ten[:8] + [replace(e, entry_id="same") for e in ten[8:]]
    assert detect_policy(two_dup) == "guid"  # ids 8 + "same" = 9 distinct
    no_ids = [replace(e, entry_id=None) for e in ten]
    assert detect_policy(no_ids) == "link"
    bare = [replace(e, entry_id=None, link=None) for e in ten]
    assert detect_policy(bare) == "content"
    assert detect_policy([]) is None


@given(st.text(), st.text(), st.text())
def test_fingerprint_ignores_whitespace_layout(a, b, c):
    assert fingerprint(a, b, c) == fingerprint(f"  {a} ", "\n".join(b.split(" ")), c + "\t")


@given(st.text(max_size=20), st.sampled_from(["new", "updated"]))
def test_alert_id_is_deterministic_and_kind_sensitive(ident, kind):
    a = alert_id("f", ident, kind, "v1:x", T0, None)
    assert a == alert_id("f", ident, kind, "v1:x", T0, None)
    other = "updated" if kind == "new" else "new"
    assert a != alert_id("f", ident, other, "v1:x", T0, None)
    assert len(a) == 32


def test_duplicate_key_is_the_story_for_new_and_the_version_for_updated():
    a = entry(1, link="https://News.example/2026/story?utm_source=world&id=7")
    b = entry(2, link="https://news.example/2026/story?id=7&utm_medium=rss", updated=T0)
    other = entry(1, link="https://news.example/2026/other?id=7")
    assert duplicate_key("new", a, "v1:x") == duplicate_key("new", b, "v1:y")  # any version
    assert duplicate_key("new", a, "v1:x") != duplicate_key("new", other, "v1:x")
    upd = duplicate_key("updated", a, "v1:x")
    assert upd == duplicate_key("updated", replace(b, updated=None), "v1:x")
    assert upd != duplicate_key("updated", b, "v1:x")  # other times: another version
    assert upd != duplicate_key("updated", a, "v1:z")  # other text
    assert upd != duplicate_key("new", a, "v1:x")
    assert duplicate_key("new", entry(1, link=None), "v1:x") is None


def test_a_short_secret_of_the_feeds_path_is_masked_in_its_entries_links():
    """Resolved against ".../u/${U}/feed.xml", a relative link carries U's value: a
    2-3 character one was left in the alert (secrets_in saw only longer ones)."""
    from feedwatch.alert import entry_payload
    from feedwatch.redact import clear_secrets, register_secret

    register_secret("xyz")
    try:
        e = entry(1, link="http://h.example/u/xyz/item/1")
        link = entry_payload(e, "http://h.example/u/xyz/feed.xml")["link"]
        assert link == "http://h.example/u/***/item/1"
        other = entry(2, link="http://h.example/xyzzy/item")  # not a whole segment
        assert entry_payload(other, "http://h.example/u/xyz/feed.xml")["link"] == other.link
    finally:
        clear_secrets()
