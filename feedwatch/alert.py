"""The alert payload of SPEC section 5, built from a change and its matches.

Pure: everything it needs (the time included) comes in as values, so the same
change always renders to the same payload with the same id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from feedwatch.identity import duplicate_key, notice_id
from feedwatch.model import Alert, Change, EntrySnapshot, FeedConfig, RuleMatch
from feedwatch.payload import format_time as payload_time
from feedwatch.redact import mask, redact, redact_url, secrets_in

MAX_STRING = 64 * 1024
PAYLOAD_VERSION = 1


def cap(text: str | None, limit: int = MAX_STRING) -> str | None:
    return None if text is None else cap_text(text, limit)


def cap_text(text: str, limit: int = MAX_STRING) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8 (SPEC 5: 64 KiB), ending in "…"
    when cut: counted in characters, 65,536 CJK characters were 192 KiB."""
    if len(text) <= limit // 4:  # no character takes more than 4 bytes
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "…"  # (a cut character goes)


def format_time(dt: datetime | None) -> str | None:
    return None if dt is None else payload_time(dt)


def safe_link(link: str | None) -> str | None:
    """Only http(s) links leave in alerts (no javascript:, data:, file:), none with a line
    break, tab or NUL; a space (a podcast's "My Show - Episode 1.mp3") is percent-encoded,
    as a browser sends it, not a reason to drop the link."""
    if not link:
        return None
    stripped = link.strip()
    lower = stripped.lower()
    if not lower.startswith(("http://", "https://")) or any(c in stripped for c in "\r\n\t\x00"):
        return None
    if any(c.isspace() for c in stripped):
        stripped = "".join(quote(c) if c.isspace() else c for c in stripped)
    return cap(stripped)


def _without_url_secrets(link: str | None, feed_url: str) -> str | None:
    """An entry's link (or enclosure's), with each secret of the feed's own URL path
    and query masked: a relative link resolved against that URL carries its path, and
    a same-document one ("#item") its query too (an expanded ${VAR} there). Only this
    feed's, and only its URL's: a value masked in every link of every feed would
    mangle links that merely contain it."""
    if not link:
        return link
    parts = urlsplit(feed_url)
    return mask(link, secrets_in(parts.netloc) + secrets_in(parts.path) + secrets_in(parts.query))


def entry_payload(entry: EntrySnapshot, feed_url: str = "") -> dict[str, Any]:
    return {
        "id": cap(entry.entry_id),
        "title": cap(entry.title),
        "link": _without_url_secrets(safe_link(entry.link), feed_url),
        "author": cap(entry.author),
        "published": format_time(entry.published),
        "updated": format_time(entry.updated),
        "summary": cap(entry.summary),
        "content": cap(entry.content),
        "tags": [cap(t) for t in entry.tags],
        "enclosures": [
            {
                "url": _without_url_secrets(safe_link(e.url), feed_url),
                "type": cap(e.type),
                "length": e.length,
            }
            for e in entry.enclosures
            if safe_link(e.url)
        ],
    }


def feed_payload(feed: FeedConfig, title: str | None) -> dict[str, Any]:
    # The configured URL may carry user-info or an expanded ${VAR}: never in an alert;
    # nor may a name or tag written with one (SPEC 2: expanded values show as ***).
    return {
        "name": redact(feed.name),
        "url": redact(redact_url(feed.url)),
        "title": cap(title),
        "tags": [redact(t) for t in feed.tags],
    }


def route(feed: FeedConfig, matched: Iterable[RuleMatch]) -> tuple[str, ...]:
    """The union, over matched rules, of each rule's sinks (or the feed's when it names none)."""
    rules = {r.name: r for r in feed.rules}
    out: list[str] = []
    any_matched = False
    for m in matched:
        any_matched = True
        rule = rules.get(m.rule)
        targets = rule.sinks if rule is not None and rule.sinks else feed.sinks
        for s in targets:
            if s not in out:
                out.append(s)
    if not any_matched:
        return tuple(feed.sinks)
    return tuple(out)


def build_alert(
    feed: FeedConfig,
    feed_title: str | None,
    change: Change,
    matched: tuple[RuleMatch, ...],
    detected_at: datetime,
    alert_id: str,
) -> Alert:
    payload: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "id": alert_id,
        "kind": change.kind,
        "detected_at": format_time(detected_at),
        "feed": feed_payload(feed, feed_title),
        "entry": entry_payload(change.entry, feed.url),
        "changes": {
            k: (
                {"old": v.old, "new": v.new}
                if k != "link"
                else {
                    "old": _without_url_secrets(v.old, feed.url),
                    "new": _without_url_secrets(v.new, feed.url),
                }
            )
            for k, v in change.changes.items()
        },
        "matched": [{"rule": m.rule, "terms": [redact(t) for t in m.terms]} for m in matched],
        "message": None,
    }
    return Alert(
        id=alert_id,
        kind=change.kind,
        feed=feed.name,
        payload=payload,
        sinks=route(feed, matched),
        thread_id=change.new_alert_id,
        identity=change.identity,
        duplicate_key=duplicate_key(change.kind, change.entry, change.fingerprint)
        if feed.settings.duplicates == "skip"
        else None,
    )


def build_notice(
    feed: FeedConfig,
    feed_title: str | None,
    kind: str,
    message: str,
    detected_at: datetime,
    key: str,
) -> Alert:
    """A feed-level notice (flood, stale, recovered): same envelope, no entry, the feed's sinks."""
    nid = notice_id(feed.name, kind, key)
    payload: Mapping[str, Any] = {
        "version": PAYLOAD_VERSION,
        "id": nid,
        "kind": kind,
        "detected_at": format_time(detected_at),
        "feed": feed_payload(feed, feed_title),
        "entry": None,
        "changes": {},
        "matched": [],
        "message": cap(redact(message)),
    }
    return Alert(id=nid, kind=kind, feed=feed.name, payload=payload, sinks=tuple(feed.sinks))
