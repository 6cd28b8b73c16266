"""Every file of the feedparser corpus through parse_body: no exception, well-typed snapshots.

One test per corpus folder (about 30) keeps the run short (~4 s for 2,100
files) while a failure still names the file. ``check_case`` is the per-file
step; later steps (diffing a body against itself, ...) belong in it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from feedwatch.alert import build_alert
from feedwatch.diff import diff
from feedwatch.identity import alert_id
from feedwatch.match import compile_rules, evaluate
from feedwatch.model import (
    Enclosure,
    EntrySnapshot,
    FeedConfig,
    FeedSettings,
    IdentityState,
    ParsedFeed,
    Rule,
)
from feedwatch.parse import parse_body
from feedwatch.testing import T0
from feedwatch.text import html_to_text, plain_to_text
from tests.corpus import corpus_cases, corpus_root, read_headers

CASES = corpus_cases()
ROOT = corpus_root()
# The base URL feedparser's own suite serves the corpus from (relative links resolve to it).
BASE = "http://127.0.0.1:8097/"


def _by_folder() -> dict[str, list[tuple[Path, bytes, dict[str, str]]]]:
    folders: dict[str, list[tuple[Path, bytes, dict[str, str]]]] = defaultdict(list)
    for case in CASES:
        folders[case[0].parent.relative_to(ROOT).as_posix()].append(case)
    return dict(sorted(folders.items()))


FOLDERS = _by_folder()
pytestmark = pytest.mark.skipif(not CASES, reason=f"feedparser corpus not found at {ROOT}")


def _check_time(t: datetime | None, where: str) -> None:
    if t is None:
        return
    assert isinstance(t, datetime), where
    assert t.tzinfo is timezone.utc, f"{where}: not UTC: {t!r}"
    assert t.microsecond == 0, f"{where}: not truncated to the second"


def _check_text(s: str, where: str) -> None:
    assert isinstance(s, str), where
    assert s == s.strip(), f"{where}: not stripped"
    # a field read as HTML: reduced for good; one declared plain text keeps its "<"
    as_html = html_to_text(s) == s and "<script" not in s.lower()
    assert as_html or plain_to_text(s) == s, f"{where}: not a fixed point: {s[:200]!r}"


def check_snapshot(e: EntrySnapshot, where: str) -> None:
    """Every field has the type the model promises."""
    assert isinstance(e, EntrySnapshot), where
    assert e.entry_id is None or (
        isinstance(e.entry_id, str) and e.entry_id == e.entry_id.strip() and e.entry_id
    ), where
    assert e.link is None or (isinstance(e.link, str) and e.link and e.link == e.link.strip()), (
        where
    )
    assert e.author is None or (isinstance(e.author, str) and e.author), where
    for name in ("title", "summary", "content"):
        _check_text(getattr(e, name), f"{where}: {name}")
    if e.author is not None:
        _check_text(e.author, f"{where}: author")
    _check_time(e.published, f"{where}: published")
    _check_time(e.updated, f"{where}: updated")
    assert isinstance(e.tags, tuple), where
    assert all(isinstance(t, str) and t for t in e.tags), where
    assert len(set(e.tags)) == len(e.tags), f"{where}: duplicate tags {e.tags}"
    assert isinstance(e.enclosures, tuple), where
    for enc in e.enclosures:
        assert isinstance(enc, Enclosure), where
        assert isinstance(enc.url, str) and enc.url, where
        assert enc.type is None or isinstance(enc.type, str), where
        assert enc.length is None or (type(enc.length) is int and enc.length >= 0), where


def check_case(path: Path, body: bytes, headers: dict[str, str]) -> ParsedFeed:
    """Parse one corpus file and check the result's shape; returns it for further steps."""
    where = path.relative_to(ROOT).as_posix()
    parsed = parse_body(body, headers, url=BASE + where)
    assert isinstance(parsed, ParsedFeed), where
    assert isinstance(parsed.is_feed, bool), where
    assert isinstance(parsed.warnings, tuple), where
    assert all(isinstance(w, str) and w for w in parsed.warnings), where
    assert parsed.dropped_entries == 0, where
    assert parsed.title is None or isinstance(parsed.title, str), where
    assert parsed.link is None or isinstance(parsed.link, str), where
    if parsed.entries:
        assert parsed.is_feed, f"{where}: entries but not a feed"
    for i, e in enumerate(parsed.entries):
        check_snapshot(e, f"{where}: entry {i}")
    return parsed


SETTINGS = FeedSettings(first_poll="alert")
_SYLLABLE = re.compile(r"(\w{3})(?=\w)")


def _hyphened(text: str) -> str:
    """``text`` with a soft hyphen after every third letter of a word, a zero-width space
    after its first character."""
    text = _SYLLABLE.sub("\\1\u00ad", text)
    return text[:1] + "\u200b" + text[1:] if text else text


RULES = compile_rules([Rule("r", any=("the", "feed*", "/\\d+/"), not_=("zzzz",))])
FEED = FeedConfig(name="corpus", url=BASE, sinks=("s",), rules=(Rule("r", any=("the",)),))


def check_diff_path(parsed: ParsedFeed, where: str) -> None:
    """The rest of the path: diff (first poll, then against itself), match, build the alert."""
    first = diff(
        "corpus",
        {},
        parsed.entries,
        settings=SETTINGS,
        identity=IdentityState(),
        baselined=False,
        now=T0,
    )
    stored = {row.identity: row for row in first.upserts}
    for change in first.changes:
        ok, matched = evaluate(RULES, change.entry)
        aid = alert_id(
            "corpus",
            change.identity,
            change.kind,
            change.fingerprint,
            change.entry.published,
            change.entry.updated,
        )
        alert = build_alert(FEED, parsed.title, change, matched, T0, aid)
        assert (
            alert.payload["entry"]["title"] == change.entry.title[:65536]
            or len(change.entry.title) > 65536
        ), where
    again = diff(
        "corpus",
        stored,
        parsed.entries,
        settings=SETTINGS,
        identity=first.identity,
        baselined=True,
        now=T0 + timedelta(hours=1),
    )
    assert again.changes == (), (
        f"{where}: a body diffed against itself changed: {again.changes[:1]}"
    )
    # soft hyphens inside its words (a CMS's hyphenation pass), a zero-width space after
    # its first: not a change (SPEC 4, noise), whatever the entry and its identity
    hyphened = [
        replace(e, **{f: _hyphened(getattr(e, f)) for f in ("title", "summary", "content")})
        for e in parsed.entries
    ]
    marked = diff(
        "corpus",
        stored,
        hyphened,
        settings=SETTINGS,
        identity=first.identity,
        baselined=True,
        now=T0 + timedelta(hours=1),
    )
    assert marked.changes == (), f"{where}: soft hyphens changed: {marked.changes[:1]}"
    # every entry edited: each known entry is an update (or churn-silent), never new
    edited = [replace(e, summary=e.summary + " edited") for e in parsed.entries]
    third = diff(
        "corpus",
        stored,
        edited,
        settings=SETTINGS,
        identity=first.identity,
        baselined=True,
        now=T0 + timedelta(hours=2),
    )
    assert all(c.kind == "updated" for c in third.changes), where


@pytest.mark.parametrize("folder", list(FOLDERS) or ["<none>"])
def test_corpus_folder(folder: str) -> None:
    for path, body, headers in FOLDERS[folder]:
        parsed = check_case(path, body, headers)
        check_diff_path(parsed, path.relative_to(ROOT).as_posix())
        # Every well-formed case is a recognisable feed, except Microsoft CDF (not a
        # format feedwatch reads).
        if folder.startswith("wellformed/") and folder != "wellformed/cdf":
            assert parsed.is_feed, f"{path}: not recognised as a feed: {parsed.warnings}"


def test_corpus_is_complete_and_headers_are_read() -> None:
    assert len(CASES) >= 2100
    assert not any(p.name == "NOTICE" for p, _, _ in CASES)
    with_headers = {p.relative_to(ROOT).as_posix(): h for p, _, h in CASES if h}
    assert len(with_headers) >= 100
    assert with_headers["encoding/bozo_http_i18n.xml"] == {"content-type": "text/xml"}
    assert with_headers["wellformed/http/headers_content_location-relative.xml"] == {
        "content-location": "/feed/pg.cgi"
    }
    assert all(name == name.lower() for h in with_headers.values() for name in h)


def test_read_headers_format() -> None:
    body = (
        b"<!--\nHeader:      Content-type: text/xml; charset=windows-1252\n"
        b"Header:      Last-Modified:\nHeader: X-Foo: a: b\nDescription: not a header\n-->\n<rss/>"
    )
    assert read_headers(body) == {
        "content-type": "text/xml; charset=windows-1252",
        "last-modified": "",
        "x-foo": "a: b",
    }


def test_corpus_spot_checks() -> None:
    cases = {p.relative_to(ROOT).as_posix(): (p, b, h) for p, b, h in CASES}
    example = check_case(*cases["json/example.json"])
    assert example.is_feed and [e.entry_id for e in example.entries] == ["2", "1"]
    assert example.entries[1].content == "Hello, world!"  # the <script> is gone
    empty = check_case(*cases["illformed/rss_empty_document.xml"])
    assert not empty.is_feed
    relative = check_case(*cases["wellformed/http/headers_content_location-relative.xml"])
    assert relative.link == "http://127.0.0.1:8097/feed/absolute"


_DECLARATION = re.compile(rb"^<\?xml[^>]*?\?>")


@pytest.mark.parametrize("label", ["windows-1252", "ISO-8859-15", "ISO-8859-1"])
def test_a_utf8_corpus_file_labelled_in_a_single_byte_encoding_reads_the_same(label: str) -> None:
    """Every corpus file that is UTF-8 beyond ASCII, its declaration (and Content-Type
    charset) made to say ``label``: the same title and entries as labelled right, with
    a warning naming the label (feedparser read five of them in mojibake, and the
    windows-1252 file whose bytes it leaves undefined as UTF-8)."""
    declared = b'<?xml version="1.0" encoding="%s"?>' % label.encode()
    seen = 0
    for path, body, headers in CASES:
        if body.isascii() or not body.startswith(b"<"):
            continue
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            continue
        seen += 1
        where = path.relative_to(ROOT).as_posix()
        relabelled = dict(headers)
        if "content-type" in headers:
            bare = re.sub(r";\s*charset\s*=\s*[^;\s]*", "", headers["content-type"])
            relabelled["content-type"] = f"{bare}; charset={label}"
        if _DECLARATION.match(body):
            mislabelled = _DECLARATION.sub(lambda _: declared, body, count=1)
        else:
            mislabelled = declared + body
        right = parse_body(body, headers, url=BASE + where)
        got = parse_body(mislabelled, relabelled, url=BASE + where)
        assert (got.title, got.entries) == (right.title, right.entries), where
        assert f"labelled {label}, but the body is UTF-8: read as UTF-8" in got.warnings, where
    assert seen >= 10


def test_feedparser_fast_paths_parse_the_corpus_as_feedparser_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """feedwatch.parse speeds feedparser up (URL joins remembered, plain dict keys looked
    up plainly, content params copied plainly, no failed SAX driver import): every
    corpus file must parse to the same ParsedFeed with feedparser's own functions put
    back."""
    import feedparser.api
    import feedparser.util

    cases = [(p, body, headers) for p, body, headers in CASES]
    fast = [parse_body(body, headers, url=BASE + p.name) for p, body, headers in cases]

    cls = feedparser.util.FeedParserDict
    for name in ("get", "__getitem__", "__contains__"):
        monkeypatch.setattr(cls, name, getattr(cls, name).__wrapped__)
    for mod in _feedparser_modules():
        for name in ("_urljoin", "make_safe_absolute_uri"):
            fn = getattr(mod, name, None)
            if fn is not None and hasattr(fn, "__wrapped__"):
                monkeypatch.setattr(mod, name, fn.__wrapped__)
    import feedparser.mixin

    monkeypatch.setattr(feedparser.mixin, "copy", feedparser.mixin.copy.__wrapped__)
    monkeypatch.setattr(feedparser.api, "PREFERRED_XML_PARSERS", ["drv_libxml2"])
    slow = [parse_body(body, headers, url=BASE + p.name) for p, body, headers in cases]
    differ = [p.name for (p, _, _), a, b in zip(cases, fast, slow, strict=True) if a != b]
    assert not differ, differ[:10]
    assert len(cases) > 2000


def _feedparser_modules() -> list[object]:
    import importlib

    out = []
    for name in ("urls", "mixin", "namespaces._base", "sanitizer", "api"):
        out.append(importlib.import_module(f"feedparser.{name}"))
    return out
