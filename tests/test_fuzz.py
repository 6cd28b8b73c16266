"""Property-based fuzzing of parse -> diff -> match -> alert -> every renderer.

Hypothesis generates RSS 2.0, Atom 1.0 and JSON Feed bodies whose titles, summaries,
ids, links and dates are hostile: control characters, CR/LF, NUL, lone surrogates (in
JSON), markup and broken markup, template syntax, duplicate ids, dates from year 1 to
9999 in any zone, garbage dates. For each body:

- nothing raises, and the parser never falls over (no "parser failed" warning);
- the diff is idempotent: the same entries again (re-parsed) change nothing;
- alert ids are stable: the whole pipeline run again (another day) gives the same ids;
- every renderer takes every alert (and all of them as a digest) without raising:
  email ``build_message``, Slack, Discord, Teams, ntfy, the json payload;
- rendered email headers are single lines from a fixed set (no CR/LF injection), ntfy
  headers are one line of ASCII, and the json payload round-trips;
- the entries survive the SQLite state exactly (times of year 1..9999 included).

Examples are kept modest (about 15 s in all); ``FEEDWATCH_FUZZ_EXAMPLES`` raises them.
"""

from __future__ import annotations

import email
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email import policy
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedwatch.alert import build_alert
from feedwatch.diff import DiffResult, diff
from feedwatch.identity import alert_id
from feedwatch.match import compile_rules, evaluate
from feedwatch.model import (
    Alert,
    FeedConfig,
    FeedSettings,
    IdentityState,
    ParsedFeed,
    Rule,
    SinkConfig,
    StoredEntry,
)
from feedwatch.parse import parse_body
from feedwatch.sinks import formats
from feedwatch.sinks.email import build_message
from feedwatch.sinks.webhook import render
from feedwatch.store.base import Delivery, PollCommit
from feedwatch.store.sqlite import SqliteStore

EXAMPLES = int(os.environ.get("FEEDWATCH_FUZZ_EXAMPLES", "80"))
pytestmark = pytest.mark.timeout(60 + EXAMPLES)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NOW = datetime(2024, 11, 22, 15, 57, 3, tzinfo=timezone.utc)
SETTINGS = FeedSettings(first_poll="alert", id_policy="auto")
FEED = FeedConfig(
    name="fuzz",
    url="https://example.org/feed",
    settings=SETTINGS,
    sinks=("mail", "hook"),
    rules=(
        Rule(name="words", any=("alert", "missile*", "/\\bx{2,}\\b/"), not_=("nope",)),
        Rule(name="all", all=("é",), fields=("title", "summary", "content", "tags", "link")),
    ),
)
MAIL = SinkConfig(
    name="mail",
    type="email",
    options={
        "host": "127.0.0.1",
        "port": 25,
        "security": "none",
        "username": None,
        "password": None,
        "from_": "feedwatch <alerts@example.org>",
        "to": ("me@example.org",),
        "timeout": 5.0,
    },
)
MAIL_HEADERS = {
    "subject", "from", "to", "date", "message-id", "in-reply-to", "references", "list-id",
    "x-feedwatch-feed", "x-feedwatch-alert-id", "x-feedwatch-kind", "x-feedwatch-alert-count",
    "auto-submitted",
    "mime-version", "content-type", "content-transfer-encoding",
}  # fmt: skip

# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

NASTY = [
    "\r\n", "\n", "\r", "\x00", "\x07", "\x1b[31m", "\u2028", "\u2029", "\x85", "\ufeff",
    "<script>alert(1)</script>", "<b>", "</p>", "<p>", "<br/>", "<img src=x onerror=y>",
    "<a href='javascript:alert(1)'>x</a>", "&amp;", "&lt;", "&gt;", "&nbsp;", "&amp;lt;b&amp;gt;",
    "&#0;", "&#xD800;", "&#x1F600;", "&#1114112;", "&bogus;", "&", "<", ">", "<!--", "-->",
    "<![CDATA[x]]>", "]]>", "{{ 7+7 }}", "{0}", "%s", "${HOME}", "javascript:alert(1)",
    "Bcc: x@evil.example", "@everyone", "<!channel>", "*_~`|>[]#", " ", "\t", "é", "e\u0301",
    "😀", "alert", "missiles", "nope", "xx", "x" * 300, "ﬁ", "İ",
]  # fmt: skip

_piece = st.one_of(st.text(max_size=12), st.sampled_from(NASTY))
text = st.lists(_piece, max_size=6).map("".join)
# JSON strings may carry lone surrogates (as \\udXXX escapes)
json_text = st.one_of(text, st.text(st.characters(blacklist_categories=()), max_size=20))

ZONES = [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))]
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(ZONES)
)
date = st.one_of(
    st.none(),
    moments.map(lambda d: ("rfc822", d)),
    moments.map(lambda d: ("iso", d)),
    moments.map(lambda d: ("naive", d)),
    st.sampled_from(["", "yesterday", "0000-00-00", "9999-99-99T99:99:99Z", "Fri, 32 Foo 2024"]),
)
ids = st.one_of(st.none(), st.sampled_from(["a", "b", "dup", "dup", " a "]), text)
links = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "https://example.org/1",
            "https://example.org/1",
            "https://example.org/1?utm_source=x",
            "javascript:alert(1)",
            "/relative/path",
            "https://exämple.org/é path",
            "http://[::1]:8080/x",
            "https://example.org/a?b=1&c=2#f",
            "mailto:x@example.org",
            "data:text/html,<script>alert(1)</script>",
        ]
    ),
    text,
)
entry = st.fixed_dictionaries(
    {
        "id": ids,
        "title": text,
        "link": links,
        "published": date,
        "updated": date,
        "summary": text,
        "content": text,
        "tags": st.lists(text, max_size=3),
        "html": st.booleans(),  # summary as raw markup (CDATA) rather than escaped text
    }
)
json_entry = st.fixed_dictionaries(
    {
        "id": st.one_of(ids, json_text, st.integers(), st.floats(allow_nan=False)),
        "title": json_text,
        "link": links,
        "published": date,
        "updated": date,
        "summary": json_text,
        "content": json_text,
        "tags": st.lists(json_text, max_size=3),
        "html": st.booleans(),
    }
)


def _date(value: Any, kind: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    style, d = value
    if style == "naive":
        return d.replace(tzinfo=None).isoformat()
    if style == "rfc822" and kind == "rss":
        return format_datetime(d)
    return d.isoformat()


def _cdata(s: str) -> str:
    return "<![CDATA[" + s + "]]>"


def render_rss(entries: list[dict[str, Any]], title: str) -> bytes:
    items = []
    for e in entries:
        parts = ["<item>"]
        if e["id"] is not None:
            parts.append(f'<guid isPermaLink="false">{escape(e["id"])}</guid>')
        parts.append(f"<title>{escape(e['title'])}</title>")
        if e["link"] is not None:
            parts.append(f"<link>{escape(e['link'])}</link>")
        for tag, key in (("pubDate", "published"), ("atom:updated", "updated")):
            d = _date(e[key], "rss")
            if d is not None:
                parts.append(f"<{tag}>{escape(d)}</{tag}>")
        summary = _cdata(e["summary"]) if e["html"] else escape(e["summary"])
        parts.append(f"<description>{summary}</description>")
        if e["content"]:
            parts.append(f"<content:encoded>{_cdata(e['content'])}</content:encoded>")
        parts += [f"<category>{escape(t)}</category>" for t in e["tags"]]
        parts.append("</item>")
        items.append("".join(parts))
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"'
        ' xmlns:atom="http://www.w3.org/2005/Atom"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
        f"<title>{escape(title)}</title><link>https://example.org/</link>"
        + "".join(items)
        + "</channel></rss>"
    ).encode("utf-8", "surrogatepass")


def render_atom(entries: list[dict[str, Any]], title: str) -> bytes:
    out = []
    for e in entries:
        parts = ["<entry>"]
        if e["id"] is not None:
            parts.append(f"<id>{escape(e['id'])}</id>")
        parts.append(f'<title type="html">{escape(e["title"])}</title>')
        if e["link"] is not None:
            parts.append(f"<link href={quoteattr(e['link'])}/>")
        for key in ("published", "updated"):
            d = _date(e[key], "atom")
            if d is not None:
                parts.append(f"<{key}>{escape(d)}</{key}>")
        kind = "html" if e["html"] else "text"
        parts.append(f'<summary type="{kind}">{escape(e["summary"])}</summary>')
        if e["content"]:
            parts.append(f'<content type="html">{escape(e["content"])}</content>')
        parts += [f"<category term={quoteattr(t)}/>" for t in e["tags"]]
        parts.append("</entry>")
        out.append("".join(parts))
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{escape(title)}</title><id>urn:fuzz</id>" + "".join(out) + "</feed>"
    ).encode("utf-8", "surrogatepass")


def render_json(entries: list[dict[str, Any]], title: str) -> bytes:
    items = []
    for e in entries:
        item: dict[str, Any] = {"title": e["title"], "summary": e["summary"], "tags": e["tags"]}
        if e["id"] is not None:
            item["id"] = e["id"]
        if e["link"] is not None:
            item["url"] = e["link"]
        for src, dst in (("published", "date_published"), ("updated", "date_modified")):
            d = _date(e[src], "json")
            if d is not None:
                item[dst] = d
        item["content_html" if e["html"] else "content_text"] = e["content"]
        items.append(item)
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": title, "items": items}
    return json.dumps(doc).encode()  # ensure_ascii: lone surrogates as \\udXXX escapes


feeds = st.one_of(
    st.tuples(st.just("rss"), st.lists(entry, max_size=8), text),
    st.tuples(st.just("atom"), st.lists(entry, max_size=8), text),
    st.tuples(st.just("json"), st.lists(json_entry, max_size=8), json_text),
)
RENDER = {"rss": render_rss, "atom": render_atom, "json": render_json}
CTYPE = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}

# --------------------------------------------------------------------------
# The pipeline, as poll.py runs it
# --------------------------------------------------------------------------


def parse(kind: str, body: bytes) -> ParsedFeed:
    parsed = parse_body(body, {"Content-Type": CTYPE[kind]}, url="https://example.org/feed")
    assert not any(w.startswith("parser failed") for w in parsed.warnings), parsed.warnings
    return parsed


def run_diff(
    parsed: ParsedFeed,
    stored: dict[str, StoredEntry],
    state: IdentityState,
    now: datetime,
    baselined: bool,
) -> DiffResult:
    return diff(
        FEED.name,
        stored,
        parsed.entries,
        settings=SETTINGS,
        identity=state,
        baselined=baselined,
        now=now,
    )


def alerts_for(
    parsed: ParsedFeed, result: DiffResult, now: datetime, feed: FeedConfig = FEED
) -> list[Alert]:
    rules = compile_rules(feed.rules)
    out = []
    for change in result.changes:
        _ok, matched = evaluate(rules, change.entry)  # must not raise; alert all for coverage
        aid = alert_id(
            feed.name,
            change.identity,
            change.kind,
            change.fingerprint,
            change.entry.published,
            change.entry.updated,
        )
        out.append(build_alert(feed, parsed.title, change, matched, now, aid))
    return out


def deliveries(alerts: list[Alert]) -> list[Delivery]:
    return [
        Delivery(
            alert_id=a.id,
            sink="mail",
            feed=a.feed,
            kind=a.kind,
            payload=a.payload,
            thread_id=a.thread_id,
            created_at=NOW,
        )
        for a in alerts
    ]


def check_email(batch: list[Delivery]) -> None:
    data = build_message(batch, MAIL).as_bytes(policy=policy.SMTP)
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        assert line.split(b":", 1)[0].decode("ascii").lower() in MAIL_HEADERS, line
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b"")
    assert len(max(head.split(b"\r\n"), key=len)) <= 998
    msg = email.message_from_bytes(data, policy=policy.default)
    for name, value in msg.items():
        assert not re.search(r"[\x00-\x1f\x7f]", str(value)), (name, value)
    assert msg["To"] == "me@example.org" and msg["Bcc"] is None and msg["Cc"] is None


def check_renderers(payloads: list[dict[str, Any]]) -> None:
    for fmt in ("json", "slack", "discord", "teams", "ntfy"):
        body, ctype, headers = render(fmt, payloads)
        assert isinstance(body, bytes)
        if ctype == "application/json":
            json.loads(body)
        for name, value in headers.items():
            assert value.isascii() and not re.search(r"[\x00-\x1f\x7f]", value), (name, value)
    for p in payloads:
        assert json.loads(formats.payload_json(p)) == json.loads(json.dumps(p))


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


@FUZZ
@given(feed=feeds)
def test_pipeline_never_raises_is_idempotent_and_renders_safely(
    feed: tuple[str, list[dict[str, Any]], str],
) -> None:
    kind, entries, title = feed
    body = RENDER[kind](entries, title)
    parsed = parse(kind, body)

    first = run_diff(parsed, {}, IdentityState(), NOW, baselined=False)
    alerts = alerts_for(parsed, first, NOW)
    assert len(alerts) == len(first.changes) == first.new

    # idempotent: the same body again (parsed afresh) changes nothing
    stored = {e.identity: e for e in first.upserts}
    again = run_diff(parse(kind, body), stored, first.identity, NOW + timedelta(hours=1), True)
    assert again.changes == () and again.upserts == () and again.rekeys == ()
    assert set(again.touched) == set(stored)

    # stable ids: the whole pipeline another day gives the same alerts
    later = NOW + timedelta(days=3)
    replay = run_diff(parse(kind, body), {}, IdentityState(), later, baselined=False)
    assert [a.id for a in alerts_for(parsed, replay, later)] == [a.id for a in alerts]

    # every renderer takes every alert, and all of them at once (a digest)
    payloads = [dict(a.payload) for a in alerts]
    batch = deliveries(alerts)
    for one, d in zip(payloads, batch, strict=True):
        check_renderers([one])
        check_email([d])
        for s in formats_strings(one):
            assert not re.search("[\ud800-\udfff]", s), "a lone surrogate reached a payload"
        link = one["entry"]["link"]
        assert link is None or link.lower().startswith(("http://", "https://"))
    if payloads:
        check_renderers(payloads)
        check_email(batch)


def formats_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from formats_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from formats_strings(v)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "state.db"
    with SqliteStore(path) as s:
        yield s


@settings(
    max_examples=max(10, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(feed=feeds)
def test_entries_survive_the_state_file_exactly(
    store: SqliteStore, feed: tuple[str, list[dict[str, Any]], str]
) -> None:
    kind, entries, title = feed
    body = RENDER[kind](entries, title)
    parsed = parse(kind, body)
    name = f"fuzz-{uuid.uuid4().hex}"
    result = diff(
        name,
        {},
        parsed.entries,
        settings=SETTINGS,
        identity=IdentityState(),
        baselined=False,
        now=NOW,
    )
    alerts = alerts_for(parsed, result, NOW, replace(FEED, name=name))
    store.commit_poll(
        PollCommit(
            feed=name,
            url="https://example.org/feed",
            now=NOW,
            http_status=200,
            etag=None,
            last_modified=None,
            body_hash="x",
            title=parsed.title,
            identity=result.identity,
            upserts=result.upserts,
            alerts=tuple(alerts),
        )
    )
    back = store.entries(name)
    assert back == {e.identity: e for e in result.upserts}
    again = diff(
        name,
        back,
        parse(kind, body).entries,
        settings=SETTINGS,
        identity=result.identity,
        baselined=True,
        now=NOW + timedelta(minutes=5),
    )
    assert again.changes == () and again.upserts == ()
    queued = {d.alert_id: d.payload for d in store.pending() if d.feed == name}
    assert queued == {a.id: json.loads(json.dumps(dict(a.payload))) for a in alerts}
